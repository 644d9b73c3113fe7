"""Every example in docs/ validates against the profiles it claims (and R4).

Examples are the ``json`` code blocks of ``docs/*.md`` and the files ``docs/examples/*.json``;
Bundles are opened. A block that is not JSON (an abbreviated excerpt) is skipped; a
resource that claims no profile is checked against R4 only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kyphofhir.config import Settings
from kyphofhir.errors import FhirError
from kyphofhir.fhir.models import validate_resource
from kyphofhir.services import validation

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"```json\s*\n(.*?)\n```", re.DOTALL)


def _documents() -> Iterator[tuple[str, Any]]:
    for path in sorted(DOCS.glob("*.md")):
        for n, match in enumerate(BLOCK.finditer(path.read_text(encoding="utf-8"))):
            try:
                yield f"{path.name}#{n}", json.loads(match.group(1))
            except json.JSONDecodeError:
                continue
    for path in sorted((DOCS / "examples").glob("*.json")):
        yield path.name, json.loads(path.read_text(encoding="utf-8"))


def _resources(where: str, data: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(data, dict) or "resourceType" not in data:
        return
    if data["resourceType"] == "Bundle":
        for i, entry in enumerate(data.get("entry") or []):
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                yield from _resources(f"{where} entry[{i}]", entry["resource"])
        if data.get("type") in ("transaction", "batch"):
            return
    yield where, data


EXAMPLES = [r for where, doc in _documents() for r in _resources(where, doc)]


def test_the_docs_have_profiled_examples() -> None:
    claimed = [r for _, r in EXAMPLES if (r.get("meta") or {}).get("profile")]
    assert len(claimed) >= 5, [w for w, _ in EXAMPLES]


@pytest.mark.parametrize(("where", "resource"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_docs_example_validates(where: str, resource: dict[str, Any]) -> None:
    svc: Any = SimpleNamespace(settings=Settings())
    try:
        validate_resource(resource)
    except FhirError as exc:
        pytest.fail(f"{where}: not valid R4: {[i.diagnostics for i in exc.issues]}")
    errors = [i for i in validation.validate(svc, resource) if i.severity == "error"]
    assert errors == [], f"{where}: {[(i.expression, i.diagnostics) for i in errors]}"
