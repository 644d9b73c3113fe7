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
from kyphofhir.search.extract import decimal_range, of_type_code, precision_range
from kyphofhir.search.registry import SearchParam, SearchRegistry
from kyphofhir.search.ucum import ucum_conversion

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
NOT_YET_SUPPORTED = frozenset({"_contained", "_containedType", "_since", "_at"})
SORTABLE_TYPES = frozenset({"token", "string", "date", "number", "quantity", "reference", "uri"})
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
SUPPORTED_MODIFIERS: dict[str, frozenset[str]] = {
    "token": frozenset({"missing", "not", "text", "in", "not-in", "above", "below", "of-type"}),
    "string": frozenset({"missing", "exact", "contains"}),
    "reference": frozenset({"missing", "identifier"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "uri": frozenset({"missing", "below", "above"}),
    "composite": frozenset({"missing"}),
}


@dataclass(frozen=True)
class TokenValue:
    system: str | None  # None: any system; "": no system
    code: str | None  # None: any code (``system|``)


@dataclass(frozen=True)
class CodeSet:
    """A token clause's value after terminology resolution (``:in``, ``:below``, ...)."""

    codes: frozenset[tuple[str, str]]  # (system, code)


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
class CanonicalQuantity:
    """A UCUM quantity search value in canonical units (``search/ucum.py``): the value, its
    precision range and the ``ap`` range (±10 % of the value), each converted."""

    code: str
    value: float
    lo: float
    hi: float
    ap_lo: float
    ap_hi: float


@dataclass(frozen=True)
class QuantityValue:
    prefix: str
    value: float
    lo: float
    hi: float
    system: str | None
    code: str | None
    canonical: CanonicalQuantity | None = None  # set for convertible UCUM units only


@dataclass(frozen=True)
class ReferenceValue:
    type: str | None
    id: str | None
    url: str | None


@dataclass(frozen=True)
class CompositeValue:
    """``system|code$prefix value``: a token and a second value matched in the same item."""

    first: TokenValue
    second: Any
    second_type: str


@dataclass(frozen=True)
class Chain:
    """``subject:Patient.name=x``: the referenced resource must match ``inner``.

    One inner clause per possible target type (``subject.name`` may point at a Patient or
    a Group); the chain matches if any of them does.
    """

    targets: tuple[tuple[str, Clause], ...]


@dataclass(frozen=True)
class Has:
    """``_has:Observation:subject:code=x``: some ``source_type`` resource that refers to
    this one through its reference parameter ``Clause.param`` must match ``inner``."""

    source_type: str
    inner: Clause


@dataclass(frozen=True)
class Clause:
    """One ``name[:modifier]=v1,v2`` parameter: the values are OR-ed.

    A chained parameter carries ``chain`` (``param`` is the reference parameter), a
    reverse chain carries ``has`` (``param`` is the source type's reference parameter);
    their values live in the innermost clause.
    """

    param: SearchParam
    modifier: str | None
    values: tuple[Any, ...]
    chain: Chain | None = None
    has: Has | None = None


@dataclass
class SearchQuery:
    resource_type: str
    clauses: list[Clause] = field(default_factory=list)
    count: int = 20
    unknown: list[str] = field(default_factory=list)
    total: str = "accurate"
    summary_count: bool = False
    summary: str | None = None  # true | text | data (count is summary_count)
    elements: tuple[str, ...] = ()
    includes: list[Include] = field(default_factory=list)
    sort: list[tuple[SearchParam, bool]] = field(default_factory=list)  # (param, descending)
    # system-level search: one query per resource type, OR-ed (resource_type is "*")
    union: list[SearchQuery] = field(default_factory=list)
    # compartment: (compartment type, id, reference parameters linking into it)
    compartment: tuple[str, str, tuple[str, ...]] | None = None


@dataclass(frozen=True)
class Include:
    """``_include=Observation:subject[:Patient]`` (or ``_revinclude``), ``:iterate`` or not.

    ``param`` None means every reference parameter of ``source`` (``Observation:*``).
    """

    source: str
    param: str | None
    target: str | None
    reverse: bool
    iterate: bool


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
        base = name.split(":")[0].split(".")[0]
        if base in RESULT_PARAMS:
            _result_param(registry, query, name, raw, max_count)
            continue
        try:
            clause = _parse_clause(registry, resource_type, name, raw, top=True)
        except Invalid as exc:
            if exc.expression == (name,):
                raise
            # an error deep in a chain names the parameter the client sent
            raise Invalid(
                f"{name}: {exc.diagnostics}", expression=[name], details_code=exc.details_code
            ) from None
        if clause is None:
            query.unknown.append(name)
        else:
            query.clauses.append(clause)
    return query


MAX_CHAIN_DEPTH = 8


def _parse_clause(
    registry: SearchRegistry, rtype: str, name: str, raw: str, *, top: bool = False, depth: int = 0
) -> Clause | None:
    """One parameter name (possibly chained or reverse-chained) and its raw value.

    Returns None for an unknown plain parameter at the top level (reported, not fatal);
    inside a chain or ``_has`` an unknown parameter is a malformed search: 400.
    """
    if depth > MAX_CHAIN_DEPTH:
        raise Invalid(f"{name}: chains are limited to {MAX_CHAIN_DEPTH} levels.", expression=[name])
    if name.startswith("_has:"):
        return _parse_has(registry, rtype, name, raw, depth)
    head, dot, tail = name.partition(".")
    code, _, modifier = head.partition(":")
    param = registry.get(rtype, code)
    if dot and param is None and top:
        return None  # an unknown parameter, like any other at the top level
    if dot:
        return _parse_chain(registry, rtype, name, param, modifier or None, tail, raw, depth)
    if param is None or not (param.indexed or code in ("_id", "_lastUpdated")):
        if top:
            return None
        raise Invalid(
            f"Unknown search parameter {code!r} for {rtype}.",
            expression=[name],
            details_code="MSG_PARAM_UNKNOWN",
        )
    if param.type == "composite":
        return _composite_clause(registry, param, name, modifier or None, raw)
    return _value_clause(param, name, modifier or None, raw)


def _composite_clause(
    registry: SearchRegistry, param: SearchParam, name: str, mod: str | None, raw: str
) -> Clause:
    if mod == "missing":
        return _value_clause(param, name, mod, raw)
    if mod is not None:
        raise Invalid(
            f"Modifier ':{mod}' is not supported for composite parameter {param.code}.",
            expression=[name],
            details_code="MSG_PARAM_MODIFIER_INVALID",
        )
    _, second_type = registry.component_types(param)
    values = []
    for text in split_values(raw):
        parts = _split_dollar(text)
        if len(parts) != 2:
            raise Invalid(
                f"{name}: a composite value is two parts separated by '$', got {text!r}.",
                expression=[name],
            )
        first = _parse_value("token", name, parts[0], None)
        second = _parse_value(second_type, name, parts[1], None)
        values.append(CompositeValue(first, second, second_type))
    return Clause(param, None, tuple(values))


def _split_dollar(value: str) -> list[str]:
    parts: list[str] = []
    start, i = 0, 0
    while i < len(value):
        if value[i] == "\\":
            i += 2
            continue
        if value[i] == "$":
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return parts


def _parse_has(registry: SearchRegistry, rtype: str, name: str, raw: str, depth: int) -> Clause:
    parts = name.split(":", 3)
    if len(parts) < 4 or not all(parts[1:]):
        raise Invalid(
            f"{name}: reverse chaining is _has:Type:reference-parameter:parameter.",
            expression=[name],
        )
    _, source, ref_code, inner_name = parts
    ref = registry.get(source, ref_code)
    if ref is None or ref.type != "reference":
        raise Invalid(
            f"{name}: {source} has no reference search parameter {ref_code!r}.",
            expression=[name],
        )
    if ref.targets and rtype not in ref.targets:
        raise Invalid(f"{name}: {source}.{ref_code} does not refer to {rtype}.", expression=[name])
    inner = _parse_clause(registry, source, inner_name, raw, depth=depth + 1)
    assert inner is not None
    return Clause(ref, None, (), has=Has(source, inner))


def _parse_chain(
    registry: SearchRegistry,
    rtype: str,
    name: str,
    param: SearchParam | None,
    type_modifier: str | None,
    tail: str,
    raw: str,
    depth: int,
) -> Clause:
    if param is None:
        raise Invalid(f"{name}: unknown search parameter for {rtype}.", expression=[name])
    if param.type != "reference":
        raise Invalid(
            f"{name}: {param.code} is a {param.type} parameter; only reference parameters "
            "can be chained.",
            expression=[name],
            details_code="MSG_PARAM_CHAINED",
        )
    candidates = [type_modifier] if type_modifier else list(param.targets)
    if type_modifier and param.targets and type_modifier not in param.targets:
        raise Invalid(f"{name}: {param.code} cannot refer to a {type_modifier}.", expression=[name])
    next_code = tail.split(":")[0].split(".")[0]
    targets: list[tuple[str, Clause]] = []
    for target in candidates:
        if next_code == "_has" or registry.get(target, next_code) is not None:
            inner = _parse_clause(registry, target, tail, raw, depth=depth + 1)
            assert inner is not None
            targets.append((target, inner))
    if not targets:
        raise Invalid(
            f"{name}: no type that {param.code} refers to has a search parameter {next_code!r}.",
            expression=[name],
        )
    return Clause(param, None, (), chain=Chain(tuple(targets)))


def _value_clause(param: SearchParam, name: str, mod: str | None, raw: str) -> Clause:
    kind = "token" if param.code == "_id" else param.type
    if kind == "reference" and mod is not None and mod[:1].isupper():
        return _typed_reference_clause(param, name, mod, raw)
    if mod is not None and mod not in SUPPORTED_MODIFIERS.get(kind, frozenset()):
        raise Invalid(
            f"Modifier ':{mod}' is not supported for {kind} parameter {param.code}.",
            expression=[name],
            details_code="MSG_PARAM_MODIFIER_INVALID",
        )
    if mod == "missing":
        if raw not in ("true", "false"):
            raise Invalid(f"{name} must be true or false.", expression=[name])
        return Clause(param, mod, (raw == "true",))
    if mod == "of-type":
        return Clause(param, mod, tuple(_of_type_value(name, v) for v in split_values(raw)))
    if mod == "identifier":  # Reference.identifier, matched like a token
        kind = "token"
    values = tuple(_parse_value(kind, name, value, mod) for value in split_values(raw))
    return Clause(param, mod, values)


def _of_type_value(name: str, raw: str) -> TokenValue:
    """``identifier:of-type=system|code|value``: Identifier.type coding and value."""
    parts = split_pipe_all(raw)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise Invalid(
            f"{name} takes [system]|[code]|[value] (the identifier type and the value), "
            f"got {raw!r}.",
            expression=[name],
        )
    system, code, value = (unescape(p) for p in parts)
    return TokenValue(system, of_type_code(code, value))


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


def _result_param(
    registry: SearchRegistry, query: SearchQuery, full_name: str, raw: str, max_count: int
) -> None:
    name, _, modifier = full_name.partition(":")
    if name in ("_include", "_revinclude"):
        for value in split_values(raw):
            query.includes.append(
                _parse_include(registry, query.resource_type, full_name, name, modifier, value)
            )
        return
    if name == "_sort":
        query.sort = [_parse_sort_key(registry, query.resource_type, k) for k in raw.split(",")]
        return
    if name == "_elements":
        query.elements = tuple(e.strip() for e in raw.split(",") if e.strip())
        return
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
    elif name == "_summary" and raw in ("true", "text", "data"):
        query.summary = raw
    elif name == "_summary":
        raise Invalid(
            f"_summary must be true, text, data, count or false, got {raw!r}.",
            expression=["_summary"],
        )
    elif name in NOT_YET_SUPPORTED or name == "_summary":
        query.unknown.append(f"{name}={raw}" if name == "_summary" else name)


def _parse_sort_key(registry: SearchRegistry, rtype: str, key: str) -> tuple[SearchParam, bool]:
    key = key.strip()
    descending = key.startswith("-")
    code = key[1:] if descending else key
    param = registry.get(rtype, code)
    if param is None or not (
        code in ("_id", "_lastUpdated") or (param.indexed and param.type in SORTABLE_TYPES)
    ):
        raise Invalid(
            f"_sort: {code!r} is not a search parameter of {rtype} that can be sorted on.",
            expression=["_sort"],
            details_code="MSG_SORT_UNKNOWN",
        )
    return param, descending


def _parse_include(
    registry: SearchRegistry, rtype: str, full_name: str, name: str, modifier: str, value: str
) -> Include:
    if modifier not in ("", "iterate", "recurse"):
        raise Invalid(f"{full_name}: unknown modifier {modifier!r}.", expression=[full_name])
    iterate = modifier in ("iterate", "recurse")
    if value == "*":
        return Include(rtype, None, None, name == "_revinclude", iterate)
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise Invalid(
            f"{full_name}={value!r}: expected SourceType:parameter[:TargetType] or *.",
            expression=[full_name],
        )
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if registry.get(source, "_id") is None:
        raise Invalid(f"{full_name}: unknown resource type {source!r}.", expression=[full_name])
    if name == "_include" and source != rtype and not iterate:
        raise Invalid(
            f"{full_name}={value!r}: _include starts from the searched type {rtype} "
            "(use _include:iterate for included resources).",
            expression=[full_name],
        )
    if code != "*":
        param = registry.get(source, code)
        if param is None or param.type != "reference":
            raise Invalid(
                f"{full_name}: {source} has no reference search parameter {code!r}.",
                expression=[full_name],
            )
        if target and param.targets and target not in param.targets:
            raise Invalid(
                f"{full_name}: {source}.{code} cannot refer to a {target}.", expression=[full_name]
            )
    return Include(source, None if code == "*" else code, target, name == "_revinclude", iterate)


def _prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in DATE_PREFIXES and not value[:2].isdigit():
        return value[:2], value[2:]
    return "eq", value


def _parse_value(kind: str, name: str, raw: str, modifier: str | None) -> Any:
    if raw == "":
        raise Invalid(f"Empty value for search parameter {name}.", expression=[name])
    if kind == "token":
        if modifier in ("text", "in", "not-in"):
            return unescape(raw)  # text, or a ValueSet URL resolved by the service layer
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
        canonical = _canonical_quantity(unescape(parts[0]), q_system, q_code)
        return QuantityValue(prefix, *number, q_system, q_code, canonical)
    if kind == "reference":
        text = unescape(raw)
        parsed = parse_reference(text)
        if parsed.type and not parsed.base:
            return ReferenceValue(parsed.type, parsed.id, None)
        if "/" not in text and ":" not in text:
            return ReferenceValue(None, text, None)
        return ReferenceValue(None, None, text)
    raise Invalid(f"Search parameter type {kind} of {name} is not supported.", expression=[name])


def _typed_reference_clause(param: SearchParam, name: str, rtype: str, raw: str) -> Clause:
    """``subject:Patient=123``: the reference must point at a ``rtype``."""
    if param.targets and rtype not in param.targets:
        raise Invalid(f"{name}: {param.code} cannot refer to a {rtype}.", expression=[name])
    values = []
    for text in split_values(raw):
        value = _parse_value("reference", name, text, None)
        if value.type not in (None, rtype):
            raise Invalid(f"{name}: {text!r} is not a {rtype} reference.", expression=[name])
        values.append(ReferenceValue(rtype, value.id, value.url) if value.id else value)
    return Clause(param, None, tuple(values))


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


def _canonical_quantity(
    number: str, system: str | None, code: str | None
) -> CanonicalQuantity | None:
    """Only a search value with the UCUM system and a convertible code is converted: without
    a system (``5.4||mg``) the code is matched as text against ``code`` or ``unit``."""
    conversion = ucum_conversion(system, code)
    rng = decimal_range(number) if conversion is not None else None
    if conversion is None or rng is None:
        return None
    value, lo, hi = rng
    margin = abs(value) / 10
    return CanonicalQuantity(
        conversion.unit,
        conversion.apply(value),
        conversion.apply(lo),
        conversion.apply(hi),
        conversion.apply(value - margin),
        conversion.apply(value + margin),
    )


def _number(text: str, name: str) -> tuple[float, float, float]:
    rng = precision_range(unescape(text))
    if rng is None or text.strip() == "":
        raise Invalid(f"Invalid number {text!r} for search parameter {name}.", expression=[name])
    return rng
