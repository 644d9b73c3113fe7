"""CodeSystem/$lookup, ValueSet/$expand and ValueSet/$validate-code over the artefacts of
profiles/ stored at start-up (and a ValueSet a client adds)."""

from __future__ import annotations

from typing import Any

import pytest

from kyphofhir.study import codes
from samples import create, issue_code

VS_VERTEBRA = codes.value_set("vertebra")


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "load_profiles": True}


def _params(reply: Any) -> dict[str, Any]:
    assert reply.status_code == 200, reply.content
    body = reply.json()
    assert body["resourceType"] == "Parameters"
    out: dict[str, Any] = {}
    for p in body["parameter"]:
        value = next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
        out.setdefault(p["name"], []).append(value)
    return out


def _properties(params: dict[str, Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for parts in params.get("property", []):
        named = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in parts}
        out.setdefault(named["code"], []).append(named["value"])
    return out


def test_lookup(http) -> None:
    r = http.get("/CodeSystem/$lookup", params={"system": codes.CS_ODI, "code": "odi-4-5"})
    found = _params(r)
    assert found["display"] == [codes.odi_answer_display("odi-4", 5)]
    assert found["version"] == ["0.1.0"] and found["name"] == ["Odi"]
    props = _properties(found)
    assert props["ordinal"] == [5] and props["parent"] == ["odi-4"]
    # a section: its children and notSelectable
    props = _properties(
        _params(http.get("/CodeSystem/$lookup", params={"system": codes.CS_ODI, "code": "odi-8"}))
    )
    assert props["child"] == [f"odi-8-{n}" for n in range(6)] and props["notSelectable"] == [True]
    # POST Parameters with a coding; property selects
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "coding",
                "valueCoding": {"system": codes.CS_MEASURE, "code": "kyphosis-angle"},
            },
            {"name": "property", "valueCode": "definition"},
        ],
    }
    props = _properties(_params(http.post("/CodeSystem/$lookup", json=body)))
    assert list(props) == ["definition"]
    assert props["definition"] == [codes.MEASURES["kyphosis-angle"].definition]
    # instance level
    r = http.get("/CodeSystem/timepoint/$lookup", params={"code": "month-6"})
    assert _params(r)["display"] == [codes.TIMEPOINTS["month-6"].display]
    # errors: unknown code or system → 404, missing input → 400
    r = http.get("/CodeSystem/$lookup", params={"system": codes.CS_ODI, "code": "odi-11"})
    assert r.status_code == 404 and issue_code(r) == "not-found"
    r = http.get("/CodeSystem/$lookup", params={"system": "urn:nope", "code": "x"})
    assert r.status_code == 404
    assert http.get("/CodeSystem/$lookup", params={"code": "x"}).status_code == 400
    assert http.get("/CodeSystem/$lookup", params={"system": codes.CS_ODI}).status_code == 400
    assert http.get("/CodeSystem/nope/$lookup", params={"code": "x"}).status_code == 404


def test_expand(http) -> None:
    r = http.get("/ValueSet/$expand", params={"url": VS_VERTEBRA})
    assert r.status_code == 200
    expansion = r.json()["expansion"]
    assert expansion["total"] == 17
    by_code = {c["code"]: c["display"] for c in expansion["contains"]}
    assert by_code[codes.VERTEBRAE["L1"]] == "L1 vertebra"
    assert all(c["system"] == codes.SNOMED for c in expansion["contains"])
    # a whole-system include takes the displays from the stored CodeSystem
    r = http.get("/ValueSet/timepoint/$expand")
    contains = r.json()["expansion"]["contains"]
    assert {c["code"] for c in contains} == set(codes.TIMEPOINTS)
    assert {c["display"] for c in contains} == {t.display for t in codes.TIMEPOINTS.values()}
    # filter, count, offset; POST Parameters
    r = http.get("/ValueSet/$expand", params={"url": VS_VERTEBRA, "filter": "t1"})
    assert {c["display"] for c in r.json()["expansion"]["contains"]} == {
        "T1 vertebra",
        "T10 vertebra",
        "T11 vertebra",
        "T12 vertebra",
    }
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "url", "valueUri": VS_VERTEBRA},
            {"name": "count", "valueInteger": 5},
            {"name": "offset", "valueInteger": 15},
        ],
    }
    expansion = http.post("/ValueSet/$expand", json=body).json()["expansion"]
    assert expansion["total"] == 17 and len(expansion["contains"]) == 2
    # a client's own ValueSet that imports ours and excludes a code
    create(
        http,
        {
            "resourceType": "ValueSet",
            "url": "urn:test:lumbar",
            "status": "active",
            "compose": {
                "include": [{"valueSet": [VS_VERTEBRA]}],
                "exclude": [
                    {
                        "system": codes.SNOMED,
                        "concept": [{"code": codes.VERTEBRAE[f"T{n}"]} for n in range(1, 13)],
                    }
                ],
            },
        },
    )
    r = http.get("/ValueSet/$expand", params={"url": "urn:test:lumbar"})
    assert r.json()["expansion"]["total"] == 5
    # errors
    assert http.get("/ValueSet/$expand", params={"url": "urn:nope"}).status_code == 404
    assert http.get("/ValueSet/$expand").status_code == 400
    assert http.get("/ValueSet/nope/$expand").status_code == 404
    r = http.get("/ValueSet/$expand", params={"url": VS_VERTEBRA, "count": "-1"})
    assert r.status_code == 400


def test_validate_code(http) -> None:
    def result(reply: Any) -> tuple[bool, list[Any]]:
        found = _params(reply)
        return found["result"][0], found.get("message", [])

    ok = {"url": VS_VERTEBRA, "system": codes.SNOMED, "code": codes.VERTEBRAE["L1"]}
    r = http.get("/ValueSet/$validate-code", params=ok)
    assert result(r) == (True, []) and _params(r)["display"] == ["L1 vertebra"]
    value, message = result(
        http.get("/ValueSet/$validate-code", params={**ok, "code": "421060004"})
    )
    assert value is False and "421060004" in message[0]
    value, _ = result(http.get("/ValueSet/$validate-code", params={**ok, "system": codes.LOINC}))
    assert value is False
    value, message = result(
        http.get("/ValueSet/$validate-code", params={**ok, "display": "Lumbar 1"})
    )
    assert value is False and "display" in message[0]
    # coding and codeableConcept through POST, instance level
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "url", "valueUri": codes.value_set("arm")},
            {"name": "coding", "valueCoding": {"system": codes.CS_ARM, "code": "bkp"}},
        ],
    }
    assert result(http.post("/ValueSet/$validate-code", json=body))[0] is True
    concept = {
        "coding": [
            {"system": codes.SNOMED, "code": "421060004"},
            {"system": codes.SNOMED, "code": codes.VERTEBRAE["T12"]},
        ]
    }
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "codeableConcept", "valueCodeableConcept": concept}],
    }
    assert result(http.post("/ValueSet/vertebra/$validate-code", json=body))[0] is True
    # errors
    r = http.get("/ValueSet/$validate-code", params={**ok, "url": "urn:nope"})
    assert r.status_code == 404 and issue_code(r) == "not-found"
    r = http.get("/ValueSet/$validate-code", params={"url": VS_VERTEBRA})
    assert r.status_code == 400
    r = http.post("/ValueSet/$validate-code", json={"resourceType": "Patient"})
    assert r.status_code == 400
