"""Search parameters: the official R4 definitions plus custom ones, compiled once.

The R4 definitions ship as data (``kyphofhir/data/search-parameters-r4.json``, see
``docs/storage.md`` for provenance). Each SearchParameter's FHIRPath expression is a
union over many resource types (``AllergyIntolerance.patient | ... | Observation.subject``);
the registry splits it and keeps, per served type, only the branches that start with that
type, so extraction never evaluates another type's paths.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from kyphofhir.fhir.models import SERVED_TYPES

# Parameters answered from columns of the resource table rather than index rows.
COLUMN_PARAMS = frozenset({"_id", "_lastUpdated"})
# Parameters whose definition has no expression or that we do not index (yet).
UNINDEXED = frozenset({"_text", "_content", "_query", "_list", "_has", "_type"})
INDEXED_TYPES = frozenset(
    {"token", "string", "date", "number", "quantity", "reference", "uri", "composite"}
)


@dataclass(frozen=True)
class SearchParam:
    """One search parameter as it applies to one resource type."""

    code: str
    type: str
    url: str
    resource_type: str
    expression: str | None
    targets: tuple[str, ...] = ()
    components: tuple[Mapping[str, str], ...] = ()

    @property
    def indexed(self) -> bool:
        return self.type in INDEXED_TYPES and self.expression is not None


@dataclass
class SearchRegistry:
    """Search parameters by resource type and code."""

    by_type: dict[str, dict[str, SearchParam]] = field(default_factory=dict)
    types_by_url: dict[str, str] = field(default_factory=dict)

    @classmethod
    def default(cls, extra: Iterable[Mapping[str, Any]] = ()) -> SearchRegistry:
        """The R4 base parameters for the served types, plus ``extra`` SearchParameters."""
        registry = cls()
        for definition in [*_r4_definitions(), *extra]:
            registry.add(definition)
        return registry

    def add(self, definition: Mapping[str, Any]) -> None:
        """Register a SearchParameter resource (R4 JSON) for each served base type."""
        code = str(definition["code"])
        if definition.get("url"):
            self.types_by_url[str(definition["url"])] = str(definition["type"])
        bases = definition.get("base", [])
        expression = definition.get("expression")
        for base in bases:
            types = SERVED_TYPES if base in ("Resource", "DomainResource") else (base,)
            for rtype in types:
                if rtype not in SERVED_TYPES:
                    continue
                branch = _branches_for(expression, rtype, base) if expression else None
                self.by_type.setdefault(rtype, {})[code] = SearchParam(
                    code=code,
                    type=str(definition["type"]),
                    url=str(definition.get("url", "")),
                    resource_type=rtype,
                    expression=branch,
                    targets=tuple(definition.get("target", ())),
                    components=tuple(definition.get("component", ())),
                )

    def component_types(self, param: SearchParam) -> tuple[str, ...]:
        """The search types of a composite parameter's components (by their definitions)."""
        types = tuple(self.types_by_url.get(str(c.get("definition")), "") for c in param.components)
        if len(types) != 2 or types[0] != "token" or not all(types):
            raise ValueError(f"composite parameter {param.code}: unsupported components {types}")
        return types

    def get(self, rtype: str, code: str) -> SearchParam | None:
        return self.by_type.get(rtype, {}).get(code)

    def params(self, rtype: str) -> dict[str, SearchParam]:
        return self.by_type.get(rtype, {})

    def indexed(self, rtype: str) -> list[SearchParam]:
        """Parameters whose values are extracted into index rows on write."""
        return [p for p in self.params(rtype).values() if p.indexed and p.code not in COLUMN_PARAMS]


def patient_compartment() -> dict[str, tuple[str, ...]]:
    """Per served type, the parameters that put a resource in a Patient's compartment.

    From the R4 CompartmentDefinition ``patient`` (``data/compartment-patient.json``).
    """
    text = resources.files("kyphofhir.data").joinpath("compartment-patient.json").read_text("utf-8")
    return {rtype: tuple(params) for rtype, params in json.loads(text)["params"].items()}


def _r4_definitions() -> list[dict[str, Any]]:
    text = (
        resources.files("kyphofhir.data").joinpath("search-parameters-r4.json").read_text("utf-8")
    )
    return [e["resource"] for e in json.loads(text)["entry"]]


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath expression on its top-level ``|`` operators."""
    parts: list[str] = []
    depth = 0
    quote = False
    start = 0
    for i, ch in enumerate(expression):
        if ch == "'" and (i == 0 or expression[i - 1] != "\\"):
            quote = not quote
        elif quote:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def _head(branch: str) -> str:
    m = re.match(r"^\(*\s*([A-Za-z]+)", branch)
    return m.group(1) if m else ""


def _branches_for(expression: str, rtype: str, base: str) -> str | None:
    """The part of ``expression`` that applies to ``rtype``, or None if no branch does."""
    kept: list[str] = []
    for branch in split_union(expression):
        head = _head(branch)
        if head == rtype:
            kept.append(branch)
        elif head in ("Resource", "DomainResource") and base in ("Resource", "DomainResource"):
            kept.append(re.sub(rf"\b{head}\.", f"{rtype}.", branch, count=1))
    return " | ".join(kept) if kept else None
