"""The CapabilityStatement, generated from what is registered (types, interactions, search).

Only what works is listed: the served types, the interactions the REST layer routes,
the search parameters the store indexes (plus ``_id``/``_lastUpdated``), and JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kyphofhir import __version__
from kyphofhir.fhir.datetimes import format_instant, now_instant
from kyphofhir.fhir.models import FHIR_VERSION, SERVED_TYPES
from kyphofhir.search.registry import SearchRegistry

TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
SYSTEM_INTERACTIONS = ("transaction", "batch", "history-system", "search-system")
OPERATION_DEFINITION = "http://hl7.org/fhir/OperationDefinition/"
# type → (operation name, OperationDefinition id) beyond $validate, which every type has
TYPE_OPERATIONS = {
    "Patient": (("everything", "Patient-everything"),),
    "CodeSystem": (("lookup", "CodeSystem-lookup"),),
    "ValueSet": (("expand", "ValueSet-expand"), ("validate-code", "ValueSet-validate-code")),
}
FORMATS = ("application/fhir+json", "application/json", "json")
# Said in ``rest.documentation``: R4 has no element for "this parameter is not supported".
NOT_SUPPORTED = (
    "Search parameters not supported on any type (ignored with a warning entry, or 400 "
    "under `Prefer: handling=strict`): `_text` and `_content` (no full-text index), "
    "`_query`, `_filter`, `_list`, `_contained`, `_containedType`. No served type defines "
    "a `special` parameter. Quantity search converts UCUM units to canonical form; "
    "page links of multi-page searches come from a result snapshot that expires (410)."
)


def _includes(registry: SearchRegistry, rtype: str) -> list[str]:
    return sorted(
        f"{rtype}:{p.code}" for p in registry.params(rtype).values() if p.type == "reference"
    )


def _revincludes(registry: SearchRegistry, rtype: str) -> list[str]:
    return sorted(
        f"{source}:{p.code}"
        for source in SERVED_TYPES
        for p in registry.params(source).values()
        if p.type == "reference" and (not p.targets or rtype in p.targets)
    )


def _operations(rtype: str) -> list[dict[str, str]]:
    pairs = (*TYPE_OPERATIONS.get(rtype, ()), ("validate", "Resource-validate"))
    return [{"name": name, "definition": OPERATION_DEFINITION + d} for name, d in pairs]


def capability_statement(
    registry: SearchRegistry,
    base_url: str,
    supported_profiles: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """``supported_profiles``: type → the profiles the server validates against (#5)."""
    resources: list[dict[str, Any]] = []
    for rtype in SERVED_TYPES:
        params = [
            {"name": p.code, "definition": p.url, "type": p.type}
            for p in sorted(registry.params(rtype).values(), key=lambda p: p.code)
            if p.indexed or p.code in ("_id", "_lastUpdated")
        ]
        resources.append(
            {
                "type": rtype,
                "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
                **(
                    {"supportedProfile": list(supported_profiles[rtype])}
                    if supported_profiles and supported_profiles.get(rtype)
                    else {}
                ),
                "interaction": [{"code": c} for c in TYPE_INTERACTIONS],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalRead": "full-support",
                "conditionalUpdate": True,
                "conditionalDelete": "single",
                "referencePolicy": ["literal"],
                "searchInclude": ["*", *_includes(registry, rtype)],
                "searchRevInclude": _revincludes(registry, rtype),
                "searchParam": params,
                "operation": _operations(rtype),
            }
        )
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_instant(now_instant()),
        "publisher": "kyphofhir",
        "kind": "instance",
        "software": {"name": "kyphofhir", "version": __version__},
        "implementation": {"description": "kyphofhir FHIR R4 server", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": list(FORMATS),
        "rest": [
            {
                "mode": "server",
                "documentation": NOT_SUPPORTED,
                "resource": resources,
                "interaction": [{"code": c} for c in SYSTEM_INTERACTIONS],
            }
        ],
    }
