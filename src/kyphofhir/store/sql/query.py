"""SearchQuery → one SQL statement over ``resource`` and the ``spidx_*`` tables.

Each clause becomes an ``EXISTS`` sub-query on its index table correlated by ``rid``;
the values of a clause are OR-ed, clauses are AND-ed. Date, number and quantity prefixes
compare ranges as FHIR R4 search §3.1.1.4 describes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    and_,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles

from kyphofhir.errors import Invalid
from kyphofhir.search.extract import normalize_string
from kyphofhir.search.params import (
    Clause,
    CodeSet,
    CompositeValue,
    DateValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    SearchQuery,
    TokenValue,
)
from kyphofhir.store.sql.schema import INDEX_TABLES, resource

# Modifiers matched against token rows the extractor derives under ``param:modifier``.
DERIVED_MODIFIERS = frozenset({"of-type", "identifier"})


def where_clauses(query: SearchQuery) -> list[ColumnElement[bool]]:
    if query.union:
        return [or_(*[and_(*where_clauses(q)) for q in query.union])]
    conditions: list[ColumnElement[bool]] = [
        resource.c.res_type == query.resource_type,
        resource.c.deleted.is_(False),
    ]
    for clause in query.clauses:
        conditions.append(_clause(query.resource_type, clause, resource))
    if query.compartment is not None:
        conditions.append(_in_compartment(query.resource_type, *query.compartment))
    return conditions


def _in_compartment(
    rtype: str, ctype: str, cid: str, params: tuple[str, ...]
) -> ColumnElement[bool]:
    """The resource refers to ``ctype/cid`` through one of ``params`` (or is that resource)."""
    ref = INDEX_TABLES["reference"].alias()
    linked = exists().where(
        ref.c.rid == resource.c.rid,
        ref.c.res_type == rtype,
        ref.c.param.in_(params),
        ref.c.target_type == ctype,
        ref.c.target_id == cid,
    )
    if rtype == ctype:
        return or_(resource.c.res_id == cid, linked)
    return linked


def _clause(rtype: str, clause: Clause, res: FromClause) -> ColumnElement[bool]:
    """The condition ``clause`` puts on the resource row ``res`` (a table or an alias).

    Every sub-query uses fresh aliases, so nested chains never correlate to the wrong
    level.
    """
    if clause.chain is not None:
        return _chain(rtype, clause, res)
    if clause.has is not None:
        return _has(rtype, clause, res)
    code = clause.param.code
    if code in ("_id", "_lastUpdated") and clause.modifier == "missing":
        # every resource has an id and a lastUpdated
        return false() if clause.values[0] else true()
    if code == "_id":
        return _id_clause(clause, res)
    if code == "_lastUpdated":
        col = res.c.last_updated
        return or_(*[_range(col, col, v) for v in clause.values])
    if clause.modifier in DERIVED_MODIFIERS:
        # ``identifier:of-type`` / ``subject:identifier``: token rows under ``param:modifier``
        table = INDEX_TABLES["token"].alias()
        base = [
            table.c.rid == res.c.rid,
            table.c.param == f"{code}:{clause.modifier}",
            table.c.res_type == rtype,
        ]
        return exists().where(*base, or_(*[_token(table, v) for v in clause.values]))
    table = INDEX_TABLES[clause.param.type].alias()
    base = [table.c.rid == res.c.rid, table.c.param == code, table.c.res_type == rtype]
    if clause.modifier == "missing":
        present = exists().where(*base)
        return not_(present) if clause.values[0] else present
    if clause.modifier in ("not", "not-in"):
        matches = [_token(table, v) for v in clause.values]
        return not_(exists().where(*base, or_(*matches)))
    matches = [_value(clause, table, v) for v in clause.values]
    return exists().where(*base, or_(*matches))


_SORT_COLUMNS = {
    # type: (ascending column, descending column); a resource sorts by its smallest value
    # ascending and by its largest descending (several values per parameter are possible)
    "date": ("lo", "hi"),
    "number": ("value", "value"),
    "quantity": ("value", "value"),
    "string": ("value_norm", "value_norm"),
    "token": ("code", "code"),
    "uri": ("value", "value"),
    "reference": ("target_id", "target_id"),
}


class RowLookup(ColumnElement[Any]):
    """A column SQLite must not use an index for (rendered ``+col`` there).

    A sort key is a correlated ``min``/``max`` over one resource's index rows. Without
    statistics (``ANALYZE``), SQLite prefers the (res_type, param, value) index for a
    ``max`` and so scans every row of the parameter for each resource: 15 s instead of
    15 ms at 12,000 Observations. ``+`` leaves it only the ``rid`` index. Other
    databases get the plain column.
    """

    inherit_cache = True

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type


@compiles(RowLookup)
def _row_lookup(element: RowLookup, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column, **kw))


@compiles(RowLookup, "sqlite")
def _row_lookup_sqlite(element: RowLookup, compiler: Any, **kw: Any) -> str:
    return "+" + str(compiler.process(element.column, **kw))


def sort_expressions(query: SearchQuery) -> list[tuple[ColumnElement[Any], bool]]:
    """(expression over ``resource``, descending) per ``_sort`` key."""
    out: list[tuple[ColumnElement[Any], bool]] = []
    for param, descending in query.sort:
        if param.code == "_id":
            out.append((resource.c.res_id, descending))
            continue
        if param.code == "_lastUpdated":
            out.append((resource.c.last_updated, descending))
            continue
        table = INDEX_TABLES[param.type].alias()
        column = table.c[_SORT_COLUMNS[param.type][1 if descending else 0]]
        aggregate = func.max(column) if descending else func.min(column)
        out.append(
            (
                select(aggregate)
                .where(
                    table.c.rid == resource.c.rid,
                    RowLookup(table.c.param) == param.code,
                    RowLookup(table.c.res_type) == query.resource_type,
                )
                .scalar_subquery(),
                descending,
            )
        )
    return out


def _chain(rtype: str, clause: Clause, res: FromClause) -> ColumnElement[bool]:
    """``subject:Patient.name=x``: a reference of ``res`` to a live target matching the rest."""
    assert clause.chain is not None
    ref = INDEX_TABLES["reference"].alias()
    options = []
    for target_type, inner in clause.chain.targets:
        target = resource.alias()
        options.append(
            exists().where(
                ref.c.rid == res.c.rid,
                ref.c.res_type == rtype,
                ref.c.param == clause.param.code,
                ref.c.target_type == target_type,
                target.c.res_type == target_type,
                target.c.res_id == ref.c.target_id,
                target.c.deleted.is_(False),
                _clause(target_type, inner, target),
            )
        )
    return or_(*options)


def _has(rtype: str, clause: Clause, res: FromClause) -> ColumnElement[bool]:
    """``_has:Observation:subject:code=x``: a live Observation referring to ``res`` matches."""
    assert clause.has is not None
    source_type = clause.has.source_type
    ref = INDEX_TABLES["reference"].alias()
    source = resource.alias()
    return exists().where(
        ref.c.res_type == source_type,
        ref.c.param == clause.param.code,
        ref.c.target_type == rtype,
        ref.c.target_id == res.c.res_id,
        source.c.rid == ref.c.rid,
        source.c.deleted.is_(False),
        _clause(source_type, clause.has.inner, source),
    )


def _id_clause(clause: Clause, res: FromClause) -> ColumnElement[bool]:
    ids = [v.code for v in clause.values if isinstance(v, TokenValue) and v.code]
    condition = res.c.res_id.in_(ids) if ids else false()
    if clause.modifier == "not":
        return not_(condition)
    return condition


def _value(clause: Clause, table: FromClause, value: Any) -> ColumnElement[bool]:
    kind = clause.param.type
    if kind == "token":
        if isinstance(value, CodeSet):
            return _token(table, value)
        if clause.modifier == "text":
            norm = normalize_string(str(value))
            return table.c.text.like(_escape_like(norm) + "%", escape="\\")
        return _token(table, value)
    if kind == "string":
        text = str(value)
        if clause.modifier == "exact":
            return table.c.value_exact == text
        norm = _escape_like(normalize_string(text))
        if clause.modifier == "contains":
            return table.c.value_norm.like("%" + norm + "%", escape="\\")
        return table.c.value_norm.like(norm + "%", escape="\\")
    if kind == "uri":
        text = str(value)
        if clause.modifier == "below":
            return table.c.value.like(_escape_like(text) + "%", escape="\\")
        if clause.modifier == "above":
            return func.substr(text, 1, func.length(table.c.value)) == table.c.value
        return table.c.value == text
    if kind == "date":
        if not isinstance(value, DateValue):
            raise Invalid(
                f"Bad date value for {clause.param.code}.", expression=[clause.param.code]
            )
        return _range(table.c.lo, table.c.hi, value)
    if kind == "number" and isinstance(value, NumberValue):
        return _number(table, value)
    if kind == "quantity" and isinstance(value, QuantityValue):
        return _quantity(
            table.c.value,
            table.c.system,
            (table.c.code, table.c.unit),
            table.c.canon_code,
            table.c.canon_value,
            value,
        )
    if kind == "composite" and isinstance(value, CompositeValue):
        return _composite(table, value)
    if kind == "reference" and isinstance(value, ReferenceValue):
        if value.id is not None:
            cond = table.c.target_id == value.id
            if value.type is not None:
                cond = and_(cond, table.c.target_type == value.type)
            return cond
        return table.c.url == value.url
    raise Invalid(f"Unsupported value for {clause.param.code}.", expression=[clause.param.code])


def _composite(table: FromClause, value: CompositeValue) -> ColumnElement[bool]:
    first = value.first
    conditions: list[ColumnElement[bool]] = []
    if first.code is not None:
        conditions.append(table.c.code1 == first.code)
    if first.system is not None:
        conditions.append(table.c.system1 == first.system)
    second = value.second
    if value.second_type == "token" and isinstance(second, TokenValue):
        if second.code is not None:
            conditions.append(table.c.code2 == second.code)
        if second.system is not None:
            conditions.append(table.c.system2 == second.system)
    elif value.second_type == "quantity" and isinstance(second, QuantityValue):
        conditions.append(
            _quantity(
                table.c.value2,
                table.c.system2,
                (table.c.code2,),
                table.c.canon_code2,
                table.c.canon_value2,
                second,
            )
        )
    elif value.second_type == "date" and isinstance(second, DateValue):
        conditions.append(_range(table.c.date_lo2, table.c.date_hi2, second))
    elif value.second_type == "string":
        norm = _escape_like(normalize_string(str(second)))
        conditions.append(table.c.text2.like(norm + "%", escape="\\"))
    return and_(*conditions) if conditions else true()


def _token(table: FromClause, value: TokenValue | CodeSet) -> ColumnElement[bool]:
    if isinstance(value, CodeSet):
        by_system: dict[str, list[str]] = {}
        for system, code in value.codes:
            by_system.setdefault(system, []).append(code)
        if not by_system:
            return false()
        return or_(
            *[and_(table.c.system == s, table.c.code.in_(sorted(c))) for s, c in by_system.items()]
        )
    conditions: list[ColumnElement[bool]] = []
    if value.code is not None:
        conditions.append(table.c.code == value.code)
    if value.system is not None:
        conditions.append(table.c.system == value.system)
    return and_(*conditions) if conditions else true()


def _range(
    lo: ColumnElement[Any], hi: ColumnElement[Any], v: DateValue | NumberValue
) -> ColumnElement[bool]:
    """Compare a stored range [lo, hi] with the search range [v.lo, v.hi] by prefix."""
    p = v.prefix
    if p == "eq":
        return and_(lo >= v.lo, hi <= v.hi)
    if p == "ne":
        return or_(lo < v.lo, hi > v.hi)
    if p == "gt":
        return hi > v.hi
    if p == "lt":
        return lo < v.lo
    if p == "ge":
        return hi >= v.lo
    if p == "le":
        return lo <= v.hi
    if p == "sa":
        return lo > v.hi
    if p == "eb":
        return hi < v.lo
    # ap: within 10% of the distance from now, at least the value's own precision
    span = max(v.hi - v.lo, 1)
    slack = span // 10 if isinstance(v.lo, int) else span * 0.1
    return and_(lo <= v.hi + slack, hi >= v.lo - slack)


def _number(table: FromClause, v: NumberValue | QuantityValue) -> ColumnElement[bool]:
    return _number_on(table.c.value, v)


def _quantity(
    value: ColumnElement[Any],
    system: ColumnElement[Any],
    codes: tuple[ColumnElement[Any], ...],
    canon_code: ColumnElement[Any],
    canon_value: ColumnElement[Any],
    v: QuantityValue,
) -> ColumnElement[bool]:
    """A quantity search value against one group of quantity columns.

    As given (the stored value, ``system`` equal, the code equal to one of ``codes``); for a
    UCUM value with a convertible unit, rows with a canonical form compare in canonical
    units instead, and only rows without one (non-convertible code, indexed before
    migration 0003 and not reindexed yet) are still matched as given.
    """
    exact = [_number_on(value, v)]
    if v.system is not None:
        exact.append(system == v.system)
    if v.code is not None:
        exact.append(or_(*[c == v.code for c in codes]))
    c = v.canonical
    if c is None:
        return and_(*exact)
    if v.prefix == "ap":
        in_range = and_(canon_value >= c.ap_lo, canon_value <= c.ap_hi)
    else:
        in_range = _number_on(canon_value, NumberValue(v.prefix, c.value, c.lo, c.hi))
    return or_(and_(canon_code == c.code, in_range), and_(canon_code.is_(None), *exact))


def _number_on(col: ColumnElement[Any], v: NumberValue | QuantityValue) -> ColumnElement[bool]:
    p = v.prefix
    if p == "eq":
        return and_(col >= v.lo, col < v.hi)
    if p == "ne":
        return or_(col < v.lo, col >= v.hi)
    if p in ("gt", "sa"):
        return col > v.value
    if p in ("lt", "eb"):
        return col < v.value
    if p == "ge":
        return col >= v.value
    if p == "le":
        return col <= v.value
    margin = abs(v.value) * 0.1
    return and_(col >= v.value - margin, col <= v.value + margin)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
