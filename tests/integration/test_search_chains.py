"""Chained parameters (any depth, typed or not) and reverse chaining (_has, nested, with
forward chains inside), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from samples import create, details_code, patient, vas

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


@pytest.fixture
def world(api):
    def post(body):
        return create(api, body)

    doc = post({"resourceType": "Practitioner", "name": [{"family": "Doktor", "given": ["Eva"]}]})
    other_doc = post({"resourceType": "Practitioner", "name": [{"family": "Arzt"}]})
    p1 = post(
        {
            **patient("c1"),
            "name": [{"family": "Alpha"}],
            "generalPractitioner": [{"reference": f"Practitioner/{doc}"}],
        }
    )
    p2 = post(
        {
            **patient("c2"),
            "name": [{"family": "Beta"}],
            "generalPractitioner": [{"reference": f"Practitioner/{other_doc}"}],
        }
    )
    enc = post(
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{p1}"},
        }
    )
    o1 = {**vas(f"Patient/{p1}"), "encounter": {"reference": f"Encounter/{enc}"}}
    o1 = post(o1)
    o2 = post(
        {
            **vas(f"Patient/{p2}"),
            "code": {"coding": [{"system": "http://loinc.org", "code": "97909-6"}]},
        }
    )
    return {"doc": doc, "other_doc": other_doc, "p1": p1, "p2": p2, "enc": enc, "o1": o1, "o2": o2}


def _ids(api, path: str, **params: str) -> set[str]:
    r = api.get(path, params=params)
    assert r.status_code == 200, r.content
    return {
        e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"
    }


def test_chain_with_and_without_type(api, world) -> None:
    assert _ids(api, "/Observation", **{"subject:Patient.name": "alpha"}) == {world["o1"]}
    assert _ids(api, "/Observation", **{"subject.name": "beta"}) == {world["o2"]}
    assert _ids(api, "/Observation", **{"patient.identifier": "urn:kyphofhir:test:mrn|c1"}) == {
        world["o1"]
    }
    assert _ids(api, "/Observation", **{"subject:Patient.name": "gamma"}) == set()


def test_chain_two_levels(api, world) -> None:
    q = {"subject:Patient.general-practitioner:Practitioner.name": "doktor"}
    assert _ids(api, "/Observation", **q) == {world["o1"]}
    assert _ids(api, "/Observation", **{"subject.general-practitioner.family": "arzt"}) == {
        world["o2"]
    }


def test_chain_combined_with_plain_parameters(api, world) -> None:
    q = {"subject:Patient.name": "alpha,beta", "code": "http://loinc.org|97909-6"}
    assert _ids(api, "/Observation", **q) == {world["o2"]}


def test_reverse_chain(api, world) -> None:
    assert _ids(api, "/Patient", **{"_has:Observation:patient:code": "38214-3"}) == {world["p1"]}
    assert _ids(api, "/Patient", **{"_has:Observation:subject:code": "97909-6"}) == {world["p2"]}
    assert _ids(api, "/Patient", **{"_has:Observation:patient:code": "nothing"}) == set()


def test_nested_reverse_chain(api, world) -> None:
    q = {"_has:Patient:general-practitioner:_has:Observation:patient:code": "38214-3"}
    assert _ids(api, "/Practitioner", **q) == {world["doc"]}


def test_forward_chain_inside_reverse_chain(api, world) -> None:
    q = {"_has:Observation:patient:encounter:Encounter.class": "AMB"}
    assert _ids(api, "/Patient", **q) == {world["p1"]}
    q = {"_has:Observation:subject:subject:Patient.general-practitioner.name": "arzt"}
    assert _ids(api, "/Patient", **q) == {world["p2"]}


def test_reverse_chain_inside_forward_chain(api, world) -> None:
    q = {"subject:Patient._has:Encounter:subject:class": "AMB"}
    assert _ids(api, "/Observation", **q) == {world["o1"]}


def test_deleted_targets_and_sources_do_not_match(api, world) -> None:
    assert api.delete(f"/Patient/{world['p2']}").status_code == 204
    assert _ids(api, "/Observation", **{"subject.name": "beta"}) == set()
    assert api.delete(f"/Observation/{world['o1']}").status_code == 204
    assert _ids(api, "/Patient", **{"_has:Observation:patient:code": "38214-3"}) == set()


def test_reference_type_modifier(api, world) -> None:
    assert _ids(api, "/Observation", **{"subject:Patient": world["p1"]}) == {world["o1"]}
    assert _ids(api, "/Observation", **{"subject:Group": world["p1"]}) == set()
    r = api.get("/Observation", params={"subject:Medication": world["p1"]})
    assert r.status_code == 400


@pytest.mark.parametrize(
    "name",
    [
        "code.name",  # chain on a token
        "subject:Medication.name",  # not a possible target
        "subject:Patient.nonsense",  # unknown parameter on the target
        "_has:Observation:code:status",  # _has through a non-reference
        "_has:Observation:patient",  # incomplete
        "_has:Unicorn:patient:code",  # unknown type
        "_has:Observation:patient:nonsense",
        "subject:Patient.name:fuzzy",  # bad modifier at the end of a chain
    ],
)
def test_malformed_chains_are_400_naming_the_parameter(api, world, name) -> None:
    r = api.get("/Observation" if not name.startswith("_has") else "/Patient", params={name: "x"})
    assert r.status_code == 400, r.content
    issue = r.json()["issue"][0]
    assert name in issue.get("expression", []) or name in issue["diagnostics"]


def test_chained_code_is_reported_by_code(api, world) -> None:
    r = api.get("/Observation", params={"code.name": "x"})
    assert details_code(r) == "MSG_PARAM_CHAINED"
