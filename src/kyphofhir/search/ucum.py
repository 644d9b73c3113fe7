"""UCUM units → canonical form, for quantity search (``docs/search.md``, *Quantity*).

A unit code of ``http://unitsofmeasure.org`` is parsed with ucumvert's UCUM grammar (a
lark parser generated from the official ``ucum-essence.xml``) and evaluated against the
definitions of that same ``ucum-essence.xml`` (vendored in ucumvert): every atom is
reduced, definition by definition, to a decimal factor times a product of base units.
``mg/dL`` becomes ``0.01 × g.m-3``, ``mm`` ``0.001 × m``, ``[in_i]`` ``0.0254 × m``.

ucumvert's own UCUM → pint conversion is *not* used: its pint definitions disagree with
UCUM for some atoms (``[Cal]`` is a small calorie there, ``g%`` a mass, ``'`` a minute of
time, arbitrary units such as ``[IU]`` are dimensionless and so commensurable with ``1``),
and building its pint registry costs more than this whole module.

Deliberately not canonicalised (``conversion`` returns None, so the search falls back to
matching the unit code exactly):

- arbitrary units (``[IU]``, ``[arb'U]``, ``[CFU]``, …): UCUM forbids converting them to
  anything else;
- special (non-multiplicative) units, except the three temperatures below: ``[pH]``,
  ``B[SPL]`` and the other logarithmic levels, ``%[slope]``, ``[p'diop]``, …;
- codes with an annotation (``{score}``, ``mL/min/{1.73_m2}``): UCUM gives annotations no
  meaning, but clinically ``mL/min/{1.73_m2}`` is not ``mL/min``;
- invalid codes and codes longer than ``MAX_CODE`` characters.

The temperatures ``Cel``, ``[degF]`` and ``[degRe]``, used alone, convert to kelvin with
their offset (``37 Cel`` = ``98.6 [degF]`` = ``310.15 K``).

One deviation from UCUM: ``mol`` is a base unit of its own (as in SI) instead of
6.02214076 × 10²³, so amounts of substance (``mmol/L``) never match counts (``10*9/L``).

Arithmetic is decimal: the factor of a unit is a :class:`~decimal.Decimal` (evaluated
with 34 digits), and a value is converted as ``Decimal(value) × factor + offset`` before
it becomes a float, so equal quantities in different units (``3 dm``, ``0.3 m``) give the
same float on the index and on the search side (plain floats would not: ``3 × 0.1 ≠ 0.3``).

Cost: the first use of a code parses and evaluates it (about 0.5 ms); ``conversion`` is
cached per code, so indexing a quantity costs a cache lookup and three decimal products.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any

UCUM_SYSTEM = "http://unitsofmeasure.org"
MAX_CODE = 100  # longer codes are not parsed (and the index column keeps 100 characters)
CACHE_SIZE = 4096

# Base units (UCUM's seven plus mol, see the module docstring), in the order in which the
# canonical unit string lists them.
_BASES = ("m", "s", "g", "rad", "K", "C", "cd", "mol")
_CTX = Context(prec=34)
_ZERO = Decimal(0)
_ONE = Decimal(1)
_FACTOR_MIN, _FACTOR_MAX = Decimal("1e-100"), Decimal("1e100")

# Special units with an offset: kelvin = value × factor + offset.
_TEMPERATURES: dict[str, tuple[Decimal, Decimal]] = {
    "Cel": (_ONE, Decimal("273.15")),
    "[degF]": (
        _CTX.divide(Decimal(5), Decimal(9)),
        _CTX.divide(_CTX.multiply(Decimal("459.67"), Decimal(5)), Decimal(9)),
    ),
    "[degRe]": (Decimal("1.25"), Decimal("273.15")),
}


@dataclass(frozen=True, slots=True)
class Conversion:
    """``canonical value = value × factor + offset``, in ``unit`` (e.g. ``g.m-3``)."""

    unit: str
    factor: Decimal
    offset: Decimal = _ZERO

    def apply(self, value: Decimal) -> float:
        # Decimal operators (the thread's context, 28 digits unless changed) are about twice
        # as fast as _CTX's methods; index and search both convert here, so they agree.
        scaled = value * self.factor
        return float(scaled + self.offset if self.offset else scaled)


class _NotConvertible(Exception):
    """The code names an arbitrary or special unit, or one UCUM does not define."""


# A dimension is a tuple of exponents over _BASES.
_Dim = tuple[int, ...]
_NO_DIM: _Dim = (0,) * len(_BASES)


@dataclass(frozen=True, slots=True)
class _Term:
    factor: Decimal
    dim: _Dim

    def times(self, other: _Term) -> _Term:
        return _Term(
            _CTX.multiply(self.factor, other.factor),
            tuple(a + b for a, b in zip(self.dim, other.dim, strict=True)),
        )

    def power(self, n: int) -> _Term:
        return _Term(_CTX.power(self.factor, n), tuple(a * n for a in self.dim))


_UNITY = _Term(_ONE, _NO_DIM)


def _load_ucumvert() -> tuple[Any, Any]:
    """ucumvert's UCUM parser and the root of its ``ucum-essence.xml``.

    Read from the installed package's files without importing ``ucumvert`` itself: its
    ``__init__`` imports pint (0.2 s per process) for the pint conversion that is not used
    here. The parser is built as ``ucumvert.parser.get_ucum_parser`` builds it; should the
    files move in another ucumvert version, its public functions are used instead.
    """
    from importlib.util import find_spec
    from pathlib import Path
    from xml.etree import ElementTree

    from lark import Lark

    spec = find_spec("ucumvert")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in map(Path, folders):
        grammar, essence = folder / "ucum_grammar.lark", folder / "vendor" / "ucum-essence.xml"
        if grammar.is_file() and essence.is_file():
            parser = Lark(grammar.read_text(encoding="utf8"), start="main_term", strict=True)
            return parser, ElementTree.parse(essence).getroot()
    from ucumvert.parser import get_ucum_parser  # pragma: no cover
    from ucumvert.xml_util import root  # pragma: no cover

    return get_ucum_parser(), root  # pragma: no cover


class _Ucum:
    """The grammar and the essence definitions, loaded once (about 0.06 s)."""

    def __init__(self) -> None:
        from lark import Token

        self.token = Token
        self.parser, root = _load_ucumvert()
        self.prefixes: dict[str, Decimal] = {}
        self.definitions: dict[str, tuple[Decimal, str]] = {}
        self.refused: set[str] = set()  # arbitrary or special atoms
        self.atoms: dict[str, _Term] = {
            code: _Term(_ONE, tuple(int(i == n) for i in range(len(_BASES))))
            for n, code in enumerate(_BASES)
        }
        for prefix in root.findall(".//{*}prefix"):
            value = prefix.find("{*}value")
            if value is not None:
                self.prefixes[prefix.attrib["Code"]] = Decimal(value.attrib["value"])
        for unit in root.findall(".//{*}unit"):
            code = unit.attrib["Code"]
            value = unit.find("{*}value")
            if (
                unit.attrib.get("isArbitrary") == "yes"
                or unit.attrib.get("isSpecial") == "yes"
                or value is None
                or "value" not in value.attrib
            ):
                self.refused.add(code)
            elif code not in self.atoms:
                self.definitions[code] = (Decimal(value.attrib["value"]), value.attrib["Unit"])

    def atom(self, code: str, depth: int = 0) -> _Term:
        found = self.atoms.get(code)
        if found is not None:
            return found
        if code in self.refused or code not in self.definitions or depth > 20:
            raise _NotConvertible(code)
        value, unit = self.definitions[code]
        term = self._expression(unit, depth + 1)
        found = _Term(_CTX.multiply(value, term.factor), term.dim)
        self.atoms[code] = found
        return found

    def _expression(self, text: str, depth: int) -> _Term:
        if text == "1":
            return _UNITY
        return self.evaluate(self.parser.parse(text), depth)

    def evaluate(self, node: Any, depth: int = 0) -> _Term:
        """A lark tree of ucumvert's grammar (``main_term``, ``term``, …) → a term."""
        Token = self.token
        if isinstance(node, Token):
            raise _NotConvertible(str(node))  # an annotation (checked before) or unexpected
        kind, children = node.data, node.children
        if kind == "simple_unit":
            if len(children) == 2:
                prefix = self.prefixes[str(children[0])]
                term = self.atom(str(children[1]), depth)
                return _Term(_CTX.multiply(prefix, term.factor), term.dim)
            token = children[0]
            if token.type == "FACTOR":
                return _Term(Decimal(str(token)), _NO_DIM)
            return self.atom(str(token), depth)
        if kind == "annotatable":
            if len(children) == 2 and isinstance(children[1], Token):
                return self.evaluate(children[0], depth).power(int(children[1]))
            return self.evaluate(children[0], depth)
        if kind == "main_term":
            if len(children) == 2:  # "/" term
                return self.evaluate(children[1], depth).power(-1)
            return self.evaluate(children[0], depth)
        if kind == "term" and len(children) == 3:
            left = self.evaluate(children[0], depth)
            right = self.evaluate(children[2], depth)
            return left.times(right.power(-1) if str(children[1]) == "/" else right)
        if kind == "component" and len(children) == 1:
            return self.evaluate(children[0], depth)
        raise _NotConvertible(kind)


