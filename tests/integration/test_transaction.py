"""Transaction and batch Bundles: order, urn:uuid and conditional references, atomicity."""

from __future__ import annotations

from typing import Any

import pytest

from samples import details_code, patient, vas


def _entry(
    resource: dict[str, Any] | None,
    method: str,
    url: str,
    full_url: str | None = None,
    **request: Any,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        entry["resource"] = resource
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _count(api, rtype: str) -> int:
    return int(api.get(f"/{rtype}", params={"_summary": "count"}).json()["total"])


def test_transaction_resolves_urn_uuid_references(api) -> None:
    bundle = _bundle(
        "transaction",
        _entry(vas("urn:uuid:7f1c2a4e-0000-4000-8000-000000000001"), "POST", "Observation"),
        _entry(patient("t1"), "POST", "Patient", "urn:uuid:7f1c2a4e-0000-4000-8000-000000000001"),
    )
    r = api.post("", json=bundle)
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["type"] == "transaction-response"
    obs_entry, pat_entry = body["entry"]
    assert obs_entry["response"]["status"] == "201 Created"
    assert pat_entry["response"]["etag"] == 'W/"1"'
    pid = pat_entry["resource"]["id"]
    assert obs_entry["resource"]["subject"]["reference"] == f"Patient/{pid}"
    assert pat_entry["response"]["location"].endswith(f"/Patient/{pid}/_history/1")
    found = api.get("/Observation", params={"subject": f"Patient/{pid}"}).json()
    assert found["total"] == 1


def test_transaction_conditional_create_and_conditional_reference(api) -> None:
    existing = api.post("/Patient", json=patient("cond-1")).json()
    bundle = _bundle(
        "transaction",
        _entry(
            patient("cond-1"),
            "POST",
            "Patient",
            "urn:uuid:p",
            ifNoneExist="identifier=urn:kyphofhir:test:mrn|cond-1",
        ),
        _entry(vas("urn:uuid:p"), "POST", "Observation"),
        _entry(vas("Patient?identifier=urn:kyphofhir:test:mrn|cond-1"), "POST", "Observation"),
    )
    r = api.post("", json=bundle)
    assert r.status_code == 200, r.content
    entries = r.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK"
    for e in entries[1:]:
        assert e["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"
    assert _count(api, "Patient") == 1


def test_transaction_processing_order_delete_post_put_get(api) -> None:
    old = api.post("/Patient", json=patient("old")).json()
    bundle = _bundle(
        "transaction",
        _entry(
            None, "GET", f"Patient/{old['id']}"
        ),  # GET runs last: sees the update? no, the delete
        _entry({**patient("new"), "id": "tx-put"}, "PUT", "Patient/tx-put"),
        _entry(patient("posted"), "POST", "Patient"),
        _entry(None, "DELETE", f"Patient/{old['id']}"),
    )
    r = api.post("", json=bundle)
    # the GET of a resource deleted earlier in the same transaction fails the transaction
    assert r.status_code == 410
    assert api.get(f"/Patient/{old['id']}").status_code == 200
    assert api.get("/Patient/tx-put").status_code == 404

    bundle["entry"][0] = _entry(None, "GET", "Patient?identifier=urn:kyphofhir:test:mrn|new")
    r = api.post("", json=bundle)
    assert r.status_code == 200, r.content
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses == ["200 OK", "201 Created", "201 Created", "204 No Content"]
    search = r.json()["entry"][0]["resource"]
    assert search["type"] == "searchset"
    assert search["total"] == 1  # the PUT ran before the GET


def test_failed_transaction_writes_nothing(api) -> None:
    before = _count(api, "Patient")
    bundle = _bundle(
        "transaction",
        _entry(patient("a"), "POST", "Patient", "urn:uuid:a"),
        _entry(vas("urn:uuid:a"), "POST", "Observation"),
        _entry({**patient("b"), "gender": "robot"}, "POST", "Patient"),
    )
    r = api.post("", json=bundle)
    assert r.status_code == 400
    issue = r.json()["issue"][0]
    assert issue["expression"][0] == "Bundle.entry[2]"
    assert _count(api, "Patient") == before
    assert _count(api, "Observation") == 0
    assert api.get("/_history").json().get("total", 0) == 0


def test_failed_transaction_after_updates_rolls_back_updates(api) -> None:
    pid = api.post("/Patient", json=patient("keep")).json()["id"]
    bundle = _bundle(
        "transaction",
        _entry({**patient("keep"), "id": pid, "gender": "male"}, "PUT", f"Patient/{pid}"),
        _entry({**patient("x"), "id": "other"}, "PUT", "Patient/other", ifMatch='W/"5"'),
    )
    r = api.post("", json=bundle)
    assert r.status_code == 412
    current = api.get(f"/Patient/{pid}").json()
    assert current["gender"] == "female"
    assert current["meta"]["versionId"] == "1"


@pytest.mark.parametrize(
    ("reference", "status"),
    [("urn:uuid:nowhere", 404), ("Patient?identifier=urn:kyphofhir:test:mrn|none", 412)],
)
def test_unresolvable_references_fail_the_transaction(api, reference, status) -> None:
    r = api.post("", json=_bundle("transaction", _entry(vas(reference), "POST", "Observation")))
    assert r.status_code == status
    assert _count(api, "Observation") == 0


def test_duplicate_resource_in_transaction_is_400(api) -> None:
    bundle = _bundle(
        "transaction",
        _entry({**patient(), "id": "dup"}, "PUT", "Patient/dup"),
        _entry({**patient(), "id": "dup"}, "PUT", "Patient/dup"),
    )
    r = api.post("", json=bundle)
    assert r.status_code == 400
    assert details_code(r) == "MSG_TRANSACTION_DUPLICATE_ID"


def test_batch_entries_succeed_or_fail_independently(api) -> None:
    bundle = _bundle(
        "batch",
        _entry(patient("ok"), "POST", "Patient"),
        _entry({**patient(), "gender": "robot"}, "POST", "Patient"),
        _entry(None, "GET", "Patient/missing"),
        _entry({**patient(), "id": "b1"}, "PUT", "Patient/b1"),
    )
    r = api.post("", json=bundle)
    assert r.status_code == 200
    body = r.json()
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses[0] == "201 Created"
    assert statuses[1].startswith("400")
    assert body["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert statuses[2].startswith("404")
    assert statuses[3] == "201 Created"
    assert _count(api, "Patient") == 2


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Patient"},
        {"resourceType": "Bundle", "type": "collection"},
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": {"resourceType": "Patient"}}],
        },
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "FLY", "url": "Patient"}}],
        },
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "POST", "url": "../etc"}}],
        },
    ],
)
def test_malformed_bundles_are_400(api, body) -> None:
    r = api.post("", json=body)
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"


def test_too_many_entries_is_413(api, app) -> None:
    svc = app.extensions["kyphofhir"]
    limit = svc.settings.max_bundle_entries
    entries = [_entry(patient(str(i)), "POST", "Patient") for i in range(limit + 1)]
    r = api.post("", json=_bundle("batch", *entries))
    assert r.status_code == 413
