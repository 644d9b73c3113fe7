"""Bad input: each case with its exact status and OperationOutcome code. Never a 500."""

from __future__ import annotations

import pytest

from kyphofhir.fhir.models import SERVED_TYPES
from samples import details_code, issue_code, patient


def test_malformed_json_is_400(api) -> None:
    r = api.post(
        "/Patient",
        data=b'{"resourceType": "Patient",',
        headers={"Content-Type": "application/fhir+json"},
    )
    assert r.status_code == 400
    assert issue_code(r) == "invalid"
    assert details_code(r) == "MSG_JSON_OBJECT"


def test_body_not_an_object_is_400(api) -> None:
    r = api.post("/Patient", json=[1, 2])
    assert r.status_code == 400
    assert issue_code(r) == "structure"


def test_wrong_resource_type_for_url_is_400(api) -> None:
    r = api.post("/Observation", json=patient())
    assert r.status_code == 400
    assert details_code(r) == "MSG_RESOURCE_TYPE_MISMATCH"
    assert r.json()["issue"][0]["expression"] == ["resourceType"]


@pytest.mark.parametrize(
    ("change", "expression", "code"),
    [
        ({"birthDate": "1950-02-30"}, "Patient.birthDate", "value"),
        ({"birthDate": "yesterday"}, "Patient.birthDate", "value"),
        ({"gender": "robot"}, "Patient.gender", "code-invalid"),
        ({"active": "yes"}, "Patient.active", "value"),
        ({"unknownElement": 1}, "Patient.unknownElement", "structure"),
        ({"name": [{"given": "Anna"}]}, "Patient.name[0].given", "value"),
        ({"name": [{"use": "nickname-ish", "family": "X"}]}, "Patient.name[0].use", "code-invalid"),
    ],
)
def test_invalid_content_points_at_the_element(api, change, expression, code) -> None:
    r = api.post("/Patient", json={**patient(), **change})
    assert r.status_code == 400
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    issues = body["issue"]
    assert any(expression in i.get("expression", []) for i in issues), issues
    assert any(i["code"] == code for i in issues), issues


def test_missing_required_element_is_400(api) -> None:
    r = api.post("/Observation", json={"resourceType": "Observation", "code": {"text": "x"}})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["Observation.status"]


def test_invalid_observation_quantity(api) -> None:
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "VAS"},
        "valueQuantity": {"value": "42", "comparator": "~"},
    }
    r = api.post("/Observation", json=obs)
    assert r.status_code == 400
    exprs = [e for i in r.json()["issue"] for e in i.get("expression", [])]
    assert "Observation.valueQuantity.value" in exprs
    assert "Observation.valueQuantity.comparator" in exprs


def test_bundle_stored_only_as_document_or_collection(api) -> None:
    r = api.post("/Bundle", json={"resourceType": "Bundle", "type": "transaction"})
    assert r.status_code == 422
    assert issue_code(r) == "processing"
    ok = api.post("/Bundle", json={"resourceType": "Bundle", "type": "collection"})
    assert ok.status_code == 201


def test_oversize_body_is_413(api, app) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    big = (
        b'{"resourceType":"Patient","text":{"status":"generated","div":"'
        + b"x" * (limit + 10)
        + b'"}}'
    )
    r = api.post("/Patient", data=big, headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 413
    assert issue_code(r) == "too-costly"


@pytest.mark.parametrize("content_type", ["application/fhir+xml", "application/xml", "text/plain"])
def test_unsupported_media_type_is_415(api, content_type) -> None:
    r = api.post("/Patient", data=b"<Patient/>", headers={"Content-Type": content_type})
    assert r.status_code == 415
    assert issue_code(r) == "not-supported"


@pytest.mark.parametrize(
    "accept", ["application/fhir+xml", "application/xml", "text/html", "application/fhir+json;q=0"]
)
def test_xml_accept_is_406(api, accept) -> None:
    r = api.get("/metadata", headers={"Accept": accept})
    assert r.status_code == 406
    assert issue_code(r) == "not-supported"


@pytest.mark.parametrize("fmt", ["xml", "application/fhir+xml", "turtle"])
def test_format_param_xml_is_406(api, fmt) -> None:
    r = api.get("/metadata", params={"_format": fmt})
    assert r.status_code == 406


@pytest.mark.parametrize(
    ("accept", "fmt", "expected"),
    [
        ("application/fhir+json", None, "application/fhir+json"),
        ("application/json", None, "application/json"),
        ("*/*", None, "application/fhir+json"),
        (None, "json", "application/fhir+json"),
        (None, "application/json", "application/json"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", None, "application/fhir+json"),
        ("application/fhir+json; fhirVersion=4.0", None, "application/fhir+json"),
        ("application/json, application/fhir+json;q=0.5", None, "application/json"),
        ("application/xml;q=1.0, application/fhir+json;q=0.1", None, "application/fhir+json"),
    ],
)
def test_json_negotiation(api, accept, fmt, expected) -> None:
    headers = {"Accept": accept} if accept else {}
    params = {"_format": fmt} if fmt else {}
    r = api.get("/metadata", headers=headers, params=params)
    assert r.status_code == 200
    assert r.headers["Content-Type"].split(";")[0] == expected


def test_method_not_allowed_is_405_operation_outcome(api) -> None:
    pid = api.post("/Patient", json=patient()).json()["id"]
    r = api.request("PATCH", f"/Patient/{pid}", json=[])
    assert r.status_code == 405
    assert issue_code(r) == "not-supported"
    r = api.put("/Patient", json=patient())
    assert r.status_code == 405


def test_unknown_route_is_404_operation_outcome(api) -> None:
    r = api.get("/Patient/1/_nonsense/2/3")
    assert r.status_code == 404
    assert issue_code(r) == "not-found"


@pytest.mark.parametrize("rtype", SERVED_TYPES)
def test_every_served_type_rejects_garbage_with_400(api, rtype) -> None:
    r = api.post(f"/{rtype}", json={"resourceType": rtype, "notAnElement": True})
    assert r.status_code == 400, r.content
    issues = r.json()["issue"]
    assert any(
        i["code"] == "structure" and i["expression"] == [f"{rtype}.notAnElement"] for i in issues
    ), issues


def test_unexpected_error_is_500_without_stack_trace(api, app, monkeypatch) -> None:
    from kyphofhir.services import crud

    def boom(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(crud, "read", boom)
    r = api.get("/Patient/x")
    assert r.status_code == 500
    body = r.json()
    assert body["issue"][0]["code"] == "exception"
    assert "secret internals" not in r.content.decode()
    assert r.headers["X-Request-ID"] in body["issue"][0]["diagnostics"]
