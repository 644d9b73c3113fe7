"""Token modifiers that need terminology: ``:in``, ``:not-in``, ``:below``, ``:above``.

They are answered from the CodeSystems and ValueSets stored in this server (no external
terminology service): a ValueSet is expanded from its ``compose`` (explicit concepts, whole
code systems, ``is-a`` filters and imported value sets), subsumption follows the
CodeSystem's concept nesting. The expansion replaces the clause's values with a
:class:`CodeSet` before the query is planned; an unknown ValueSet or CodeSystem is a 400.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from kyphofhir.errors import Invalid
from kyphofhir.search.params import Clause, CodeSet, SearchQuery, TokenValue, parse_query
from kyphofhir.services.context import Services
from kyphofhir.store.base import UnitOfWork

MODIFIERS = ("in", "not-in", "above", "below")
MAX_DEPTH = 10

Finder = Callable[[str, str], dict[str, Any]]
"""(``CodeSystem`` or ``ValueSet``, canonical URL) → the resource; raises when unknown.
The store's finder answers searches (:func:`store_finder`); validation and the
terminology operations pass their own, so ValueSets are expanded by one code path."""


def resolve(svc: Services, uow: UnitOfWork, query: SearchQuery) -> SearchQuery:
    """``query`` with every terminology clause (also inside chains) turned into code sets."""
    if not _needs_terminology(query.clauses) and not query.union:
        return query  # the common case: no copy on the search path
    if query.union:
        return dataclasses.replace(query, union=[resolve(svc, uow, q) for q in query.union])
    clauses = [_clause(svc, uow, c) for c in query.clauses]
    return dataclasses.replace(query, clauses=clauses)


def _needs_terminology(clauses: list[Clause]) -> bool:
    for clause in clauses:
        if clause.modifier in MODIFIERS:
            return True
        if clause.chain and _needs_terminology([c for _, c in clause.chain.targets]):
            return True
        if clause.has and _needs_terminology([clause.has.inner]):
            return True
    return False


def _clause(svc: Services, uow: UnitOfWork, clause: Clause) -> Clause:
    if clause.chain is not None:
        targets = tuple((t, _clause(svc, uow, c)) for t, c in clause.chain.targets)
        return dataclasses.replace(clause, chain=dataclasses.replace(clause.chain, targets=targets))
    if clause.has is not None:
        inner = _clause(svc, uow, clause.has.inner)
        return dataclasses.replace(clause, has=dataclasses.replace(clause.has, inner=inner))
    if clause.modifier not in MODIFIERS or clause.param.type != "token":
        return clause
    name = f"{clause.param.code}:{clause.modifier}"
    values = []
    for value in clause.values:
        if clause.modifier in ("in", "not-in"):
            values.append(CodeSet(frozenset(expand(svc, uow, str(value), name))))
        else:
            if not isinstance(value, TokenValue) or not value.system or not value.code:
                raise Invalid(f"{name} takes system|code.", expression=[name])
            concepts = _code_system(store_finder(svc, uow, name), value.system)
            codes = _related(concepts, value.code, below=clause.modifier == "below")
            if codes is None:
                raise Invalid(
                    f"{name}: code {value.code!r} is not in the CodeSystem {value.system}.",
                    expression=[name],
                )
            values.append(CodeSet(frozenset((value.system, c) for c in codes)))
    return dataclasses.replace(clause, values=tuple(values))


def _find(svc: Services, uow: UnitOfWork, rtype: str, url: str, name: str) -> dict[str, Any]:
    """The stored ``rtype`` with canonical ``url``, or a 400 naming the parameter."""
    query = parse_query(svc.registry, rtype, [("url", url.split("|")[0])])
    page = uow.search(query, None)
    if not page.items:
        raise Invalid(
            f"{name}: the {rtype} {url} is not stored in this server.",
            expression=[name],
            details_code="MSG_PARAM_INVALID",
        )
    return page.items[0].json()


def store_finder(svc: Services, uow: UnitOfWork, name: str) -> Finder:
    """Stored CodeSystems/ValueSets by URL; an unknown one is a 400 naming ``name``."""
    return lambda rtype, url: _find(svc, uow, rtype, url, name)


def _code_system(find: Finder, url: str) -> list[dict[str, Any]]:
    cs = find("CodeSystem", url)
    concepts: list[dict[str, Any]] = cs.get("concept") or []
    return concepts


def _related(concepts: list[dict[str, Any]], code: str, *, below: bool) -> set[str] | None:
    """Codes subsumed by ``code`` (below) or subsuming it (above), itself included."""

    def walk(nodes: list[dict[str, Any]], path: list[str]) -> set[str] | None:
        for node in nodes:
            here = [*path, node["code"]]
            if node["code"] == code:
                return _descendants(node) if below else set(here)
            found = walk(node.get("concept") or [], here)
            if found is not None:
                return found
        return None

    return walk(concepts, [])


def _descendants(node: dict[str, Any]) -> set[str]:
    out = {node["code"]}
    for child in node.get("concept") or []:
        out |= _descendants(child)
    return out


def expand(
    svc: Services, uow: UnitOfWork, url: str, name: str, depth: int = 0
) -> set[tuple[str, str]]:
    """The (system, code) pairs of the stored ValueSet ``url``."""
    return expand_with(store_finder(svc, uow, name), url, name, depth)


def expand_with(find: Finder, url: str, name: str, depth: int = 0) -> set[tuple[str, str]]:
    """The (system, code) pairs of the ValueSet ``url``, resolved through ``find``."""
    if depth > MAX_DEPTH:
        raise Invalid(f"{name}: value sets import each other too deeply.", expression=[name])
    vs = find("ValueSet", url)
    compose = vs.get("compose") or {}
    included: set[tuple[str, str]] = set()
    for inc in compose.get("include") or []:
        included |= _include(find, inc, name, depth)
    for exc in compose.get("exclude") or []:
        included -= _include(find, exc, name, depth)
    for item in (vs.get("expansion") or {}).get("contains") or []:
        if item.get("system") and item.get("code"):
            included.add((item["system"], item["code"]))
    return included


def _include(find: Finder, inc: dict[str, Any], name: str, depth: int) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    system = inc.get("system")
    if system and inc.get("concept"):
        out = {(system, c["code"]) for c in inc["concept"]}
    elif system:
        concepts = _code_system(find, system)
        codes: set[str] = set()
        filters = inc.get("filter") or []
        if not filters:
            for node in concepts:
                codes |= _descendants(node)
        for flt in filters:
            if flt.get("property") != "concept" or flt.get("op") not in ("is-a", "descendent-of"):
                raise Invalid(
                    f"{name}: ValueSet filter {flt.get('op')!r} is not supported.",
                    expression=[name],
                )
            found = _related(concepts, str(flt.get("value")), below=True) or set()
            if flt["op"] == "descendent-of":
                found.discard(str(flt.get("value")))
            codes |= found
        out = {(system, c) for c in codes}
    # imported value sets are intersected with each other and with the system selection
    selected: set[tuple[str, str]] | None = out if system else None
    for imported in inc.get("valueSet") or []:
        nested = expand_with(find, imported, name, depth + 1)
        selected = nested if selected is None else selected & nested
    return selected or set()
