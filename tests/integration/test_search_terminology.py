"""Token :in, :not-in, :below and :above against CodeSystems and ValueSets stored here."""

from __future__ import annotations

import pytest

from samples import create, vas

CS = "urn:kyphofhir:test:anatomy"
LOINC = "http://loinc.org"


@pytest.fixture
def coded(api):
    def post(body):
        return create(api, body)

    post(
        {
            "resourceType": "CodeSystem",
            "url": CS,
            "status": "active",
            "content": "complete",
            "concept": [
                {
                    "code": "spine",
                    "concept": [
                        {"code": "thoracic", "concept": [{"code": "T12"}]},
                        {"code": "lumbar", "concept": [{"code": "L1"}]},
                    ],
                }
            ],
        }
    )
    post(
        {
            "resourceType": "ValueSet",
            "url": "urn:vs:thoracic",
            "status": "active",
            "compose": {
                "include": [
                    {
                        "system": CS,
                        "filter": [{"property": "concept", "op": "is-a", "value": "thoracic"}],
                    }
                ]
            },
        }
    )
    post(
        {
            "resourceType": "ValueSet",
            "url": "urn:vs:pain",
            "status": "active",
            "compose": {
                "include": [{"system": "http://loinc.org", "concept": [{"code": "38214-3"}]}]
            },
        }
    )
    post(
        {
            "resourceType": "ValueSet",
            "url": "urn:vs:all-but-lumbar",
            "status": "active",
            "compose": {
                "include": [{"system": CS}],
                "exclude": [{"system": CS, "concept": [{"code": "lumbar"}, {"code": "L1"}]}],
            },
        }
    )

    def obs(system, code):
        return post({**vas("Patient/x"), "code": {"coding": [{"system": system, "code": code}]}})

    return {
        "T12": obs(CS, "T12"),
        "L1": obs(CS, "L1"),
        "lumbar": obs(CS, "lumbar"),
        "pain": obs("http://loinc.org", "38214-3"),
    }


def _ids(api, **params: str) -> set[str]:
    r = api.get("/Observation", params=params)
    assert r.status_code == 200, r.content
    return {
        e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"
    }


def test_in_and_not_in(api, coded) -> None:
    assert _ids(api, **{"code:in": "urn:vs:thoracic"}) == {coded["T12"]}
    either = _ids(api, **{"code:in": "urn:vs:pain,urn:vs:thoracic"})
    assert either == {coded["T12"], coded["pain"]}
    assert _ids(api, **{"code:in": "urn:vs:all-but-lumbar"}) == {coded["T12"]}
    assert _ids(api, **{"code:not-in": "urn:vs:thoracic"}) == {
        coded["L1"],
        coded["lumbar"],
        coded["pain"],
    }


def test_below_and_above(api, coded) -> None:
    assert _ids(api, **{"code:below": f"{CS}|lumbar"}) == {coded["L1"], coded["lumbar"]}
    assert _ids(api, **{"code:below": f"{CS}|spine"}) == {
        coded["L1"],
        coded["lumbar"],
        coded["T12"],
    }
    assert _ids(api, **{"code:above": f"{CS}|L1"}) == {coded["L1"], coded["lumbar"]}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("code:in", "urn:vs:unknown"),
        ("code:below", "urn:unknown|x"),
        ("code:below", f"{CS}|C7"),
        ("code:above", "lumbar"),
    ],
)
def test_unknown_terminology_is_400(api, coded, name, value) -> None:
    r = api.get("/Observation", params={name: value})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == [name]
