"""Create, read, vread, update, delete, history and conditional interactions over REST.

Every test runs on SQLite and PostgreSQL, over real HTTP and through the Flask test client.
"""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

from samples import details_code, issue_code, patient, vas

FHIR_JSON = "application/fhir+json"


def _id_from_location(location: str) -> str:
    m = re.search(r"/Patient/([^/]+)/_history/1$", location)
    assert m, location
    return m.group(1)


def test_create_returns_201_with_location_etag_last_modified(api) -> None:
    r = api.post("/Patient", json=patient())
    assert r.status_code == 201
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Content-Type"].startswith(FHIR_JSON)
    body = r.json()
    assert r.headers["Location"] == f"{api.base}/Patient/{body['id']}/_history/1"
    assert body["meta"]["versionId"] == "1"
    assert parsedate_to_datetime(r.headers["Last-Modified"]) is not None
    assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", body["id"])


def test_create_ignores_client_id_and_meta_version(api) -> None:
    r = api.post("/Patient", json=patient(id="client-chosen", meta={"versionId": "99"}))
    assert r.status_code == 201
    assert r.json()["id"] != "client-chosen"
    assert r.json()["meta"]["versionId"] == "1"


def test_read_and_vread(api) -> None:
    created = api.post("/Patient", json=patient()).json()
    r = api.get(f"/Patient/{created['id']}")
    assert r.status_code == 200
    assert r.headers["ETag"] == 'W/"1"'
    assert r.json() == created
    v = api.get(f"/Patient/{created['id']}/_history/1")
    assert v.status_code == 200
    assert v.json() == created


def test_read_unknown_is_404_not_found(api) -> None:
    r = api.get("/Patient/does-not-exist")
    assert r.status_code == 404
    assert issue_code(r) == "not-found"
    assert details_code(r) == "MSG_NO_EXIST"


def test_unknown_type_is_404(api) -> None:
    r = api.get("/Unicorn/1")
    assert r.status_code == 404
    assert details_code(r) == "MSG_UNKNOWN_TYPE"


def test_invalid_id_is_400(api) -> None:
    r = api.get("/Patient/" + "x" * 65)
    assert r.status_code == 400
    assert details_code(r) == "MSG_ID_INVALID"


def test_update_creates_new_version(api) -> None:
    created = api.post("/Patient", json=patient()).json()
    pid = created["id"]
    r = api.put(f"/Patient/{pid}", json={**patient(), "id": pid, "gender": "male"})
    assert r.status_code == 200
    assert r.headers["ETag"] == 'W/"2"'
    assert r.headers["Location"].endswith(f"/Patient/{pid}/_history/2")
    assert api.get(f"/Patient/{pid}").json()["gender"] == "male"
    assert api.get(f"/Patient/{pid}/_history/1").json()["gender"] == "female"


def test_update_as_create_uses_client_id(api) -> None:
    r = api.put("/Patient/study-p001", json={**patient(), "id": "study-p001"})
    assert r.status_code == 201
    assert r.headers["Location"].endswith("/Patient/study-p001/_history/1")
    assert api.get("/Patient/study-p001").status_code == 200


def test_update_id_mismatch_and_missing_id_are_400(api) -> None:
    r = api.put("/Patient/a1", json={**patient(), "id": "b2"})
    assert r.status_code == 400
    assert details_code(r) == "MSG_RESOURCE_ID_MISMATCH"
    r = api.put("/Patient/a1", json=patient())
    assert r.status_code == 400
    assert details_code(r) == "MSG_RESOURCE_ID_MISSING"


