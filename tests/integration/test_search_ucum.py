"""Quantity search in UCUM canonical units (docs/search.md, "Quantity search and units")."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from kyphofhir.cli import main
from kyphofhir.store.sql.schema import spidx_composite, spidx_quantity
from samples import create

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
LOCAL = "urn:kyphofhir:test:units"


def _obs(value: float, code: str | None, system: str | None = UCUM, **extra: Any) -> dict:
    quantity: dict[str, Any] = {"value": value}
    if system is not None:
        quantity["system"] = system
    if code is not None:
        quantity["code"] = code
    quantity.update(extra)
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8302-2"}]},
        "valueQuantity": quantity,
    }


@pytest.fixture
def stored(api) -> dict[str, str]:
    bodies = {
        "15mm": _obs(15, "mm"),
        "15cm": _obs(15, "cm"),
        "0.15m": _obs(0.15, "m"),
        "500mg": _obs(500, "mg"),
        "0.5g": _obs(0.5, "g"),
        "2kg": _obs(2, "kg"),
        "90mg/dL": _obs(90, "mg/dL"),
        "37Cel": _obs(37, "Cel"),
        "98.6degF": _obs(98.6, "[degF]"),
        "local15cm": _obs(15, "cm", LOCAL),  # not UCUM: never converted
        "3furlong": _obs(3, "furlong"),  # not a UCUM code: matched as text
        "15cm-unit-only": _obs(15, None, unit="cm"),  # no code, only the human unit
    }
    return {name: create(api, body) for name, body in bodies.items()}


def _found(api, stored: dict[str, str], param: str, value: str) -> set[str]:
    r = api.get("/Observation", params={param: value, "_count": "100"})
    assert r.status_code == 200, r.content
    ids = {e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"}
    return {name for name, rid in stored.items() if rid in ids}


LENGTHS = {"15mm", "15cm", "0.15m"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # the examples of the issue
        (f"ge1|{UCUM}|cm", LENGTHS | {"15cm-unit-only"}),
        (f"150|{UCUM}|mm", {"15cm", "0.15m"}),
        # mm <-> cm <-> m with the precision of the search value
        (f"1.5|{UCUM}|cm", {"15mm"}),
        (f"0.015|{UCUM}|m", {"15mm"}),
        (f"15|{UCUM}|mm", {"15mm"}),
        (f"0.15|{UCUM}|m", {"15cm", "0.15m"}),
        (f"151|{UCUM}|mm", set()),  # 150.5 <= v < 151.5 mm: 150 mm is outside
        (f"eq15.0|{UCUM}|cm", {"15cm", "0.15m", "15cm-unit-only"}),
        # prefixes
        (f"gt14|{UCUM}|cm", {"15cm", "0.15m", "15cm-unit-only"}),
        (f"lt2|{UCUM}|cm", {"15mm"}),
        (f"le150|{UCUM}|mm", LENGTHS),
        (f"ge150|{UCUM}|mm", {"15cm", "0.15m"}),
        (f"sa0.1|{UCUM}|m", {"15cm", "0.15m"}),
        (f"eb0.1|{UCUM}|m", {"15mm"}),
        (f"ne15|{UCUM}|cm", {"15mm"}),
        (f"ap14|{UCUM}|cm", {"15cm", "0.15m", "15cm-unit-only"}),
        (f"ap13|{UCUM}|cm", set()),  # 11.7 ... 14.3 cm
        # mass
        (f"500|{UCUM}|mg", {"500mg", "0.5g"}),
        (f"0.5|{UCUM}|g", {"500mg", "0.5g"}),
        (f"ge1|{UCUM}|g", {"2kg"}),
        (f"le1|{UCUM}|kg", {"500mg", "0.5g"}),
        (f"2000|{UCUM}|g", {"2kg"}),
        # mass concentration
        (f"0.9|{UCUM}|g/L", {"90mg/dL"}),
        (f"900|{UCUM}|mg/L", {"90mg/dL"}),
        (f"90|{UCUM}|mg/dL", {"90mg/dL"}),
        (f"5|{UCUM}|mmol/L", set()),  # another dimension
        # temperatures: converted with their offset
        (f"98.6|{UCUM}|[degF]", {"37Cel", "98.6degF"}),
        (f"37|{UCUM}|Cel", {"37Cel", "98.6degF"}),
        (f"310.15|{UCUM}|K", {"37Cel", "98.6degF"}),
        (f"gt38|{UCUM}|Cel", set()),
        # other systems, and codes that are not UCUM, keep the exact match
        (f"15|{LOCAL}|cm", {"local15cm"}),
        (f"150|{LOCAL}|mm", set()),
        (f"3|{UCUM}|furlong", {"3furlong"}),
        (f"3|{UCUM}|[IU]", set()),
        ("3||furlong", {"3furlong"}),
        # without a system the code is text (code or unit), as before: no conversion
        ("15||cm", {"15cm", "local15cm", "15cm-unit-only"}),
        ("150||mm", set()),
        ("15", {"15mm", "15cm", "local15cm", "15cm-unit-only"}),
    ],
)
def test_value_quantity_in_canonical_units(api, stored, value: str, expected: set[str]) -> None:
    assert _found(api, stored, "value-quantity", value) == expected


def test_values_are_or_ed_across_units(api, stored) -> None:
    assert _found(api, stored, "value-quantity", f"1.5|{UCUM}|cm,0.5|{UCUM}|g") == {
        "15mm",
        "500mg",
        "0.5g",
    }


def test_invalid_unit_code_is_stored_and_found_by_its_code(api) -> None:
    weird = ["((m", "m{", "10*", "x" * 300, "mm]", "/", "[pH]", "{score}"]
    ids = {code: create(api, _obs(7, code)) for code in weird}
    for code, rid in ids.items():
        kept = code[:100]  # the index column keeps 100 characters
        r = api.get("/Observation", params={"value-quantity": f"7|{UCUM}|{kept}"})
        assert r.status_code == 200, r.content
        assert [e["resource"]["id"] for e in r.json().get("entry", [])] == [rid], code


BP = {"system": LOINC, "code": "85354-9"}
SYSTOLIC = {"system": LOINC, "code": "8480-6"}


@pytest.fixture
def pressures(api) -> dict[str, str]:
    def bp(value: float, code: str) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [BP]},
            "component": [
                {
                    "code": {"coding": [SYSTOLIC]},
                    "valueQuantity": {"value": value, "system": UCUM, "code": code},
                }
            ],
        }

    return {
        "120mmHg": create(api, bp(120, "mm[Hg]")),
        "16kPa": create(api, bp(16, "kPa")),
        "100mmHg": create(api, bp(100, "mm[Hg]")),
        "local": create(
            api,
            {
                **_obs(16, "kPa", LOCAL),
                "code": {"coding": [SYSTOLIC]},
            },
        ),
        "vertebra": create(
            api,
            {**_obs(21, "mm"), "code": {"coding": [{"system": LOINC, "code": "8302-2"}]}},
        ),
    }


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        # 120 mm[Hg] = 15.999 kPa
        ("component-code-value-quantity", f"{LOINC}|8480-6$16|{UCUM}|kPa", {"120mmHg", "16kPa"}),
        ("component-code-value-quantity", f"8480-6$gt110|{UCUM}|mm[Hg]", {"120mmHg", "16kPa"}),
        ("component-code-value-quantity", f"8480-6$lt14|{UCUM}|kPa", {"100mmHg"}),
        ("component-code-value-quantity", f"8480-6$ap118|{UCUM}|mm[Hg]", {"120mmHg", "16kPa"}),
        ("component-code-value-quantity", f"8480-6$16|{LOCAL}|kPa", set()),
        ("component-code-value-quantity", f"8480-6$120|{UCUM}|mm", set()),  # not a pressure
        # combo: the Observation's own code and value, or a component's
        ("combo-code-value-quantity", f"8480-6$16|{UCUM}|kPa", {"120mmHg", "16kPa"}),
        ("combo-code-value-quantity", f"8480-6$16|{LOCAL}|kPa", {"local"}),
        ("combo-code-value-quantity", f"8302-2$2.1|{UCUM}|cm", {"vertebra"}),
        # the Observation's own code and value
        ("code-value-quantity", f"{LOINC}|8302-2$0.021|{UCUM}|m", {"vertebra"}),
        ("code-value-quantity", f"8302-2$ge21|{UCUM}|mm", {"vertebra"}),
        ("code-value-quantity", f"8302-2$gt2.1|{UCUM}|cm", set()),
        ("code-value-quantity", "8302-2$21||mm", {"vertebra"}),
        ("code-value-quantity", "8302-2$2.1||cm", set()),
    ],
)
def test_composite_quantity_in_canonical_units(
    api, pressures, param: str, value: str, expected: set[str]
) -> None:
    assert _found(api, pressures, param, value) == expected


def test_reindex_fills_the_canonical_columns(app, db_url: str) -> None:
    """Rows indexed before migration 0003 (canonical columns NULL) are matched as before,
    by their code, until ``kyphofhir reindex`` converts them."""
    client = app.test_client()
    r = client.post("/fhir/Observation", json=_obs(15, "mm"))
    assert r.status_code == 201, r.get_data(as_text=True)
    rid = r.json["id"]
    engine = app.extensions["kyphofhir"].store.engine
    with engine.begin() as conn:
        conn.execute(
            update(spidx_quantity).values(
                canon_code=None, canon_value=None, canon_lo=None, canon_hi=None
            )
        )
        conn.execute(
            update(spidx_composite).values(
                canon_code2=None, canon_value2=None, canon_lo2=None, canon_hi2=None
            )
        )

    def hits(value: str, param: str = "value-quantity") -> list[str]:
        found = client.get("/fhir/Observation", query_string={param: value})
        assert found.status_code == 200, found.get_data(as_text=True)
        return [e["resource"]["id"] for e in found.json.get("entry", [])]

    assert hits(f"15|{UCUM}|mm") == [rid]  # the exact fallback
    assert hits(f"1.5|{UCUM}|cm") == []
    assert hits(f"8302-2$1.5|{UCUM}|cm", "code-value-quantity") == []

    result = CliRunner().invoke(main, ["reindex", "--type", "Observation", "--db", db_url])
    assert result.exit_code == 0, result.output
    assert hits(f"1.5|{UCUM}|cm") == [rid]
    assert hits(f"15|{UCUM}|mm") == [rid]
    assert hits(f"8302-2$1.5|{UCUM}|cm", "code-value-quantity") == [rid]
