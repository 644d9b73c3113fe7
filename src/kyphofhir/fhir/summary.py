"""``_summary`` and ``_elements``: the subsets of a resource a client may ask for. Pure.

Which elements are "summary" or mandatory comes from the R4B models' field metadata
(``summary_element_property``, ``element_required``), which follow the R4 definitions for
the served types (docs/fhir-version.md). Subsetted resources carry the ``SUBSETTED`` tag,
as R4 search §3.1.1.5.8 asks, so nobody mistakes them for the whole resource.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from kyphofhir.fhir.models import model_class

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}
_ALWAYS = frozenset({"resourceType", "id", "meta"})


@cache
def _flagged(rtype: str, flag: str) -> frozenset[str]:
    out = set()
    for name, info in model_class(rtype).model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        # required complex elements are plain required pydantic fields (no flag)
        if extra.get(flag) or (flag == "element_required" and info.is_required()):
            out.add(info.alias or name)
    return frozenset(out)


def summary_elements(rtype: str) -> frozenset[str]:
    return _flagged(rtype, "summary_element_property")


def mandatory_elements(rtype: str) -> frozenset[str]:
    return _flagged(rtype, "element_required") | _flagged(rtype, "one_of_many_required")


def subset(
    resource: dict[str, Any], *, summary: str | None, elements: tuple[str, ...]
) -> dict[str, Any]:
    """The part of ``resource`` that ``_summary=summary`` / ``_elements=elements`` keep."""
    rtype = str(resource.get("resourceType"))
    if summary == "data":
        kept = {k: v for k, v in resource.items() if k != "text"}
    else:
        if summary == "true":
            allowed = summary_elements(rtype)
        elif summary == "text":
            allowed = frozenset({"text"}) | mandatory_elements(rtype)
        else:
            allowed = frozenset(elements) | mandatory_elements(rtype)
        kept = {k: v for k, v in resource.items() if _keep(k, allowed)}
    meta = dict(kept.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    kept["meta"] = meta
    return kept


def _keep(key: str, allowed: frozenset[str]) -> bool:
    name = key[1:] if key.startswith("_") else key
    if name in _ALWAYS or name in allowed:
        return True
    # _elements=value keeps valueQuantity, valueString, ... (choice elements)
    return any(name.startswith(a) and name[len(a) : len(a) + 1].isupper() for a in allowed)