def test_if_match(api) -> None:
    pid = api.post("/Patient", json=patient()).json()["id"]
    body = {**patient(), "id": pid}
    ok = api.put(f"/Patient/{pid}", json=body, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = api.put(f"/Patient/{pid}", json=body, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert issue_code(stale) == "conflict"
    bad = api.put(f"/Patient/{pid}", json=body, headers={"If-Match": "yesterday"})
    assert bad.status_code == 400


def test_delete_then_read_is_410_and_history_keeps_versions(api) -> None:
    pid = api.post("/Patient", json=patient()).json()["id"]
    r = api.delete(f"/Patient/{pid}")
    assert r.status_code == 204
    assert "Content-Type" not in r.headers
    assert r.headers["ETag"] == 'W/"2"'
    gone = api.get(f"/Patient/{pid}")
    assert gone.status_code == 410
    assert issue_code(gone) == "deleted"
    assert api.get(f"/Patient/{pid}/_history/1").status_code == 200
    assert api.get(f"/Patient/{pid}/_history/2").status_code == 410
    history = api.get(f"/Patient/{pid}/_history").json()
    assert history["type"] == "history"
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    # deleting again, or deleting what never existed, succeeds without a new version
    assert api.delete(f"/Patient/{pid}").status_code == 204
    assert api.delete("/Patient/never-existed").status_code == 204
    assert len(api.get(f"/Patient/{pid}/_history").json()["entry"]) == 2
    # a deleted resource can be brought back by update
    back = api.put(f"/Patient/{pid}", json={**patient(), "id": pid})
    assert back.status_code == 201
    assert back.headers["ETag"] == 'W/"3"'


def test_conditional_read(api) -> None:
    created = api.post("/Patient", json=patient())
    pid = created.json()["id"]
    r = api.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304
    r = api.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"0"'})
    assert r.status_code == 200
    r = api.get(f"/Patient/{pid}", headers={"If-Modified-Since": created.headers["Last-Modified"]})
    assert r.status_code == 304
    r = api.get(f"/Patient/{pid}", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert r.status_code == 200


def test_conditional_create(api) -> None:
    headers = {"If-None-Exist": "identifier=urn:kyphofhir:test:mrn|42"}
    first = api.post("/Patient", json=patient("42"), headers=headers)
    assert first.status_code == 201
    again = api.post("/Patient", json=patient("42"), headers=headers)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    api.post("/Patient", json=patient("dup"))
    api.post("/Patient", json=patient("dup"))
    multi = api.post(
        "/Patient",
        json=patient("dup"),
        headers={"If-None-Exist": "identifier=urn:kyphofhir:test:mrn|dup"},
    )
    assert multi.status_code == 412
    bad = api.post("/Patient", json=patient(), headers={"If-None-Exist": "nonsense=1"})
    assert bad.status_code == 400
    full_form = api.post(
        "/Patient",
        json=patient("42"),
        headers={"If-None-Exist": "Patient?identifier=urn:kyphofhir:test:mrn|42"},
    )
    assert full_form.status_code == 200


def test_conditional_update(api) -> None:
    created = api.put("/Patient?identifier=urn:kyphofhir:test:mrn|7", json=patient("7"))
    assert created.status_code == 201
    pid = created.json()["id"]
    updated = api.put(
        "/Patient?identifier=urn:kyphofhir:test:mrn|7", json={**patient("7"), "gender": "other"}
    )
    assert updated.status_code == 200
    assert updated.json()["id"] == pid
    assert updated.headers["ETag"] == 'W/"2"'
    api.post("/Patient", json=patient("8"))
    api.post("/Patient", json=patient("8"))
    multi = api.put("/Patient?identifier=urn:kyphofhir:test:mrn|8", json=patient("8"))
    assert multi.status_code == 412


def test_conditional_delete(api) -> None:
    pid = api.post("/Patient", json=patient("9")).json()["id"]
    r = api.delete("/Patient?identifier=urn:kyphofhir:test:mrn|9")
    assert r.status_code == 204
    assert api.get(f"/Patient/{pid}").status_code == 410
    assert api.delete("/Patient?identifier=urn:kyphofhir:test:mrn|9").status_code == 204
    api.post("/Patient", json=patient("10"))
    api.post("/Patient", json=patient("10"))
    assert api.delete("/Patient?identifier=urn:kyphofhir:test:mrn|10").status_code == 412


def test_prefer_return(api) -> None:
    minimal = api.post("/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert minimal.headers["Location"]
    oo = api.post("/Patient", json=patient(), headers={"Prefer": "return=OperationOutcome"})
    assert oo.status_code == 201
    assert oo.json()["resourceType"] == "OperationOutcome"
    full = api.post("/Patient", json=patient(), headers={"Prefer": "return=representation"})
    assert full.json()["resourceType"] == "Patient"


def test_history_type_and_system_with_since_and_paging(api) -> None:
    ids = [api.post("/Patient", json=patient(str(i))).json()["id"] for i in range(5)]
    api.post("/Observation", json=vas(f"Patient/{ids[0]}"))
    page1 = api.get("/Patient/_history", params={"_count": "2"}).json()
    assert page1["total"] == 5
    assert len(page1["entry"]) == 2
    seen = [e["resource"]["id"] for e in page1["entry"]]
    url = next(link["url"] for link in page1["link"] if link["relation"] == "next")
    while url:
        page = api.get(url).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert sorted(seen) == sorted(ids)
    system = api.get("/_history").json()
    assert system["total"] == 6
    future = api.get("/_history", params={"_since": "2999-01-01T00:00:00Z"}).json()
    assert future.get("entry", []) == []
    assert api.get("/_history", params={"_since": "not-a-date"}).status_code == 400


def test_metadata_lists_what_works(api) -> None:
    r = api.get("/metadata")
    assert r.status_code == 200
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    rest = cs["rest"][0]
    types = {res["type"] for res in rest["resource"]}
    assert {"Patient", "Observation", "ImagingStudy", "ResearchSubject"} <= types
    assert "Medication" not in types
    patient_res = next(res for res in rest["resource"] if res["type"] == "Patient")
    params = {p["name"] for p in patient_res["searchParam"]}
    assert {"identifier", "name", "birthdate", "_id", "_lastUpdated"} <= params
    assert "_text" not in params  # not implemented, so not claimed
    for name in ("_text", "_content", "_list", "_contained"):  # and said so
        assert f"`{name}`" in rest["documentation"]
        strict = api.get("/Patient", params={name: "x"}, headers={"Prefer": "handling=strict"})
        assert strict.status_code == 400
    assert {i["code"] for i in rest["interaction"]} == {
        "transaction",
        "batch",
        "history-system",
        "search-system",
    }
    assert "xml" not in " ".join(cs["format"])


def test_request_id_header(api) -> None:
    r = api.get("/metadata", headers={"X-Request-ID": "abc123"})
    assert r.headers["X-Request-ID"] == "abc123"
    assert len(api.get("/metadata").headers["X-Request-ID"]) == 32
