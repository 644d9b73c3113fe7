"""Resource → search index rows, one list per index table.

For each indexed parameter of the resource's type the compiled expression yields typed
values; the parameter's type decides the row shape (see ``docs/storage.md``):

========== =================================================================
token      system, code, text (Coding, CodeableConcept, Identifier, code, ...)
string     value_norm (accent- and case-folded), value_exact
date       lo, hi: inclusive microsecond range (precision, Period, Timing)
number     value, lo, hi (implicit precision range)
quantity   value, lo, hi, system, code, unit; canon_code, canon_value/lo/hi (UCUM)
reference  target_type, target_id, url (relative, absolute or canonical)
uri        value
========== =================================================================
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from kyphofhir.fhir.datetimes import MAX_US, MIN_US, parse_range
from kyphofhir.fhir.references import parse_reference
from kyphofhir.search.fhirpath import Evaluator, TypedValue, compile_expression
from kyphofhir.search.registry import SearchParam, SearchRegistry, split_union
from kyphofhir.search.ucum import ucum_conversion, warm_ucum

Row = dict[str, Any]
IndexRows = dict[str, list[Row]]

# A converter marks a row with ``DERIVED: modifier`` when it belongs to the token index
# under ``param:modifier`` rather than to the parameter itself: ``identifier:of-type``
# (Identifier.type with the value) and ``subject:identifier`` (Reference.identifier).
# Keeping them apart means a plain ``identifier=`` search never sees them.
DERIVED = "_derived"

# Longest values kept in the index columns (docs/storage.md); longer values are cut, so a
# search for them matches on the kept prefix.
STRING_MAX = 200
SYSTEM_MAX = 255
CODE_MAX = 100
URL_MAX = 500


# Letters that carry no combining mark to strip under NFKD.
_FOLD = str.maketrans(
    {
        "Ø": "O",
        "ø": "o",
        "Æ": "AE",
        "æ": "ae",
        "Œ": "OE",
        "œ": "oe",
        "Ł": "L",
        "ł": "l",
        "Đ": "D",
        "đ": "d",
        "Þ": "TH",
        "þ": "th",
        "ı": "i",
    }
)


def normalize_string(value: str) -> str:
    """Case- and accent-insensitive form used for string search (``Müller`` → ``muller``)."""
    decomposed = unicodedata.normalize("NFKD", value.translate(_FOLD))
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.casefold()[:STRING_MAX]


@dataclass
class Extractor:
    """Compiled extraction for every served type (built once per registry)."""

    registry: SearchRegistry
    _compiled: dict[str, list[tuple[SearchParam, Evaluator]]] = field(default_factory=dict)
    _composites: dict[tuple[str, str], _Composite] = field(default_factory=dict)

    def _composite(self, param: SearchParam) -> _Composite:
        found = self._composites.get((param.resource_type, param.code))
        if found is None:
            types = self.registry.component_types(param)
            parts = tuple(
                _component_evaluator(str(c.get("expression", ""))) for c in param.components
            )
            found = _Composite(types[1], parts[0], parts[1])
            self._composites[(param.resource_type, param.code)] = found
        return found

    def _for_type(self, rtype: str) -> list[tuple[SearchParam, Evaluator]]:
        compiled = self._compiled.get(rtype)
        if compiled is None:
            compiled = [
                (p, compile_expression(p.expression))
                for p in self.registry.indexed(rtype)
                if p.expression
            ]
            self._compiled[rtype] = compiled
        return compiled

    def warm(self) -> None:
        """Compile everything now (at start-up rather than on the first write)."""
        warm_ucum()
        for rtype in self.registry.by_type:
            for param, _ in self._for_type(rtype):
                if param.type == "composite":
                    self._composite(param)

    def extract(self, resource: dict[str, Any]) -> IndexRows:
        rows: IndexRows = {}
        for param, evaluate in self._for_type(resource["resourceType"]):
            convert = (
                self._composite(param).rows
                if param.type == "composite"
                else _CONVERTERS[param.type]
            )
            seen: set[tuple[Any, ...]] = set()
            for typed in evaluate(resource):
                for row in convert(typed):
                    key = tuple(row.values())
                    if key in seen:
                        continue
                    seen.add(key)
                    derived = row.pop(DERIVED, None)
                    if derived is None:
                        row["param"] = param.code
                        rows.setdefault(param.type, []).append(row)
                    else:  # a token row for ``param:modifier`` (see DERIVED)
                        row["param"] = f"{param.code}:{derived}"
                        rows.setdefault("token", []).append(row)
        return rows


def _tokens(typed: TypedValue) -> Iterator[Row]:
    kind, value = typed
    if isinstance(value, dict):
        if kind == "CodeableConcept" or "coding" in value:
            text = value.get("text")
            for coding in value.get("coding") or []:
                if isinstance(coding, dict) and coding.get("code") is not None:
                    yield _token(
                        coding.get("system"), coding["code"], coding.get("display") or text
                    )
            if text and not value.get("coding"):
                yield _token(None, None, text)
        elif kind == "Identifier":
            if value.get("value") is not None:
                yield _token(value.get("system"), value["value"], _type_text(value))
                yield from _of_type_rows(value)
        elif kind == "ContactPoint":
            if value.get("value") is not None:
                yield _token(value.get("system"), value["value"], None)
        elif value.get("code") is not None:  # Coding and Coding-like
            yield _token(value.get("system"), value["code"], value.get("display"))
        elif value.get("value") is not None:
            yield _token(value.get("system"), value["value"], None)
    elif isinstance(value, bool):
        yield _token(None, "true" if value else "false", None)
    elif value is not None:
        yield _token(None, str(value), None)


def _of_type_rows(identifier: dict[str, Any]) -> Iterator[Row]:
    """``identifier:of-type=system|code|value`` rows: the type coding with the value."""
    kind = identifier.get("type")
    if not isinstance(kind, dict):
        return
    for coding in kind.get("coding") or []:
        if isinstance(coding, dict) and coding.get("code") is not None:
            code = of_type_code(coding["code"], identifier["value"])
            row = _token(coding.get("system"), code, None)
            row[DERIVED] = "of-type"
            yield row


def of_type_code(type_code: Any, value: Any) -> str:
    """The ``code`` column of an ``:of-type`` row: the type code and the identifier value."""
    return f"{type_code}|{value}"[:STRING_MAX]


def _type_text(identifier: dict[str, Any]) -> str | None:
    kind = identifier.get("type")
    return kind.get("text") if isinstance(kind, dict) else None


def _token(system: Any, code: Any, text: Any) -> Row:
    return {
        "system": str(system)[:SYSTEM_MAX] if system is not None else "",
        "code": str(code)[:STRING_MAX] if code is not None else None,
        "text": normalize_string(str(text)) if text else None,
    }


_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


def _strings(typed: TypedValue) -> Iterator[Row]:
    _, value = typed
    for text in _string_leaves(value):
        if text:
            yield {"value_norm": normalize_string(text), "value_exact": text[:STRING_MAX]}


def _string_leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        parts = _NAME_PARTS if "family" in value or "given" in value else _ADDRESS_PARTS
        if not any(k in value for k in parts):
            parts = tuple(k for k in value if k not in ("extension", "id", "use", "period"))
        for key in parts:
            item = value.get(key)
            if isinstance(item, list):
                yield from (v for v in item if isinstance(v, str))
            elif isinstance(item, str):
                yield item


def _dates(typed: TypedValue) -> Iterator[Row]:
    kind, value = typed
    if isinstance(value, str):
        try:
            lo, hi = parse_range(value)
        except ValueError:
            return
        yield {"lo": lo, "hi": hi}
    elif isinstance(value, dict):
        if kind == "Timing" or "event" in value:
            events = [parse_range(e) for e in value.get("event") or [] if _is_date(e)]
            bounds = value.get("repeat", {}).get("boundsPeriod") if value.get("repeat") else None
            if bounds:
                yield from _period(bounds)
            if events:
                yield {"lo": min(e[0] for e in events), "hi": max(e[1] for e in events)}
        else:
            yield from _period(value)


def _is_date(value: Any) -> bool:
    try:
        parse_range(value)
    except (ValueError, TypeError):
        return False
    return True


def _period(value: dict[str, Any]) -> Iterator[Row]:
    start, end = value.get("start"), value.get("end")
    if start is None and end is None:
        return
    lo = parse_range(start)[0] if isinstance(start, str) and _is_date(start) else MIN_US
    hi = parse_range(end)[1] if isinstance(end, str) and _is_date(end) else MAX_US
    yield {"lo": lo, "hi": hi}


def decimal_range(value: Any) -> tuple[Decimal, Decimal, Decimal] | None:
    """(value, lo, hi): the implicit range of a decimal given its significant digits."""
    try:
        dec = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not dec.is_finite():
        return None
    exponent = dec.as_tuple().exponent
    half = Decimal(5) * Decimal(10) ** (int(exponent) - 1) if isinstance(exponent, int) else 0
    return dec, dec - half, dec + half


def precision_range(value: Any) -> tuple[float, float, float] | None:
    """:func:`decimal_range` as floats."""
    rng = decimal_range(value)
    if rng is None:
        return None
    return float(rng[0]), float(rng[1]), float(rng[2])


def _numbers(typed: TypedValue) -> Iterator[Row]:
    _, value = typed
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        rng = precision_range(value)
        if rng:
            yield {"value": rng[0], "lo": rng[1], "hi": rng[2]}


def _quantities(typed: TypedValue) -> Iterator[Row]:
    _, value = typed
    if not isinstance(value, dict) or value.get("value") is None:
        return
    rng = decimal_range(value["value"])
    if rng is None:
        return
    code = value.get("code") or value.get("currency")
    unit = value.get("unit")
    system = value.get("system")
    # UCUM canonical form (search/ucum.py): a cached dict lookup per distinct code
    canon = ucum_conversion(system, code) if isinstance(code, str) else None
    yield {
        "value": float(rng[0]),
        "lo": float(rng[1]),
        "hi": float(rng[2]),
        "system": str(system or "")[:SYSTEM_MAX],
        "code": str(code)[:CODE_MAX] if code is not None else None,
        "unit": str(unit)[:CODE_MAX] if unit is not None else None,
        "canon_code": canon.unit if canon else None,
        "canon_value": canon.apply(rng[0]) if canon else None,
        "canon_lo": canon.apply(rng[1]) if canon else None,
        "canon_hi": canon.apply(rng[2]) if canon else None,
    }


def _references(typed: TypedValue) -> Iterator[Row]:
    _, value = typed
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str):
            yield _reference_row(ref)
        identifier = value.get("identifier")
        if isinstance(identifier, dict) and identifier.get("value") is not None:
            row = _token(identifier.get("system"), identifier["value"], None)
            row[DERIVED] = "identifier"
            yield row
    elif isinstance(value, str):  # canonical / uri used as reference
        yield _reference_row(value)


def _reference_row(text: str) -> Row:
    parsed = parse_reference(text)
    url = parsed.url[:URL_MAX] if parsed.url else None
    return {"target_type": parsed.type, "target_id": parsed.id, "url": url}


def _uris(typed: TypedValue) -> Iterator[Row]:
    _, value = typed
    if isinstance(value, str):
        yield {"value": value[:URL_MAX]}


_CONVERTERS: dict[str, Callable[[TypedValue], Iterator[Row]]] = {
    "token": _tokens,
    "string": _strings,
    "date": _dates,
    "number": _numbers,
    "quantity": _quantities,
    "reference": _references,
    "uri": _uris,
}


_COMPONENT = re.compile(r"^\s*([a-z][A-Za-z0-9]*)(?:\.as\(\s*([A-Za-z]+)\s*\))?\s*$")
_COMPOSITE_EMPTY: Row = {
    "system2": None,
    "code2": None,
    "text2": None,
    "value2": None,
    "lo2": None,
    "hi2": None,
    "date_lo2": None,
    "date_hi2": None,
    "canon_code2": None,
    "canon_value2": None,
    "canon_lo2": None,
    "canon_hi2": None,
}


def _component_evaluator(expression: str) -> Callable[[Any], list[TypedValue]]:
    """A composite component (``code``, ``value.as(Quantity) | value.as(Range)``) on one item.

    The R4 component expressions are relative to an element (an Observation or one of its
    components), where FHIRPath has no type context to resolve ``value`` to
    ``valueQuantity``; they are all of this simple form, so they are resolved here.
    """
    keys: list[tuple[str, str]] = []
    for branch in split_union(expression):
        m = _COMPONENT.match(branch)
        if not m:
            raise ValueError(f"unsupported composite component expression {expression!r}")
        name, cast = m.group(1), m.group(2)
        key = name + (cast[0].upper() + cast[1:] if cast else "")
        keys.append((key, cast or "Element"))

    def evaluate(item: Any) -> list[TypedValue]:
        if not isinstance(item, dict):
            return []
        out: list[TypedValue] = []
        for key, kind in keys:
            value = item.get(key)
            for v in value if isinstance(value, list) else [value]:
                if v is not None:
                    out.append((kind, v))
        return out

    return evaluate


@dataclass(frozen=True)
class _Composite:
    second_type: str
    first: Callable[[Any], list[TypedValue]]
    second: Callable[[Any], list[TypedValue]]

    def rows(self, typed: TypedValue) -> Iterator[Row]:
        _, item = typed
        firsts = [
            r
            for tv in self.first(item)
            for r in _tokens(tv)
            if r["code"] is not None and DERIVED not in r
        ]
        convert = _CONVERTERS[self.second_type]
        seconds = [r for tv in self.second(item) for r in convert(tv) if DERIVED not in r]
        for a in firsts:
            for b in seconds:
                row = {"system1": a["system"], "code1": a["code"], **_COMPOSITE_EMPTY}
                if self.second_type == "token":
                    row.update(system2=b["system"], code2=b["code"])
                elif self.second_type == "quantity":
                    row.update(
                        value2=b["value"],
                        lo2=b["lo"],
                        hi2=b["hi"],
                        system2=b["system"],
                        code2=b["code"],
                        canon_code2=b["canon_code"],
                        canon_value2=b["canon_value"],
                        canon_lo2=b["canon_lo"],
                        canon_hi2=b["canon_hi"],
                    )
                elif self.second_type == "date":
                    row.update(date_lo2=b["lo"], date_hi2=b["hi"])
                elif self.second_type == "string":
                    row.update(text2=b["value_norm"])
                yield row
