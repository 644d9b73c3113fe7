"""Custom SearchParameters from the ``profiles/`` folder, validated at load.

Any ``*.json`` file below the folder that is a SearchParameter resource, or a Bundle
containing some, is registered next to the R4 definitions at start. A definition that
cannot work (no code, base, type or expression; an unknown type; an expression that does
not compile) stops the start with a message naming the file: a silently missing study
parameter would make searches quietly return everything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kyphofhir.fhir.models import SERVED_TYPES
from kyphofhir.search.fhirpath import validate_expression
from kyphofhir.search.registry import INDEXED_TYPES


class ProfileError(ValueError):
    """A file in the profiles folder that cannot be used."""


def load_search_parameters(folder: Path) -> list[dict[str, Any]]:
    """Every SearchParameter in ``folder`` (recursively), checked."""
    out: list[dict[str, Any]] = []
    if not folder.is_dir():
        return out
    for path in sorted(folder.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ProfileError(f"{path}: not readable JSON ({exc})") from exc
        for definition in _search_parameters(data):
            _check(path, definition)
            out.append(definition)
    return out


def _search_parameters(data: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(data, dict):
        return
    if data.get("resourceType") == "SearchParameter":
        yield data
    elif data.get("resourceType") == "Bundle":
        for entry in data.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and resource.get("resourceType") == "SearchParameter":
                yield resource


def _check(path: Path, definition: dict[str, Any]) -> None:
    name = definition.get("url") or definition.get("id") or "?"
    for key in ("code", "base", "type", "expression"):
        if not definition.get(key):
            raise ProfileError(f"{path}: SearchParameter {name} has no {key}")
    if definition["type"] not in INDEXED_TYPES - {"composite"}:
        raise ProfileError(
            f"{path}: SearchParameter {name} has type {definition['type']!r}; custom "
            f"parameters can be one of {', '.join(sorted(INDEXED_TYPES - {'composite'}))}"
        )
    bases = [b for b in definition["base"] if b in SERVED_TYPES]
    if not bases:
        raise ProfileError(f"{path}: SearchParameter {name} has no served base type")
    try:
        for base in bases:
            validate_expression(str(definition["expression"]), base)
    except Exception as exc:  # noqa: BLE001 - fhirpathpy raises assorted errors
        raise ProfileError(f"{path}: SearchParameter {name}: bad expression ({exc})") from exc
