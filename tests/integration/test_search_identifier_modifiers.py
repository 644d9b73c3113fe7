"""Token ``:of-type`` (Identifier.type + value) and reference ``:identifier``
(Reference.identifier), on both databases."""

from __future__ import annotations

import pytest

from samples import create, details_code, vas

V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
MRN = "urn:kyphofhir:test:mrn"


def _ids(api, path: str, **params: str) -> set[str]:
    r = api.get(path, params=params)
    assert r.status_code == 200, r.content
    return {e["resource"]["id"] for e in r.json().get("entry", [])}


@pytest.fixture
def people(api):
    mr = create(
        api,
        {
            "resourceType": "Patient",
            "identifier": [
                {
                    "type": {"coding": [{"system": V2, "code": "MR"}], "text": "Hospital MRN"},
                    "system": MRN,
                    "value": "446053",
                },
                {"type": {"coding": [{"system": V2, "code": "SS"}]}, "value": "123-45-6789"},
            ],
        },
    )
    # the same value under another type must not match an MR search
    other = create(
        api,
        {
            "resourceType": "Patient",
            "identifier": [
                {"type": {"coding": [{"system": V2, "code": "DL"}]}, "value": "446053"},
                {"system": MRN, "value": "a|b"},
            ],
        },
    )
    untyped = create(
        api, {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "446053"}]}
    )
    return {"mr": mr, "other": other, "untyped": untyped}


def test_of_type_matches_type_and_value(api, people) -> None:
    assert _ids(api, "/Patient", **{"identifier:of-type": f"{V2}|MR|446053"}) == {people["mr"]}
    assert _ids(api, "/Patient", **{"identifier:of-type": f"{V2}|DL|446053"}) == {people["other"]}
    assert _ids(api, "/Patient", **{"identifier:of-type": f"{V2}|MR|446054"}) == set()
    assert _ids(api, "/Patient", **{"identifier:of-type": "urn:other|MR|446053"}) == set()
    # OR over values
    both = f"{V2}|MR|446053,{V2}|SS|123-45-6789"
    assert _ids(api, "/Patient", **{"identifier:of-type": both}) == {people["mr"]}


def test_of_type_rows_do_not_leak_into_plain_identifier_search(api, people) -> None:
    # "MR|446053" is the derived row's code: a plain search must not find it
    assert _ids(api, "/Patient", identifier="MR|446053") == set()
    assert _ids(api, "/Patient", identifier=f"{V2}|MR") == set()
    assert _ids(api, "/Patient", identifier="446053") == {
        people["mr"],
        people["other"],
        people["untyped"],
    }
    # _sort on identifier and :missing see only the real identifiers
    r = api.get("/Patient", params={"identifier:missing": "false", "_count": "50"})
    assert {e["resource"]["id"] for e in r.json()["entry"]} == set(people.values())


def test_of_type_escaped_value(api, people) -> None:
    r = api.put(
        f"/Patient/{people['other']}",
        json={
            "resourceType": "Patient",
            "id": people["other"],
            "identifier": [{"type": {"coding": [{"system": V2, "code": "MR"}]}, "value": "x|y"}],
        },
    )
    assert r.status_code == 200, r.content
    assert _ids(api, "/Patient", **{"identifier:of-type": f"{V2}|MR|x\\|y"}) == {people["other"]}
    # the update replaced the old DL row
    assert _ids(api, "/Patient", **{"identifier:of-type": f"{V2}|DL|446053"}) == set()


@pytest.mark.parametrize("value", ["MR|446053", f"{V2}|MR", f"{V2}||446053", f"{V2}|MR|", "446053"])
def test_of_type_needs_three_parts(api, people, value) -> None:
    r = api.get("/Patient", params={"identifier:of-type": value})
    assert r.status_code == 400, r.content
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "identifier:of-type" in r.json()["issue"][0]["expression"]


def test_reference_identifier_modifier(api) -> None:
    logical = vas("Patient/none", 30)
    del logical["subject"]
    logical["subject"] = {"identifier": {"system": MRN, "value": "777"}, "display": "Ext."}
    o1 = create(api, {**logical})
    pid = create(api, {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "777"}]})
    o2 = create(api, vas(f"Patient/{pid}", 40))
    both = create(
        api,
        {
            **vas(f"Patient/{pid}", 50),
            "subject": {
                "reference": f"Patient/{pid}",
                "identifier": {"system": MRN, "value": "888"},
            },
        },
    )
    assert _ids(api, "/Observation", **{"subject:identifier": f"{MRN}|777"}) == {o1}
    assert _ids(api, "/Observation", **{"subject:identifier": "888"}) == {both}
    assert _ids(api, "/Observation", **{"subject:identifier": f"{MRN}|"}) == {o1, both}
    assert _ids(api, "/Observation", **{"subject:identifier": "urn:x|777"}) == set()
    # the literal reference still works and is unaffected by the identifier rows
    assert _ids(api, "/Observation", subject=f"Patient/{pid}") == {o2, both}
    assert _ids(api, "/Observation", subject="777") == set()
    # a chain on the identifier of the referenced resource is the other way to ask
    assert _ids(api, "/Observation", **{"subject:Patient.identifier": f"{MRN}|777"}) == {
        o2,
        both,
    }


def test_unknown_modifiers_still_rejected(api) -> None:
    r = api.get("/Observation", params={"subject:of-type": "a|b|c"})
    assert r.status_code == 400
    assert details_code(r) == "MSG_PARAM_MODIFIER_INVALID"
    r = api.get("/Observation", params={"date:identifier": "x"})
    assert r.status_code == 400
    assert details_code(r) == "MSG_PARAM_MODIFIER_INVALID"