@functools.cache
def _ucum() -> _Ucum:
    return _Ucum()


def warm_ucum() -> None:
    """Load the grammar and the definitions now (at start-up, not on the first write)."""
    _ucum()


def canonical_unit(dim: _Dim) -> str:
    """``(−3, 0, 1, …)`` → ``m-3.g``; a dimensionless unit is ``1``."""
    parts = [b if e == 1 else f"{b}{e}" for b, e in zip(_BASES, dim, strict=True) if e]
    return ".".join(parts) or "1"


@functools.lru_cache(maxsize=CACHE_SIZE)
def conversion(code: str) -> Conversion | None:
    """The conversion of a UCUM unit code to its canonical unit, None if there is none."""
    if not code or len(code) > MAX_CODE or "{" in code:
        return None
    temperature = _TEMPERATURES.get(code)
    if temperature is not None:
        return Conversion("K", *temperature)
    ucum = _ucum()
    from lark.exceptions import LarkError

    try:
        term = ucum.evaluate(ucum.parser.parse(code))
    except (_NotConvertible, LarkError, KeyError, ArithmeticError, ValueError, RecursionError):
        return None  # ArithmeticError: decimal overflow of an absurd exponent (``10*99999``)
    if not (_FACTOR_MIN <= term.factor <= _FACTOR_MAX):
        return None  # keeps every converted value a finite float
    unit = canonical_unit(term.dim)
    if len(unit) > MAX_CODE:
        return None  # absurd exponents; the index column keeps 100 characters
    return Conversion(unit, term.factor)


def ucum_conversion(system: str | None, code: str | None) -> Conversion | None:
    """The conversion for a Quantity's ``system`` and ``code``; only UCUM codes have one."""
    if system != UCUM_SYSTEM or not code:
        return None
    return conversion(code)
