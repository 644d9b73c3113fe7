"""Conforming examples of every kyphofhir profile, for the validation tests."""

from __future__ import annotations

import copy
from typing import Any

from kyphofhir.study import codes

SD = codes.structure_definition
CATEGORY = codes.OBSERVATION_CATEGORY


def _meta(name: str) -> dict[str, Any]:
    return {"profile": [SD(name)]}


def cc(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _observation(name: str, code: dict[str, Any], value: dict[str, Any], cat: str) -> dict:
    return {
        "resourceType": "Observation",
        "meta": _meta(name),
        "status": "final",
        "category": [cc(CATEGORY, cat)],
        "code": code,
        "subject": {"reference": "Patient/p1"},
        "encounter": {"reference": "Encounter/v1"},
        "effectiveDateTime": "2024-03-05",
        "valueQuantity": value,
    }


def _radiographic(name: str, code: dict[str, Any], value: dict[str, Any]) -> dict:
    out = _observation(name, code, value, "imaging")
    out["bodySite"] = codes.vertebra("L1")
    out["focus"] = [{"reference": "Condition/f1"}]
    return out


GOOD: dict[str, dict[str, Any]] = {
    "kyphofhir-patient": {
        "resourceType": "Patient",
        "meta": _meta("kyphofhir-patient"),
        "identifier": [{"system": codes.SID_STUDY_SUBJECT, "value": "BKP-001"}],
        "gender": "female",
    },
    "myeloma-condition": {
        "resourceType": "Condition",
        "meta": _meta("myeloma-condition"),
        "code": {"coding": [codes.MYELOMA, codes.coding(codes.ICD10, "C90.0")]},
        "subject": {"reference": "Patient/p1"},
    },
    "vertebral-fracture-condition": {
        "resourceType": "Condition",
        "meta": _meta("vertebral-fracture-condition"),
        "extension": [{"url": codes.EXT_DUE_TO, "valueReference": {"reference": "Condition/m1"}}],
        "code": cc(codes.SNOMED, "268029009"),
        "bodySite": [codes.vertebra("T12")],
        "subject": {"reference": "Patient/p1"},
    },
    "kyphoplasty-procedure": {
        "resourceType": "Procedure",
        "meta": _meta("kyphoplasty-procedure"),
        "status": "completed",
        "code": {
            "coding": [codes.coding(codes.CS_TREATMENT, "bkp"), codes.coding(codes.CPT, "22513")]
        },
        "subject": {"reference": "Patient/p1"},
        "performedDateTime": "2024-03-01",
        "bodySite": [codes.vertebra("T12"), codes.vertebra("L1")],
        "reasonReference": [{"reference": "Condition/f1"}, {"reference": "Condition/f2"}],
    },
    "study-visit-encounter": {
        "resourceType": "Encounter",
        "meta": _meta("study-visit-encounter"),
        "status": "finished",
        "class": codes.ENCOUNTER_CLASS,
        "type": [{"coding": [codes.coding(codes.CS_TIMEPOINT, "month-6"), codes.POST_OPERATIVE]}],
        "subject": {"reference": "Patient/p1"},
    },
    "vas-observation": _observation(
        "vas-observation",
        {"coding": [codes.VAS, codes.VAS_SNOMED]},
        codes.quantity(72, "mm"),
        "survey",
    ),
    "odi-observation": {
        **_observation(
            "odi-observation", cc(codes.LOINC, "97909-6"), codes.quantity(32, "%"), "survey"
        ),
        "derivedFrom": [{"reference": "QuestionnaireResponse/q1"}],
        "component": [
            {
                "code": cc(codes.CS_MEASURE, "odi-raw-sum"),
                "valueQuantity": codes.quantity(16, "{score}"),
            },
            {
                "code": cc(codes.CS_MEASURE, "odi-answered"),
                "valueQuantity": codes.quantity(10, "1"),
            },
        ],
    },
    "vertebral-height-observation": _radiographic(
        "vertebral-height-observation",
        {
            "coding": [
                codes.coding(codes.CS_MEASURE, "vbh-anterior"),
                codes.coding(codes.DCM, "121207"),
            ]
        },
        codes.quantity(21.5, "mm"),
    ),
    "kyphosis-angle-observation": _radiographic(
        "kyphosis-angle-observation",
        cc(codes.CS_MEASURE, "kyphosis-angle"),
        codes.quantity(-4.5, "deg"),
    ),
    "study": {
        "resourceType": "ResearchStudy",
        "meta": _meta("study"),
        "status": "active",
        "condition": [{"coding": [codes.MYELOMA]}],
        "arm": [{"name": "bkp"}, {"name": "conservative"}],
    },
    "study-subject": {
        "resourceType": "ResearchSubject",
        "meta": _meta("study-subject"),
        "extension": [{"url": codes.EXT_INDEX_DATE, "valueDate": "2024-03-01"}],
        "status": "on-study",
        "study": {"reference": "ResearchStudy/s1"},
        "individual": {"reference": "Patient/p1"},
        "assignedArm": "conservative",
    },
}


def good(name: str) -> dict[str, Any]:
    """A fresh copy of the conforming example of profile ``name``."""
    return copy.deepcopy(GOOD[name])
