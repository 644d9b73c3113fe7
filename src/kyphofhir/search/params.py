"""Query string → typed :class:`SearchQuery`. Pure: no IO, no SQL.

Malformed values raise :class:`~kyphofhir.errors.Invalid` naming the parameter.
Unknown parameters are collected in ``SearchQuery.unknown`` so the interaction layer can
either report them (lenient, the default) or reject them (``Prefer: handling=strict``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kyphofhir.errors import Invalid
from kyphofhir.fhir.datetimes import parse_search_range
from kyphofhir.fhir.references import parse_reference
from kyphofhir.search.extract import precision_range
from kyphofhir.search.registry import SearchParam, SearchRegistry

# Result parameters handled by the interaction layer, not by filtering.
RESULT_PARAMS = frozenset(
    {
        "_count",
        "_sort",
        "_include",
        "_revinclude",
        "_summary",
        "_elements",
        "_total",
        "_contained",
        "_containedType",
        "_format",
        "_pretty",
        "_page",
        "_since",
        "_at",
    }
)
# Result parameters recognised but not implemented yet: reported like unknown parameters
# (a warning in the searchset, 400 under Prefer: handling=strict), never silently dropped.
NOT_YET_SUPPORTED = frozenset(
    {
        "_sort",
        "_include",
        "_revinclude",
        "_elements",
        "_contained",
        "_containedType",
        "_since",
        "_at",
    }
)
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
SUPPORTED_PREFIXES = {"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"}
SUPPORTED_MODIFIERS: dict[str, frozenset[str]] = {
    "token": frozenset({"missing", "not", "text"}),
    "string": frozenset({"missing", "exact", "contains"}),
    "reference": frozenset({"missing"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "uri": frozenset({"missing", "below", "above"}),
}


@dataclass(frozen=True)
class TokenValue:
    system: str | None  # None: any system; "": no system
    code: str | None  # None: any code (``system|``)


@dataclass(frozen=True)
class DateValue:
    prefix: str
    lo: int
    hi: int


@dataclass(frozen=True)
class NumberValue:
    prefix: str
    value: float
    lo: float
    hi: float


@dataclass(frozen=True)
class QuantityValue:
    prefix: str
    value: float
    lo: float
    hi: float
    system: str | None
    code: str | None


@dataclass(frozen=True)
class ReferenceValue:
    type: str | None
    id: str | None
    url: str | None


@dataclass(frozen=True)
class Clause:
    """One ``name[:modifier]=v1,v2`` parameter: the values are OR-ed."""

    param: SearchParam
    modifier: str | None
    values: tuple[Any, ...]


@dataclass
class SearchQuery:
    resource_type: str
    clauses: list[Clause] = field(default_factory=list)
    count: int = 20
    unknown: list[str] = field(default_factory=list)
    total: str = "accurate"
    summary_count: bool = False


def split_values(raw: str) -> list[str]:
    """Split on unescaped commas; ``\\,`` ``\\|`` ``\\$`` ``\\\\`` are kept escaped."""
    out: list[str] = []
    current = []
    escaped = False
    for ch in raw:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    out.append("".join(current))
    return out


def unescape(value: str) -> str:
    return value.replace("\\,", ",").replace("\\|", "|").replace("\\$", "$").replace("\\\\", "\\")


def _split_pipe(value: str) -> tuple[str, str] | None:
    """Split ``system|code`` on the first unescaped pipe."""
    i = 0
    while i < len(value):
        if value[i] == "\\":
            i += 2
            continue
        if value[i] == "|":
            return value[:i], value[i + 1 :]
        i += 1
    return None


def parse_query(
    registry: SearchRegistry,
    resource_type: str,
    items: Iterable[tuple[str, str]],
    *,
    default_count: int = 20,
    max_count: int = 1000,
) -> SearchQuery:
    """Parse ``(name, value)`` pairs (repeats allowed: they are AND-ed)."""
    query = SearchQuery(resource_type, count=default_count)
    for name, raw in items:
        base, _, modifier = name.partition(":")
        if base in RESULT_PARAMS:
            _result_param(query, base, raw, max_count)
            continue
        param = registry.get(resource_type, base)
        if param is None or not (param.indexed or base in ("_id", "_lastUpdated")):
            query.unknown.append(name)
            continue
        mod = modifier or None
        kind = "token" if base == "_id" else param.type
        if mod is not None and mod not in SUPPORTED_MODIFIERS.get(kind, frozenset()):
            raise Invalid(
                f"Modifier ':{mod}' is not supported for {kind} parameter {base}.",
                expression=[name],
                details_code="MSG_PARAM_MODIFIER_INVALID",
            )
        if mod == "missing":
            if raw not in ("true", "false"):
                raise Invalid(f"{name} must be true or false.", expression=[name])
            query.clauses.append(Clause(param, mod, (raw == "true",)))
            continue
        values = tuple(
            _parse_value(kind, name, unescape_raw, mod) for unescape_raw in split_values(raw)
        )
        query.clauses.append(Clause(param, mod, values))
    return query


def parse_count(raw: str, max_count: int) -> int:
    """``_count``: a non-negative integer, capped at ``max_count``."""
    try:
        count = int(raw)
    except ValueError:
        raise Invalid(
            f"_count must be a non-negative integer, got {raw!r}.", expression=["_count"]
        ) from None
    if count < 0:
        raise Invalid("_count must not be negative.", expression=["_count"])
    return min(count, max_count)


def _result_param(query: SearchQuery, name: str, raw: str, max_count: int) -> None:
    if name == "_count":
        query.count = parse_count(raw, max_count)
    elif name == "_total":
        if raw not in ("none", "estimate", "accurate"):
            raise Invalid(
                f"_total must be none, estimate or accurate, got {raw!r}.", expression=["_total"]
            )
        query.total = raw
    elif name == "_summary" and raw == "count":
        query.summary_count = True
    elif name == "_summary" and raw == "false":
        pass  # the default
    elif name in NOT_YET_SUPPORTED or name == "_summary":
        query.unknown.append(f"{name}={raw}" if name == "_summary" else name)


def _prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in DATE_PREFIXES and not value[:2].isdigit():
        return value[:2], value[2:]
    return "eq", value


def _parse_value(kind: str, name: str, raw: str, modifier: str | None) -> Any:
    if raw == "":
        raise Invalid(f"Empty value for search parameter {name}.", expression=[name])
    if kind == "token":
        if modifier == "text":
            return unescape(raw)
        pipe = _split_pipe(raw)
        if pipe is None:
            return TokenValue(None, unescape(raw))
        system, code = pipe
        return TokenValue(unescape(system), unescape(code) or None)
    if kind == "string" or kind == "uri":
        return unescape(raw)
    if kind == "date":
        prefix, rest = _prefix(raw)
        lo, hi = parse_search_range(rest, name)
        return DateValue(prefix, lo, hi)
    if kind in ("number", "quantity"):
        prefix, rest = _prefix(raw)
        parts = split_pipe_all(rest)
        number = _number(parts[0], name)
        if kind == "number":
            return NumberValue(prefix, *number)
        q_system = unescape(parts[1]) if len(parts) > 1 and parts[1] else None
        q_code = unescape(parts[2]) if len(parts) > 2 and parts[2] else None
        return QuantityValue(prefix, *number, q_system, q_code)
    if kind == "reference":
        text = unescape(raw)
        parsed = parse_reference(text)
        if parsed.type and not parsed.base:
            return ReferenceValue(parsed.type, parsed.id, None)
        if "/" not in text and ":" not in text:
            return ReferenceValue(None, text, None)
        return ReferenceValue(None, None, text)
    raise Invalid(f"Search parameter type {kind} of {name} is not supported.", expression=[name])


def split_pipe_all(value: str) -> list[str]:
    parts: list[str] = []
    rest = value
    while True:
        pipe = _split_pipe(rest)
        if pipe is None:
            parts.append(rest)
            return parts
        parts.append(pipe[0])
        rest = pipe[1]


def _number(text: str, name: str) -> tuple[float, float, float]:
    rng = precision_range(unescape(text))
    if rng is None or text.strip() == "":
        raise Invalid(f"Invalid number {text!r} for search parameter {name}.", expression=[name])
    return rng
