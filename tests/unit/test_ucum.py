"""UCUM canonical units (search/ucum.py) and their use in extraction and query parsing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kyphofhir.search.extract import Extractor
from kyphofhir.search.params import QuantityValue, parse_query
from kyphofhir.search.registry import SearchRegistry
from kyphofhir.search.ucum import UCUM_SYSTEM, conversion, ucum_conversion


@pytest.mark.parametrize(
    ("code", "unit", "factor"),
    [
        ("mm", "m", "0.001"),
        ("cm", "m", "0.01"),
        ("m", "m", "1"),
        ("mg", "g", "0.001"),
        ("g", "g", "1"),
        ("kg", "g", "1000"),
        ("mmol/L", "m-3.mol", "1"),
        ("mg/dL", "m-3.g", "10"),
        ("%", "1", "0.01"),
        ("deg", "rad", "0.01745329251994329576923690768488613"),
        ("[in_i]", "m", "0.0254"),
        ("s", "s", "1"),
        ("min", "s", "60"),
        ("h", "s", "3600"),
        ("d", "s", "86400"),
        ("wk", "s", "604800"),
        ("mo", "s", "2629800"),  # the mean Julian month
        ("a", "s", "31557600"),  # the Julian year
        ("10*3/uL", "m-3", "1e12"),
        ("10*9/L", "m-3", "1e12"),
        ("kg/m2", "m-2.g", "1000"),
        ("mm[Hg]", "m-1.s-2.g", "133322"),  # UCUM: 133.322 kPa per m[Hg]
        ("kPa", "m-1.s-2.g", "1000000"),
        ("/min", "s-1", "0.01666666666666666666666666666666667"),
        ("mL/min", "m3.s-1", "1.666666666666666666666666666666667e-8"),
        ("U/L", "m-3.s-1.mol", "0.00001666666666666666666666666666666667"),
        ("m/s2", "m.s-2", "1"),
        ("mg/(24.h)", "s-1.g", "1.157407407407407407407407407407407e-8"),
        # where ucumvert's pint definitions differ from UCUM, the UCUM definition counts
        ("[Cal]", "m2.s-2.g", "4184000"),  # the nutrition Calorie is a kilocalorie
        ("g%", "m-3.g", "10000"),  # g% = g/dL
        ("'", "rad", "0.0002908882086657215961539484614147689"),  # minute of angle
        ("[LPF]", "1", "100"),
    ],
)
def test_canonical_form(code: str, unit: str, factor: str) -> None:
    found = conversion(code)
    assert found is not None
    assert found.unit == unit
    assert found.factor == Decimal(factor)
    assert found.offset == 0


@pytest.mark.parametrize(
    ("code", "value", "kelvin"),
    [("Cel", "37", 310.15), ("[degF]", "98.6", 310.15), ("[degF]", "32", 273.15)],
)
def test_temperatures_convert_with_their_offset(code: str, value: str, kelvin: float) -> None:
    found = conversion(code)
    assert found is not None and found.unit == "K"
    assert found.apply(Decimal(value)) == kelvin


@pytest.mark.parametrize(
    "code",
    [
        "[IU]/L",  # arbitrary units convert to nothing
        "[arb'U]",
        "10*3.[CFU]/mL",
        "{score}",  # annotations are not ignored
        "mL/min/{1.73_m2}",
        "[pH]",  # special units other than the temperatures
        "dB",
        "%[slope]",
        "mCel",
        "furlong",  # not UCUM
        "MM",
        "m/",
        "",
        "m." * 60 + "m",  # longer than MAX_CODE
        "10*999999999",  # decimal overflow
        "10*101",  # factors beyond 1e100 would make infinite floats
    ],
)
def test_not_convertible(code: str) -> None:
    assert conversion(code) is None


def test_only_the_ucum_system_converts() -> None:
    assert ucum_conversion(UCUM_SYSTEM, "cm") is not None
    assert ucum_conversion("urn:local", "cm") is None
    assert ucum_conversion(None, "cm") is None
    assert ucum_conversion(UCUM_SYSTEM, None) is None


def test_decimal_arithmetic_gives_equal_floats_for_equal_quantities() -> None:
    dm, m, mm = conversion("dm"), conversion("m"), conversion("mm")
    assert dm is not None and m is not None and mm is not None
    assert 3 * 0.1 != 0.3  # what plain floats would do
    assert dm.apply(Decimal(3)) == m.apply(Decimal("0.3")) == mm.apply(Decimal(300)) == 0.3


def test_conversions_are_cached() -> None:
    conversion("ng/mL")
    before = conversion.cache_info().hits
    assert conversion("ng/mL") is conversion("ng/mL")
    assert conversion.cache_info().hits == before + 2


@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return SearchRegistry.default()


def _quantity_rows(registry: SearchRegistry, quantity: dict) -> list[dict]:
    obs = {"resourceType": "Observation", "status": "final", "valueQuantity": quantity}
    rows = Extractor(registry).extract(obs)
    return [r for r in rows["quantity"] if r["param"] == "value-quantity"]


def test_extract_adds_the_canonical_form(registry: SearchRegistry) -> None:
    [row] = _quantity_rows(registry, {"value": 15, "system": UCUM_SYSTEM, "code": "mm"})
    assert (row["value"], row["code"]) == (15.0, "mm")
    assert row["canon_code"] == "m"
    assert (row["canon_value"], row["canon_lo"], row["canon_hi"]) == (0.015, 0.0145, 0.0155)


@pytest.mark.parametrize(
    "quantity",
    [
        {"value": 15, "system": "urn:local", "code": "mm"},
        {"value": 15, "system": UCUM_SYSTEM, "code": "((mm"},
        {"value": 15, "system": UCUM_SYSTEM, "unit": "mm"},
        {"value": 15, "code": "mm"},
        {"value": 15, "system": UCUM_SYSTEM, "code": "x" * 500},
    ],
)
def test_extract_without_canonical_form(registry: SearchRegistry, quantity: dict) -> None:
    [row] = _quantity_rows(registry, quantity)
    assert row["value"] == 15.0
    assert row["canon_code"] is row["canon_value"] is row["canon_lo"] is row["canon_hi"] is None


def test_composite_rows_carry_the_canonical_form(registry: SearchRegistry) -> None:
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        "valueQuantity": {"value": 1.5, "system": UCUM_SYSTEM, "code": "cm"},
    }
    rows = [
        r
        for r in Extractor(registry).extract(obs)["composite"]
        if r["param"] == "code-value-quantity"
    ]
    assert [(r["code1"], r["code2"], r["canon_code2"], r["canon_value2"]) for r in rows] == [
        ("8302-2", "cm", "m", 0.015)
    ]


def _value(registry: SearchRegistry, raw: str) -> QuantityValue:
    query = parse_query(registry, "Observation", [("value-quantity", raw)])
    value = query.clauses[0].values[0]
    assert isinstance(value, QuantityValue)
    return value


def test_parse_converts_ucum_search_values(registry: SearchRegistry) -> None:
    value = _value(registry, f"ap150|{UCUM_SYSTEM}|mm")
    assert value.canonical is not None
    c = value.canonical
    assert (c.code, c.value, c.lo, c.hi) == ("m", 0.15, 0.1495, 0.1505)
    assert (c.ap_lo, c.ap_hi) == (0.135, 0.165)
    assert (value.prefix, value.value, value.code) == ("ap", 150.0, "mm")


def test_parse_converts_temperatures_with_their_offset(registry: SearchRegistry) -> None:
    c = _value(registry, f"ap100|{UCUM_SYSTEM}|Cel").canonical
    assert c is not None
    assert (c.value, c.ap_lo, c.ap_hi) == (373.15, 363.15, 383.15)  # ±10 % of 100 Cel


@pytest.mark.parametrize(
    "raw", ["15||mm", "15|urn:local|mm", f"15|{UCUM_SYSTEM}|((mm", f"15|{UCUM_SYSTEM}|", "15"]
)
def test_parse_leaves_other_values_alone(registry: SearchRegistry, raw: str) -> None:
    assert _value(registry, raw).canonical is None
