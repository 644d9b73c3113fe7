"""fhirpy (a third-party FHIR client) drives the server as an EHR integration would."""

from __future__ import annotations

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound


@pytest.fixture
def client(live_server: str) -> SyncFHIRClient:
    return SyncFHIRClient(live_server, extra_headers={"Accept": "application/fhir+json"})


def test_ehr_workflow_with_fhirpy(client: SyncFHIRClient) -> None:
    patient = client.resource(
        "Patient",
        identifier=[{"system": "https://kyphofhir.org/fhir/sid/study-subject", "value": "BKP-17"}],
        name=[{"family": "Schmidt", "given": ["Jürgen"]}],
        gender="male",
        birthDate="1951-07-12",
    )
    patient.save()
    assert patient["id"]
    assert patient["meta"]["versionId"] == "1"

    for value, when in ((78, "2024-01-10"), (35, "2024-01-12"), (20, "2024-04-10")):
        client.resource(
            "Observation",
            status="final",
            code={"coding": [{"system": "http://loinc.org", "code": "38214-3"}]},
            subject=patient.to_reference(),
            effectiveDateTime=when,
            valueQuantity={
                "value": value,
                "unit": "mm",
                "system": "http://unitsofmeasure.org",
                "code": "mm",
            },
        ).save()

    found = client.resources("Patient").search(name="schmidt").fetch_all()
    assert [p["id"] for p in found] == [patient["id"]]

    observations = (
        client.resources("Observation")
        .search(subject=patient.to_reference().reference, date__ge="2024-01-11")
        .fetch_all()
    )
    assert sorted(o["valueQuantity"]["value"] for o in observations) == [20, 35]
    assert client.resources("Observation").search(patient=patient["id"]).count() == 3

    patient["gender"] = "male"
    patient["telecom"] = [{"system": "phone", "value": "+49 30 1234"}]
    patient.save()
    assert patient["meta"]["versionId"] == "2"

    history = client.execute(f"Patient/{patient['id']}/_history", method="get")
    assert history["total"] == 2

    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:3b7c1a52-5d3c-4f0a-9a55-1f6b8d2c0001",
                "resource": {"resourceType": "Patient", "name": [{"family": "Tx"}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "VAS"},
                    "subject": {"reference": "urn:uuid:3b7c1a52-5d3c-4f0a-9a55-1f6b8d2c0001"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    response = client.execute("", method="post", data=bundle)
    assert response["type"] == "transaction-response"
    assert [e["response"]["status"] for e in response["entry"]] == ["201 Created", "201 Created"]

    patient.delete()
    with pytest.raises(ResourceNotFound):
        client.resources("Patient").search(_id=patient["id"]).get()


def test_fhirpy_sees_operation_outcome_errors(client: SyncFHIRClient) -> None:
    bad = client.resource("Patient", gender="robot")
    with pytest.raises(OperationOutcome) as excinfo:
        bad.save()
    assert "robot" in str(excinfo.value)
