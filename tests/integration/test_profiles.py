"""Profile validation over HTTP: on create, update, transaction and batch, and $validate;
the study's SearchParameters; the CapabilityStatement."""

from __future__ import annotations

from typing import Any

from kyphofhir.study import codes
from profile_samples import GOOD, SD, good
from samples import create, issue_code


def _vas(value: float = 72) -> dict[str, Any]:
    body = good("vas-observation")
    body["valueQuantity"]["value"] = value
    return body


def _issue(reply: Any, diagnostics_prefix: str) -> dict[str, Any]:
    body = reply.json()
    assert body["resourceType"] == "OperationOutcome", body
    found = [i for i in body["issue"] if i.get("diagnostics", "").startswith(diagnostics_prefix)]
    assert found, body["issue"]
    return found[0]


def test_every_profile_accepts_its_example(http) -> None:
    for name in sorted(GOOD):
        r = http.post(f"/{GOOD[name]['resourceType']}", json=good(name))
        assert r.status_code == 201, (name, r.content)


BROKEN = [
    (lambda r: r.pop("encounter"), "vas-observation: min:", "required", "Observation.encounter"),
    (
        lambda r: r["valueQuantity"].update(value=140),
        "vas-observation: vas-1:",
        "invariant",
        "Observation.valueQuantity",
    ),
    (
        lambda r: r.update(valueQuantity=codes.quantity(7.2, "cm")),
        "vas-observation: pattern:",
        "value",
        "Observation.valueQuantity",
    ),
]


def test_create_of_a_broken_resource_is_422(api) -> None:
    for change, prefix, code, expression in BROKEN:
        body = _vas()
        change(body)
        r = api.post("/Observation", json=body)
        assert r.status_code == 422, r.content
        issue = _issue(r, prefix)
        assert issue["code"] == code and issue["expression"] == [expression]
        assert issue["severity"] == "error"
    assert api.get("/Observation", params={"_summary": "count"}).json()["total"] == 0


def test_update_is_validated(http) -> None:
    rid = create(http, _vas())
    bad = {**_vas(101), "id": rid}
    r = http.put(f"/Observation/{rid}", json=bad)
    assert r.status_code == 422
    assert _issue(r, "vas-observation: vas-1:")["expression"] == ["Observation.valueQuantity"]
    r = http.put(f"/Observation/{rid}", json={**_vas(15), "id": rid})
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"


def test_several_problems_are_all_listed(http) -> None:
    body = good("vertebral-fracture-condition")
    body.pop("extension")
    body["bodySite"] = [{"text": "neck"}]
    r = http.post("/Condition", json=body)
    assert r.status_code == 422
    rules = {i["diagnostics"].split(": ")[1] for i in r.json()["issue"]}
    assert rules == {"min", "binding"}


def test_transaction_with_a_broken_entry_stores_nothing(http) -> None:
    patient = good("kyphofhir-patient")
    vas = _vas(140)
    vas["subject"] = {"reference": "urn:uuid:8f0b5a8e-7a8e-4a59-9a29-0f3f3f0c0001"}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:8f0b5a8e-7a8e-4a59-9a29-0f3f3f0c0001",
                "resource": patient,
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": vas, "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    r = http.post("", json=bundle)
    assert r.status_code == 422, r.content
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1]", "Observation.valueQuantity"]
    assert "vas-observation: vas-1:" in issue["diagnostics"]
    assert http.get("/Patient", params={"_summary": "count"}).json()["total"] == 0
    vas["valueQuantity"]["value"] = 40
    assert http.post("", json=bundle).status_code == 200


def test_batch_reports_the_broken_entry_and_keeps_the_good_one(http) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": _vas(140), "request": {"method": "POST", "url": "Observation"}},
            {"resource": _vas(20), "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    r = http.post("", json=bundle)
    assert r.status_code == 200
    first, second = r.json()["entry"]
    assert first["response"]["status"].startswith("422")
    outcome = first["response"]["outcome"]
    assert outcome["issue"][0]["expression"] == ["Observation.valueQuantity"]
    assert second["response"]["status"].startswith("201")


def test_unknown_profiles(http) -> None:
    own = {**_vas(), "meta": {"profile": [SD("vas-observatoin")]}}
    r = http.post("/Observation", json=own)
    assert r.status_code == 422 and issue_code(r) == "not-supported"
    assert r.json()["issue"][0]["expression"] == ["Observation.meta.profile"]
    foreign = {**_vas(), "meta": {"profile": ["http://fhir.example.org/StructureDefinition/vas"]}}
    assert http.post("/Observation", json=foreign).status_code == 201
    r = http.post("/Observation/$validate", json=foreign)
    assert r.status_code == 200
    assert [i["severity"] for i in r.json()["issue"]] == ["warning"]
    core = {**_vas(), "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/Observation"]}}
    r = http.post("/Observation/$validate", json=core)
    assert r.json()["issue"][0]["severity"] == "information"


