"""``CodeSystem/$lookup``, ``ValueSet/$expand`` and ``ValueSet/$validate-code`` (R4).

They answer from the CodeSystems and ValueSets stored in this server (the artefacts of
``profiles/`` are stored at start-up; clients may add their own). Expansion is
:func:`terminology.expand_with`, the code the ``:in`` search modifier uses; this module
only adds displays and renders the R4 ``Parameters``/``ValueSet`` answers.

Errors: a missing or contradictory input parameter is a 400; a CodeSystem or ValueSet
that is not stored here, or a ``$lookup`` code not in its CodeSystem, is a 404
(``not-found``), as tx.fhir.org answers. ``$validate-code`` of a code that is not in the
value set is not an error: ``result`` is false with a ``message``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kyphofhir.errors import Invalid, NotFound
from kyphofhir.fhir.datetimes import format_instant, now_instant
from kyphofhir.search.params import parse_query
from kyphofhir.services import crud, terminology
from kyphofhir.services.context import Services
from kyphofhir.store.base import UnitOfWork

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class OperationInput:
    """The input parameters of an operation call: ``name → values`` (strings from the
    query, or any JSON value from a POSTed Parameters resource)."""

    values: dict[str, list[Any]]

    def one(self, name: str) -> Any:
        found = self.values.get(name) or []
        if len(found) > 1:
            raise Invalid(f"Parameter {name} may be given only once.", expression=[name])
        return found[0] if found else None

    def text(self, name: str) -> str | None:
        value = self.one(name)
        if value is None:
            return None
        if not isinstance(value, str | int | float | bool) or isinstance(value, bool):
            raise Invalid(f"Parameter {name} must be a simple value.", expression=[name])
        return str(value)


def _finder(svc: Services, uow: UnitOfWork) -> terminology.Finder:
    def find(rtype: str, url: str) -> JsonObject:
        bare, _, version = url.partition("|")
        criteria = [("url", bare)] + ([("version", version)] if version else [])
        query = parse_query(svc.registry, rtype, criteria, default_count=1, max_count=1)
        page = uow.search(query, None)
        if not page.items:
            raise NotFound(
                f"The {rtype} {url} is not stored in this server.", details_code="MSG_NO_EXIST"
            )
        return page.items[0].json()

    return find


def _target(
    svc: Services, uow: UnitOfWork, rtype: str, rid: str | None, url: str | None
) -> JsonObject:
    if rid is not None:
        return crud.read(svc, uow, rtype, rid).json()
    if not url:
        raise Invalid(
            f"Give the {rtype} by its url (or call the operation on [base]/{rtype}/[id]).",
            expression=["url"],
            details_code="MSG_PARAM_INVALID",
        )
    return _finder(svc, uow)(rtype, url)


# ------------------------------------------------------------------------- $lookup


def _walk(
    concepts: list[JsonObject], parent: JsonObject | None = None
) -> Iterator[tuple[JsonObject, JsonObject | None]]:
    for concept in concepts:
        yield concept, parent
        yield from _walk(concept.get("concept") or [], concept)


def lookup(svc: Services, uow: UnitOfWork, rid: str | None, params: OperationInput) -> JsonObject:
    """``$lookup``: name, version, display, definition, designations and properties."""
    system, code = params.text("system"), params.text("code")
    coding = params.one("coding")
    if isinstance(coding, dict):
        system, code = coding.get("system") or system, coding.get("code") or code
    if not code:
        raise Invalid("$lookup needs a code (code, or coding).", expression=["code"])
    if rid is None and not system:
        raise Invalid("$lookup needs the system of the code.", expression=["system"])
    version = params.text("version")
    url = f"{system}|{version}" if system and version else system
    cs = _target(svc, uow, "CodeSystem", rid, url)
    if rid is not None and system and system != cs.get("url"):
        raise Invalid(f"CodeSystem/{rid} is {cs.get('url')}, not {system}.", expression=["system"])
    found = next(((c, p) for c, p in _walk(cs.get("concept") or []) if c.get("code") == code), None)
    if found is None:
        raise NotFound(
            f"The code {code!r} is not in the CodeSystem {cs.get('url')}.",
            expression=["code"],
            details_code="MSG_NO_EXIST",
        )
    concept, parent = found
    wanted = set(params.values.get("property") or [])
    out: list[JsonObject] = [{"name": "name", "valueString": cs.get("name") or cs.get("url")}]
    if cs.get("version"):
        out.append({"name": "version", "valueString": cs["version"]})
    out.append({"name": "display", "valueString": concept.get("display") or code})
    for designation in concept.get("designation") or []:
        parts = [
            {"name": k, f"value{'Code' if k == 'language' else 'Coding'}": designation[k]}
            for k in ("language", "use")
            if k in designation
        ]
        parts.append({"name": "value", "valueString": designation.get("value")})
        out.append({"name": "designation", "part": parts})
    properties: list[tuple[str, str, Any]] = []
    if concept.get("definition"):
        properties.append(("definition", "valueString", concept["definition"]))
    if parent is not None:
        properties.append(("parent", "valueCode", parent["code"]))
    for child in concept.get("concept") or []:
        properties.append(("child", "valueCode", child["code"]))
    for prop in concept.get("property") or []:
        key = next((k for k in prop if k.startswith("value")), None)
        if key:
            properties.append((str(prop.get("code")), key, prop[key]))
    for name, key, value in properties:
        if not wanted or name in wanted:
            parts = [{"name": "code", "valueCode": name}, {"name": "value", key: value}]
            out.append({"name": "property", "part": parts})
    return {"resourceType": "Parameters", "parameter": out}


# ------------------------------------------------------------------------- $expand


def _displays(find: terminology.Finder, vs: JsonObject) -> dict[tuple[str, str], str]:
    """Displays from the value set's own concept lists and from stored CodeSystems."""
    out: dict[tuple[str, str], str] = {}
    compose = vs.get("compose") or {}
    systems: set[str] = set()
    for inc in compose.get("include") or []:
        system = inc.get("system")
        if not system:
            continue
        systems.add(system)
        for concept in inc.get("concept") or []:
            if concept.get("display"):
                out[(system, concept["code"])] = concept["display"]
    for system in systems:
        try:
            cs = find("CodeSystem", system)
        except NotFound:
            continue  # an external system (SNOMED CT): the value set's displays only
        for concept, _ in _walk(cs.get("concept") or []):
            out.setdefault((system, concept["code"]), concept.get("display") or "")
    return out


