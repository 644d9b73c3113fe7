"""Sample resources and assertion helpers shared by the tests (no fixture magic)."""

from __future__ import annotations

from typing import Any


def patient(mrn: str = "1", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:kyphofhir:test:mrn", "value": mrn}],
        "name": [{"family": "Müller", "given": ["Anna"]}],
        "gender": "female",
        "birthDate": "1950-03-04",
        **extra,
    }


def vas(subject: str, value: float = 42, when: str = "2024-03-05T10:00:00Z") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "survey",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "38214-3"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": "mm",
            "system": "http://unitsofmeasure.org",
            "code": "mm",
        },
    }


def issue_code(reply: Any) -> str:
    body = reply.json()
    assert body["resourceType"] == "OperationOutcome", body
    return str(body["issue"][0]["code"])


def details_code(reply: Any) -> str | None:
    issue = reply.json()["issue"][0]
    codings = issue.get("details", {}).get("coding", [])
    return codings[0]["code"] if codings else None


def create(api: Any, body: dict[str, Any]) -> str:
    """POST ``body`` to its type, assert 201, return the new id."""
    r = api.post(f"/{body['resourceType']}", json=body)
    assert r.status_code == 201, r.content
    return str(r.json()["id"])


def all_pages(api: Any, first: dict[str, Any]) -> list[dict[str, Any]]:
    """Every entry of a searchset, following ``next`` links from the first page."""
    entries: list[dict[str, Any]] = []
    page = first
    while True:
        entries += page.get("entry", [])
        nxt = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
        if nxt is None:
            return entries
        page = api.get(nxt).json()
