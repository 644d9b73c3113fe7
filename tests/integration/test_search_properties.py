"""Property-based: the server's answer for generated token, date and quantity searches
(UCUM units converted) equals a straightforward Python filter over the same generated
resources."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kyphofhir.fhir.datetimes import parse_range

CODES = [
    ("http://loinc.org", "38214-3"),
    ("http://loinc.org", "97909-6"),
    ("urn:local", "x1"),
    (None, "x2"),
]
UCUM = "http://unitsofmeasure.org"
PREFIXES = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]


def _random_date(rng: random.Random) -> str:
    y, m, d = rng.randint(2023, 2025), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice(
        [
            f"{y}",
            f"{y}-{m:02d}",
            f"{y}-{m:02d}-{d:02d}",
            f"{y}-{m:02d}-{d:02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
            f"{y}-{m:02d}-{d:02d}T{rng.randint(0, 23):02d}:30:00+02:00",
        ]
    )


@pytest.fixture
def dataset(app) -> list[dict[str, Any]]:
    rng = random.Random(20241124)
    client = app.test_client()
    stored = []
    for _ in range(40):
        system, code = rng.choice(CODES)
        coding = {"code": code} if system is None else {"system": system, "code": code}
        value = Decimal(rng.randint(0, 10000)) / Decimal(10 ** rng.randint(0, 2))
        body = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [coding]},
            "effectiveDateTime": _random_date(rng),
            "valueQuantity": {
                "value": float(value),
                "system": UCUM,
                "code": rng.choice(["mm", "cm"]),
            },
        }
        r = client.post("/fhir/Observation", json=body)
        assert r.status_code == 201, r.get_data(as_text=True)
        stored.append({**r.json, "_value": value})
    return stored


def _search(app, params: dict[str, str]) -> set[str]:
    r = app.test_client().get("/fhir/Observation", query_string={**params, "_count": "1000"})
    assert r.status_code == 200, r.get_data(as_text=True)
    return {e["resource"]["id"] for e in r.json.get("entry", [])}


def _range_match(
    prefix: str, lo: int | float, hi: int | float, slo: int | float, shi: int | float
) -> bool:
    return {
        "eq": slo <= lo and hi <= shi,
        "ne": not (slo <= lo and hi <= shi),
        "gt": hi > shi,
        "lt": lo < slo,
        "ge": hi >= slo,
        "le": lo <= shi,
        "sa": lo > shi,
        "eb": hi < slo,
    }[prefix]


def _decimal_range(text: str) -> tuple[Decimal, Decimal, Decimal]:
    d = Decimal(text)
    half = Decimal(5) * Decimal(10) ** (d.as_tuple().exponent - 1)  # type: ignore[operator]
    return d, d - half, d + half


def _quantity_match(prefix: str, v: Decimal, text: str) -> bool:
    value, lo, hi = _decimal_range(text)
    return {
        "eq": lo <= v < hi,
        "ne": not lo <= v < hi,
        "gt": v > value,
        "lt": v < value,
        "ge": v >= value,
        "le": v <= value,
        "sa": v > value,
        "eb": v < value,
    }[prefix]


TOKEN = st.sampled_from(CODES).flatmap(
    lambda c: st.sampled_from(
        [c[1], f"{c[0] or ''}|{c[1]}", f"{c[0]}|" if c[0] else "|x2", "urn:none|38214-3"]
    )
)
DATES = st.builds(
    lambda p, y, m, d, form: p + [f"{y}", f"{y}-{m:02d}", f"{y}-{m:02d}-{d:02d}"][form],
    st.sampled_from(PREFIXES),
    st.integers(2022, 2026),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 2),
)
QUANTITIES = st.builds(
    lambda p, n, scale, unit: f"{p}{Decimal(n) / Decimal(10**scale)}{unit}",
    st.sampled_from(PREFIXES),
    st.integers(0, 10000),
    st.integers(0, 2),
    st.sampled_from(["", f"|{UCUM}|mm", f"|{UCUM}|cm", f"|{UCUM}|m", "||cm"]),
)
# UCUM units of the search compare in canonical units (metres); without a system the code
# is compared as text
METRES = {"mm": Decimal("0.001"), "cm": Decimal("0.01"), "m": Decimal(1)}

RELAXED = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@RELAXED
@given(value=TOKEN)
def test_token_search_equals_python_filter(app, dataset, value: str) -> None:
    def matches(res: dict[str, Any]) -> bool:
        coding = res["code"]["coding"][0]
        system, code = coding.get("system"), coding["code"]
        if "|" not in value:
            return code == value
        want_system, want_code = value.split("|", 1)
        if want_system == "":
            return system is None and code == want_code
        return system == want_system and (want_code == "" or code == want_code)

    assert _search(app, {"code": value}) == {r["id"] for r in dataset if matches(r)}


@RELAXED
@given(value=DATES)
def test_date_search_equals_python_filter(app, dataset, value: str) -> None:
    prefix, text = value[:2], value[2:]
    slo, shi = parse_range(text)

    def matches(res: dict[str, Any]) -> bool:
        lo, hi = parse_range(res["effectiveDateTime"])
        return _range_match(prefix, lo, hi, slo, shi)

    assert _search(app, {"date": value}) == {r["id"] for r in dataset if matches(r)}


@RELAXED
@given(value=QUANTITIES)
def test_quantity_search_equals_python_filter(app, dataset, value: str) -> None:
    prefix, rest = value[:2], value[2:]
    number, _, unit_part = rest.partition("|")
    system, _, unit = unit_part.partition("|")

    def matches(res: dict[str, Any]) -> bool:
        code = res["valueQuantity"]["code"]
        if system == UCUM:  # the stored value in the search's unit (exact decimals)
            in_unit = res["_value"] * METRES[code] / METRES[unit]
            return _quantity_match(prefix, in_unit, number)
        if unit and code != unit:
            return False
        return _quantity_match(prefix, res["_value"], number)

    assert _search(app, {"value-quantity": value}) == {r["id"] for r in dataset if matches(r)}
