"""The study's codes, in one place (settled in ``shared/terminology.md``; see docs).

Standard codes where they exist (LOINC, SNOMED CT, DICOM, UCUM); local codes under
``https://kyphofhir.org/fhir/CodeSystem/<name>`` where they do not. Everything else in
the study package (profiles, ODI scoring, import, demo cohort) takes its codes from here,
so a code appears in exactly one Python literal. No ODI statement text appears anywhere:
only section titles and generic level labels (the instrument is copyrighted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CANONICAL = "https://kyphofhir.org/fhir"

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
UMLS = "http://terminology.hl7.org/CodeSystem/umls"
CPT = "http://www.ama-assn.org/go/cpt"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
OPS = "http://fhir.de/CodeSystem/bfarm/ops"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
ARM_TYPE = "http://hl7.org/fhir/research-study-arm-type"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DICOM_UID = "urn:dicom:uid"
URI_SYSTEM = "urn:ietf:rfc:3986"  # ImagingStudy.series.instance.sopClass (urn:oid:<SOP Class UID>)
ENDPOINT_CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
ENDPOINT_PAYLOAD_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-payload-type"
# HL7 DICOM SR IG identifier types (observation-uid, tracking-uid, sop-instance-uid, ...)
DICOM_SR_IDENTIFIER_TYPE = "http://hl7.org/fhir/uv/dicom-sr/CodeSystem/dicom-identifier-type"

# R4 core extensions
EXT_RESEARCH_STUDY = "http://hl7.org/fhir/StructureDefinition/workflow-researchStudy"
EXT_ORDINAL_VALUE = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
EXT_DUE_TO = "http://hl7.org/fhir/StructureDefinition/condition-dueTo"
EXT_OBSERVATION_EXTRACT = (
    "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-observationExtract"
)


def code_system(name: str) -> str:
    return f"{CANONICAL}/CodeSystem/{name}"


def value_set(name: str) -> str:
    return f"{CANONICAL}/ValueSet/{name}"


def structure_definition(name: str) -> str:
    return f"{CANONICAL}/StructureDefinition/{name}"


def identifier_system(name: str) -> str:
    return f"{CANONICAL}/sid/{name}"


CS_MEASURE = code_system("measure")
CS_ODI = code_system("odi")
CS_TIMEPOINT = code_system("timepoint")
CS_TREATMENT = code_system("treatment")
CS_ARM = code_system("arm")

QUESTIONNAIRE_ODI = f"{CANONICAL}/Questionnaire/odi"

SID_STUDY_SUBJECT = identifier_system("study-subject")
SID_SR_MEASUREMENT = identifier_system("sr-measurement")
# DICOM Patient ID (0010,0020) when no IssuerOfPatientID maps it elsewhere (#6; configurable
# as Settings.dicom_patient_id_system)
SID_DICOM_PATIENT_ID = identifier_system("dicom-patient-id")
# identifiers of the resources a study table import builds (value = the row's natural
# key, e.g. ``<study>/<subject>/month-6/T12/vbh-anterior``): they make import idempotent
SID_RESEARCH_STUDY = identifier_system("research-study")
SID_RESEARCH_SUBJECT = identifier_system("research-subject")
SID_STUDY_CONDITION = identifier_system("study-condition")
SID_STUDY_PROCEDURE = identifier_system("study-procedure")
SID_STUDY_VISIT = identifier_system("study-visit")
SID_STUDY_OBSERVATION = identifier_system("study-observation")
SID_STUDY_QUESTIONNAIRE_RESPONSE = identifier_system("study-questionnaire-response")

# the subject's index date (kyphoplasty, or fracture diagnosis/enrolment in the
# conservative arm) on ResearchSubject: the origin of the timepoint windows
EXT_INDEX_DATE = structure_definition("index-date")

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ENCOUNTER_CLASS = {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"}


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def quantity(value: float, unit: str) -> dict[str, Any]:
    """A UCUM Quantity (``unit`` is both the code and the display)."""
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


# --- DICOM imaging (#6, docs/dicom.md) -----------------------------------------------

ACCESSION_TYPE = coding(V2_0203, "ACSN", "Accession ID")
STUDY_INSTANCE_UID_TYPE = coding(DCM, "110180", "Study Instance UID")
MEASUREMENT_GROUP = coding(DCM, "125007", "Measurement Group")
# meta.tag codes set by DICOM ingest: a Patient created from a DICOM patient module that
# a person must match to the right patient (`kyphofhir dicom reconcile`), and an
# ImagingStudy/Observation whose date lies in no protocol timepoint window (kept, flagged)
CS_IMAGING_TAG = code_system("imaging-tag")
TAG_NEEDS_RECONCILIATION = coding(
    CS_IMAGING_TAG, "needs-reconciliation", "Created from DICOM; to be matched to a patient"
)
TAG_OUTSIDE_WINDOW = coding(
    CS_IMAGING_TAG, "outside-window", "Imaging date outside every timepoint window"
)


# --- Outcomes ------------------------------------------------------------------------

VAS = coding(LOINC, "38214-3", "Pain severity [Score] Visual analog score")
VAS_SNOMED = coding(SNOMED, "443394008", "Visual analog scale pain score")
VAS_UNIT = "mm"  # 0-100 mm; cm and {score} 0-10 are converted on input

ODI_PANEL = coding(LOINC, "97908-8", "Oswestry Disability Index")
ODI_SCORE = coding(LOINC, "97909-6", "Oswestry disability index score ODI")
ODI_UNIT = "%"


@dataclass(frozen=True)
class Measure:
    """A radiographic or derived measure of the local ``measure`` CodeSystem."""

    code: str
    display: str
    unit: str
    definition: str
    equivalent: dict[str, Any] | None  # the DICOM/SNOMED extra coding


MEASURES: dict[str, Measure] = {
    m.code: m
    for m in (
        Measure(
            "vbh-anterior",
            "Vertebral body height, anterior",
            "mm",
            "Height of the vertebral body at its anterior wall, from the superior to the "
            "inferior endplate, on a lateral radiograph.",
            coding(DCM, "121207", "Height"),
        ),
        Measure(
            "vbh-middle",
            "Vertebral body height, middle",
            "mm",
            "Height of the vertebral body midway between its anterior and posterior walls, "
            "endplate to endplate, on a lateral radiograph.",
            coding(DCM, "121207", "Height"),
        ),
        Measure(
            "vbh-posterior",
            "Vertebral body height, posterior",
            "mm",
            "Height of the vertebral body at its posterior wall, endplate to endplate, on "
            "a lateral radiograph.",
            coding(DCM, "121207", "Height"),
        ),
        Measure(
            "kyphosis-angle",
            "Segmental kyphosis angle",
            "deg",
            "Segmental kyphosis angle (segmental Cobb method): the angle between the "
            "superior endplate of the vertebra above and the inferior endplate of the "
            "vertebra below the fractured one, on a lateral radiograph; positive values "
            "are kyphotic.",
            coding(SNOMED, "285285000", "Cobb angle"),
        ),
        Measure(
            "odi-raw-sum",
            "ODI raw sum of answered sections",
            "{score}",
            "Sum of the section scores (0-5 each) of the answered ODI sections.",
            None,
        ),
        Measure(
            "odi-answered",
            "ODI sections answered",
            "1",
            "Number of ODI sections answered (0-10).",
            None,
        ),
    )
}
HEIGHT_MEASURES = ("vbh-anterior", "vbh-middle", "vbh-posterior")

# --- Conditions and procedures -----------------------------------------------------

MYELOMA = coding(SNOMED, "109989006", "Multiple myeloma (disorder)")
PATHOLOGICAL_FRACTURE = coding(SNOMED, "268029009", "Pathological fracture (disorder)")
TREATMENTS = {
    "bkp": "Balloon kyphoplasty",
    "conservative": "Conservative management",
}

# --- Anatomy (DICOM CID 7603 Vertebra, SNOMED CT) -------------------------------------

VERTEBRAE: dict[str, str] = {
    "T1": "64864005",
    "T2": "53733008",
    "T3": "1626008",
    "T4": "73071006",
    "T5": "56401006",
    "T6": "45296009",
    "T7": "62487009",
    "T8": "11068009",
    "T9": "82687006",
    "T10": "7610001",
    "T11": "12989004",
    "T12": "23215003",
    "L1": "66794005",
    "L2": "14293000",
    "L3": "36470004",
    "L4": "11994002",
    "L5": "49668003",
}
LEVEL_BY_SNOMED = {code: level for level, code in VERTEBRAE.items()}


def vertebra(level: str) -> dict[str, Any]:
    """The ``bodySite`` CodeableConcept of a level (``T12``); KeyError if unknown."""
    return {
        "coding": [coding(SNOMED, VERTEBRAE[level], f"{level} vertebra")],
        "text": level,
    }


# --- Study design --------------------------------------------------------------------


@dataclass(frozen=True)
class Timepoint:
    code: str
    display: str
    extra: tuple[dict[str, Any], ...]  # DICOM CID 6146 / UMLS equivalents


TIMEPOINTS: dict[str, Timepoint] = {
    t.code: t
    for t in (
        Timepoint(
            "baseline",
            "Baseline (pre-intervention)",
            (coding(UMLS, "C1442488", "Baseline"),),
        ),
        Timepoint(
            "post-intervention",
            "Post-intervention",
            (coding(DCM, "126074", "Posttreatment"),),
        ),
        Timepoint("month-3", "3 months", (coding(DCM, "126074", "Posttreatment"),)),
        Timepoint("month-6", "6 months", (coding(DCM, "126074", "Posttreatment"),)),
    )
}
PRE_OPERATIVE = coding(SNOMED, "262068006", "Pre-operative")
POST_OPERATIVE = coding(SNOMED, "262061000", "Post-operative")

ARMS = {
    "bkp": ("experimental", "Balloon kyphoplasty in addition to oncologic treatment"),
    # protocolised standard care (analgesia, bracing, oncologic treatment): an active
    # comparator rather than no intervention (docs/study-model.md)
    "conservative": ("active-comparator", "Conservative treatment (standard care)"),
}

# --- ODI (section titles only; the statements are copyrighted) -----------------------

ODI_SECTIONS: dict[str, str] = {
    "odi-1": "Pain intensity",
    "odi-2": "Personal care",
    "odi-3": "Lifting",
    "odi-4": "Walking",
    "odi-5": "Sitting",
    "odi-6": "Standing",
    "odi-7": "Sleeping",
    "odi-8": "Sex life (if applicable)",
    "odi-9": "Social life",
    "odi-10": "Travelling",
}
ODI_LEVELS = range(6)  # statements are scored 0 (first) to 5 (last)


def odi_answer_code(section: str, level: int) -> str:
    return f"{section}-{level}"


def odi_answer_display(section: str, level: int) -> str:
    """Generic label, never the licensed statement text."""
    title = ODI_SECTIONS[section]
    suffix = {0: " (least disability)", 5: " (most disability)"}.get(level, "")
    return f"{title} \u2014 level {level}{suffix}"


ODI_COPYRIGHT = (
    "Oswestry Disability Index \u00a9 Jeremy Fairbank, 1980. All rights reserved. "
    "Distributed by Mapi Research Trust (https://eprovide.mapi-trust.org). kyphofhir ships "
    "section titles, codes and ordinal values only; sites with a licence load the "
    "statement texts from a local file."
)