def test_validate_operation(http) -> None:
    r = http.post("/Observation/$validate", json=_vas())
    assert r.status_code == 200
    assert [i["severity"] for i in r.json()["issue"]] == ["information"]
    # the broken resource is not stored, the outcome lists the problem with 200
    r = http.post("/Observation/$validate", json=_vas(140))
    assert r.status_code == 200
    assert _issue(r, "vas-observation: vas-1:")["expression"] == ["Observation.valueQuantity"]
    assert http.get("/Observation", params={"_summary": "count"}).json()["total"] == 0
    # a Parameters body, and a profile the resource does not claim
    plain = _vas(140)
    plain.pop("meta")
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": plain},
            {"name": "profile", "valueUri": SD("vas-observation")},
        ],
    }
    r = http.post("/Observation/$validate", json=params)
    assert _issue(r, "vas-observation: vas-1:")["severity"] == "error"
    r = http.post("/Observation/$validate", json=plain, params={"profile": SD("vas-observation")})
    assert _issue(r, "vas-observation: vas-1:")
    # the R4 structure is part of it
    r = http.post("/Observation/$validate", json={**_vas(), "status": "done"})
    assert r.status_code == 200 and r.json()["issue"][0]["severity"] == "error"
    # a nominated profile the server does not know is an error (R4 $validate)
    r = http.post("/Observation/$validate", json=plain, params={"profile": SD("nope")})
    assert r.status_code == 400 and issue_code(r) == "not-supported"
    # wrong type, no resource
    assert http.post("/Patient/$validate", json=_vas()).status_code == 400
    assert http.post("/Observation/$validate").status_code == 400


def test_validate_operation_on_an_instance(http) -> None:
    rid = create(http, _vas())
    r = http.get(f"/Observation/{rid}/$validate")
    assert r.status_code == 200 and r.json()["issue"][0]["severity"] == "information"
    r = http.post(f"/Observation/{rid}/$validate", json={**_vas(-3), "id": rid})
    assert _issue(r, "vas-observation: vas-1:")
    r = http.post(
        f"/Observation/{rid}/$validate",
        json={"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "delete"}]},
    )
    assert r.json()["issue"][0]["severity"] == "information"
    assert http.get("/Observation/nope/$validate").status_code == 404


def test_study_search_parameters(http) -> None:
    bkp = create(http, good("kyphofhir-patient"))
    other = create(http, {**good("kyphofhir-patient"), "identifier": [{"value": "CON-1"}]})
    for patient, arm in ((bkp, "bkp"), (other, "conservative")):
        subject = good("study-subject")
        subject["individual"] = {"reference": f"Patient/{patient}"}
        subject["assignedArm"] = arm
        create(http, subject)
    l1 = good("vertebral-height-observation")
    l1["subject"] = {"reference": f"Patient/{bkp}"}
    create(http, l1)
    t12 = good("vertebral-height-observation")
    t12["bodySite"] = codes.vertebra("T12")
    create(http, t12)

    def ids(path: str, **params: str) -> list[str]:
        r = http.get(path, params={**params, "_elements": "id"})
        assert r.status_code == 200, r.content
        assert not [e for e in r.json().get("entry", []) if e["search"]["mode"] == "outcome"]
        return [e["resource"]["id"] for e in r.json().get("entry", [])]

    assert len(ids("/ResearchSubject", arm="bkp")) == 1
    assert ids("/Patient", **{"_has:ResearchSubject:individual:arm": "bkp"}) == [bkp]
    found = ids("/Observation", **{"body-site": f"{codes.SNOMED}|{codes.VERTEBRAE['L1']}"})
    assert len(found) == 1
    found = ids(
        "/Observation",
        **{"subject:Patient._has:ResearchSubject:individual:arm": "bkp", "body-site": "66794005"},
    )
    assert len(found) == 1


def test_capability_statement_lists_operations_and_profiles(http) -> None:
    cs = http.get("/metadata").json()
    by_type = {r["type"]: r for r in cs["rest"][0]["resource"]}
    observation = by_type["Observation"]
    assert SD("vas-observation") in observation["supportedProfile"]
    assert {"validate"} <= {o["name"] for o in observation["operation"]}
    assert {o["name"] for o in by_type["ValueSet"]["operation"]} >= {"expand", "validate-code"}
    assert "lookup" in {o["name"] for o in by_type["CodeSystem"]["operation"]}
    assert "everything" in {o["name"] for o in by_type["Patient"]["operation"]}
    assert {p["name"] for p in by_type["ResearchSubject"]["searchParam"]} >= {"arm"}
