"""Realistic request bodies: study Patients and VAS back-pain Observations.

The Observation mirrors what the kyphoplasty outcome studies post (a 0-100 mm visual
analogue scale score with LOINC 38214-3, a subject reference, study tag, identifier and
a clinician note), about 1 kB of JSON, so per-resource costs (validation, index
extraction, row sizes) are representative rather than those of a toy document.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

JsonObject = dict[str, Any]

STUDY_SYSTEM = "https://kyphofhir.example.org/fhir/NamingSystem/vas-observation"
STUDY_TAG_SYSTEM = "https://kyphofhir.example.org/fhir/CodeSystem/study"
_FIRST_NAMES = ("Anna", "Berta", "Clara", "Dora", "Emil", "Franz", "Greta", "Hans", "Ida")
_FAMILY_NAMES = ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner")
_NOTES = (
    "Patient reports persistent thoracolumbar pain when standing; mobilised with walker today.",
    "Pain markedly reduced after kyphoplasty at L1; sleeping through the night, no analgesics.",
    "Moderate back pain on exertion, radiating to the flank; paracetamol 1 g as needed, stable.",
)
_EPOCH = datetime(2024, 1, 8, 8, 0, tzinfo=UTC)


def patient(rng: random.Random, index: int) -> JsonObject:
    """A study participant with identifier, name, gender and birth date."""
    return {
        "resourceType": "Patient",
        "meta": {"tag": [{"system": STUDY_TAG_SYSTEM, "code": "kypho-bench"}]},
        "identifier": [
            {"system": "https://kyphofhir.example.org/fhir/NamingSystem/pid", "value": f"P{index}"}
        ],
        "active": True,
        "name": [{"family": rng.choice(_FAMILY_NAMES), "given": [rng.choice(_FIRST_NAMES)]}],
        "gender": rng.choice(("female", "male")),
        "birthDate": f"{rng.randint(1930, 1965)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    }


def observation(rng: random.Random, patient_id: str, index: int) -> JsonObject:
    """A final VAS pain score (mm) for ``Patient/patient_id``; ``index`` keeps it unique."""
    when = _EPOCH + timedelta(days=rng.randint(0, 400), minutes=rng.randint(0, 600))
    return {
        "resourceType": "Observation",
        "meta": {
            "tag": [{"system": STUDY_TAG_SYSTEM, "code": "kypho-bench", "display": "Benchmark"}]
        },
        "identifier": [{"system": STUDY_SYSTEM, "value": f"vas-{index:07d}"}],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "survey",
                        "display": "Survey",
                    }
                ]
            }
        ],
        "code": {
            "coding": [
                {
                    "system": "http://loinc.org",
                    "code": "38214-3",
                    "display": "Pain severity [Score] Visual analog score",
                }
            ],
            "text": "VAS back pain",
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when.isoformat(timespec="seconds"),
        "issued": (when + timedelta(minutes=5)).isoformat(timespec="milliseconds"),
        "valueQuantity": {
            "value": rng.randint(0, 100),
            "unit": "mm",
            "system": "http://unitsofmeasure.org",
            "code": "mm",
        },
        "bodySite": {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "122496007", "display": "Lumbar spine"}
            ]
        },
        "note": [{"text": rng.choice(_NOTES)}],
    }


def transaction(observations: list[JsonObject]) -> JsonObject:
    """A transaction Bundle POSTing every Observation (``urn:uuid`` full URLs)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": obs,
                "request": {"method": "POST", "url": "Observation"},
            }
            for obs in observations
        ],
    }


def encode(doc: JsonObject) -> bytes:
    """The exact bytes sent to the server and written by the raw baseline."""
    return orjson.dumps(doc)
