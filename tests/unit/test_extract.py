"""Index rows extracted from resources."""

from __future__ import annotations

from kyphofhir.fhir.datetimes import parse_range
from kyphofhir.search.extract import Extractor, normalize_string, precision_range
from kyphofhir.search.registry import SearchRegistry

EXTRACTOR = Extractor(SearchRegistry.default())


def _rows(resource: dict, kind: str, param: str) -> list[dict]:
    return [r for r in EXTRACTOR.extract(resource).get(kind, []) if r["param"] == param]


def test_patient_rows() -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:x", "value": "1", "type": {"text": "MRN"}}],
        "name": [{"family": "Ørsted-Müller", "given": ["Åse"]}],
        "gender": "female",
        "birthDate": "1950",
        "active": True,
        "generalPractitioner": [{"reference": "https://other.org/fhir/Practitioner/7"}],
    }
    assert _rows(patient, "token", "identifier") == [
        {"system": "urn:x", "code": "1", "text": "mrn", "param": "identifier"}
    ]
    assert {r["value_norm"] for r in _rows(patient, "string", "name")} == {"orsted-muller", "ase"}
    assert _rows(patient, "token", "active")[0]["code"] == "true"
    lo, hi = parse_range("1950")
    assert _rows(patient, "date", "birthdate") == [{"lo": lo, "hi": hi, "param": "birthdate"}]
    ref = _rows(patient, "reference", "general-practitioner")[0]
    assert (ref["target_type"], ref["target_id"]) == ("Practitioner", "7")
    assert ref["url"] == "https://other.org/fhir/Practitioner/7"


def test_observation_rows() -> None:
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "38214-3", "display": "VAS"}]},
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": "2024-01-01"},
        "valueQuantity": {
            "value": 42.0,
            "unit": "mm",
            "system": "http://unitsofmeasure.org",
            "code": "mm",
        },
    }
    assert _rows(obs, "token", "code")[0]["code"] == "38214-3"
    q = _rows(obs, "quantity", "value-quantity")[0]
    assert (q["value"], q["lo"], q["hi"], q["code"]) == (42.0, 41.95, 42.05, "mm")
    date = _rows(obs, "date", "date")[0]
    assert date["lo"] == parse_range("2024-01-01")[0]
    assert date["hi"] > parse_range("9999")[0]  # open-ended period
    assert {r["param"] for r in EXTRACTOR.extract(obs)["reference"]} >= {"subject", "patient"}


def test_precision_range_and_normalize() -> None:
    assert precision_range("100") == (100.0, 99.5, 100.5)
    assert precision_range("1e2") == (100.0, 50.0, 150.0)
    assert precision_range("nan") is None
    assert normalize_string("ÆRØ Straße") == "aero strasse"