def expand(svc: Services, uow: UnitOfWork, rid: str | None, params: OperationInput) -> JsonObject:
    """``$expand``: the ValueSet with an ``expansion`` (``filter``, ``offset``, ``count``)."""
    vs = _target(svc, uow, "ValueSet", rid, params.text("url"))
    find = _finder(svc, uow)
    url = str(vs.get("url") or "")
    codes = terminology.expand_with(find, url, "url") if url else set()
    displays = _displays(find, vs)
    needle = (params.text("filter") or "").casefold()
    order = {key: i for i, key in enumerate(displays)}  # the definitions' own order
    rows = sorted(
        (
            (system, code, display)
            for system, code in codes
            for display in [displays.get((system, code), "")]
            if not needle or needle in code.casefold() or needle in display.casefold()
        ),
        key=lambda row: (order.get((row[0], row[1]), len(order)), row[0], row[1]),
    )
    offset = _number(params, "offset", 0)
    count = _number(params, "count", len(rows))
    contains = [
        {"system": s, "code": c, **({"display": d} if d else {})}
        for s, c, d in rows[offset : offset + count]
    ]
    expansion: JsonObject = {
        "timestamp": format_instant(now_instant()),
        "total": len(rows),
        "offset": offset,
    }
    if needle:
        expansion["parameter"] = [{"name": "filter", "valueString": params.text("filter")}]
    if contains:
        expansion["contains"] = contains
    out = {k: v for k, v in vs.items() if k not in ("meta", "text", "expansion")}
    out["expansion"] = expansion
    return out


def _number(params: OperationInput, name: str, default: int) -> int:
    text = params.text(name)
    if text is None:
        return default
    if not text.isdigit():
        raise Invalid(f"{name} must be a non-negative integer.", expression=[name])
    return int(text)


# ------------------------------------------------------------------------- $validate-code


def validate_code(
    svc: Services, uow: UnitOfWork, rid: str | None, params: OperationInput
) -> JsonObject:
    """``$validate-code``: is the code (or a coding of the CodeableConcept) in the set?"""
    vs = _target(svc, uow, "ValueSet", rid, params.text("url"))
    candidates: list[JsonObject] = []
    code = params.text("code")
    if code is not None:
        candidates.append(
            {"system": params.text("system"), "code": code, "display": params.text("display")}
        )
    coding = params.one("coding")
    if isinstance(coding, dict):
        candidates.append(coding)
    concept = params.one("codeableConcept")
    if isinstance(concept, dict):
        candidates += [c for c in concept.get("coding") or [] if isinstance(c, dict)]
    if not candidates:
        raise Invalid(
            "$validate-code needs code (and system), coding or codeableConcept.",
            expression=["code"],
        )
    find = _finder(svc, uow)
    url = str(vs.get("url") or "")
    codes = terminology.expand_with(find, url, "url") if url else set()
    displays = _displays(find, vs)
    for candidate in candidates:
        key = (candidate.get("system"), candidate.get("code"))
        if candidate.get("system") and key in codes:
            match = (str(key[0]), str(key[1]))
            out = [{"name": "result", "valueBoolean": True}]
            display = displays.get(match)
            given = candidate.get("display")
            if display:
                out.append({"name": "display", "valueString": display})
            if given and display and given != display:
                out[0]["valueBoolean"] = False
                out.append(
                    {
                        "name": "message",
                        "valueString": f"The display {given!r} is not {display!r}.",
                    }
                )
            return {"resourceType": "Parameters", "parameter": out}
    shown = ", ".join(f"{c.get('system') or '(no system)'}|{c.get('code')}" for c in candidates)
    message = f"{shown} is not in the value set {url}."
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "result", "valueBoolean": False},
            {"name": "message", "valueString": message},
        ],
    }
