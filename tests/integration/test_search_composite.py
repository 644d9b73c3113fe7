"""Composite parameters: code-value-quantity and friends, with '$' separators."""

from __future__ import annotations

import pytest

from samples import vas

LOINC = "http://loinc.org"


@pytest.fixture
def obs(api):
    def post(body):
        r = api.post("/Observation", json=body)
        assert r.status_code == 201, r.content
        return r.json()["id"]

    pain = post(vas("Patient/x", 42, "2024-03-05"))
    odi = post(
        {
            **vas("Patient/x", 30, "2024-06-01"),
            "code": {"coding": [{"system": LOINC, "code": "97909-6"}]},
            "valueQuantity": {
                "value": 30,
                "unit": "%",
                "system": "http://unitsofmeasure.org",
                "code": "%",
            },
        }
    )
    panel = post(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "97908-8"}]},
            "effectiveDateTime": "2024-06-01",
            "component": [
                {
                    "code": {
                        "coding": [
                            {"system": "https://kyphofhir.org/fhir/CodeSystem/odi", "code": "odi-1"}
                        ]
                    },
                    "valueQuantity": {"value": 3},
                },
                {
                    "code": {
                        "coding": [
                            {"system": "https://kyphofhir.org/fhir/CodeSystem/odi", "code": "odi-2"}
                        ]
                    },
                    "valueCodeableConcept": {
                        "coding": [
                            {
                                "system": "https://kyphofhir.org/fhir/CodeSystem/odi",
                                "code": "odi-2-4",
                            }
                        ]
                    },
                },
            ],
        }
    )
    string_obs = vas("Patient/x")
    del string_obs["valueQuantity"]
    text = post({**string_obs, "valueString": "Schmerz stark"})
    return {"pain": pain, "odi": odi, "panel": panel, "text": text}


def _ids(api, **params: str) -> set[str]:
    r = api.get("/Observation", params=params)
    assert r.status_code == 200, r.content
    return {
        e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"
    }


def test_code_value_quantity(api, obs) -> None:
    assert _ids(api, **{"code-value-quantity": f"{LOINC}|38214-3$gt40"}) == {obs["pain"]}
    assert _ids(api, **{"code-value-quantity": f"{LOINC}|38214-3$lt40"}) == set()
    assert _ids(api, **{"code-value-quantity": "38214-3$42|http://unitsofmeasure.org|mm"}) == {
        obs["pain"]
    }
    assert _ids(api, **{"code-value-quantity": "97909-6$ge30,38214-3$ge30"}) == {
        obs["pain"],
        obs["odi"],
    }
    # the value must belong to the same code: 30 is the ODI's, not the VAS's
    assert _ids(api, **{"code-value-quantity": "38214-3$30"}) == set()


def test_component_and_combo(api, obs) -> None:
    assert _ids(api, **{"component-code-value-quantity": "odi-1$3"}) == {obs["panel"]}
    assert _ids(api, **{"component-code-value-quantity": "odi-2$3"}) == set()
    assert _ids(api, **{"component-code-value-concept": "odi-2$odi-2-4"}) == {obs["panel"]}
    assert _ids(api, **{"combo-code-value-quantity": "odi-1$3,38214-3$42"}) == {
        obs["panel"],
        obs["pain"],
    }


def test_code_value_string_and_date(api, obs) -> None:
    assert _ids(api, **{"code-value-string": "38214-3$schmerz"}) == {obs["text"]}
    # code-value-date uses value[x] dates; none stored: nothing matches
    assert _ids(api, **{"code-value-date": "38214-3$ge2024"}) == set()


@pytest.mark.parametrize("value", ["38214-3", "38214-3$abc", "38214-3$1$2", "$"])
def test_malformed_composite_is_400(api, obs, value) -> None:
    r = api.get("/Observation", params={"code-value-quantity": value})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["code-value-quantity"]
