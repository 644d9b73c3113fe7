"""Build the study's FHIR R4 resources (JSON dicts) as ``shared/terminology.md`` §7 says.

Pure functions, no IO. Every resource gets an id and an identifier derived from its
natural key (study, subject, timepoint, level, measure), so building the same input
twice gives the same resources: that is what makes a study-table import idempotent
(``services/study_import.py`` compares and skips unchanged content). The id is the
UUIDv5 of ``<resource type>|<natural key>`` in the kyphofhir namespace; the identifier
is ``https://kyphofhir.org/fhir/sid/<kind>`` with the natural key as value.

Natural keys (``/``-separated; subject ids and study ids never contain ``/``)::

    ResearchStudy            <study>
    Patient                  <study>/<subject>          (identifier: study-subject|<subject>)
    ResearchSubject          <study>/<subject>
    Condition (myeloma)      <study>/<subject>/myeloma
    Condition (fracture)     <study>/<subject>/fracture/<level>
    Procedure (kyphoplasty)  <study>/<subject>/bkp/<level>
    Encounter (visit)        <study>/<subject>/<timepoint>
    Observation              <study>/<subject>/<timepoint>/vas | odi
                             <study>/<subject>/<timepoint>/<level>/<measure>
    QuestionnaireResponse    <study>/<subject>/<timepoint>/odi
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from kyphofhir.study import codes

JsonObject = dict[str, Any]

DEFAULT_STUDY_ID = "kyphoplasty-myeloma"
DEFAULT_STUDY_TITLE = (
    "Thoracic and lumbar osteolytic vertebral fractures caused by multiple myeloma "
    "treated with balloon kyphoplasty or conservatively: 6 months prospective follow-up"
)

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, codes.CANONICAL)
"""UUIDv5 namespace of kyphofhir's deterministic resource ids."""

ARMS = tuple(codes.ARMS)
MEASUREMENT_CODES = (*codes.HEIGHT_MEASURES, "kyphosis-angle")


def resource_id(rtype: str, key: str) -> str:
    """The deterministic id of the ``rtype`` resource with natural key ``key``."""
    return str(uuid.uuid5(NAMESPACE, f"{rtype}|{key}"))


def ref(rtype: str, key: str) -> JsonObject:
    return {"reference": f"{rtype}/{resource_id(rtype, key)}"}


def study_ref(study: str) -> JsonObject:
    """A reference to the ResearchStudy ``study``: its id is the study id itself, so a
    study created by hand (``PUT ResearchStudy/<id>``) can be imported into."""
    return {"reference": f"ResearchStudy/{study}"}


# --- natural keys -------------------------------------------------------------------


def subject_key(study: str, subject: str) -> str:
    return f"{study}/{subject}"


def myeloma_key(study: str, subject: str) -> str:
    return f"{study}/{subject}/myeloma"


def fracture_key(study: str, subject: str, level: str) -> str:
    return f"{study}/{subject}/fracture/{level}"


def procedure_key(study: str, subject: str, level: str) -> str:
    return f"{study}/{subject}/bkp/{level}"


def visit_key(study: str, subject: str, timepoint: str) -> str:
    return f"{study}/{subject}/{timepoint}"


def observation_key(
    study: str, subject: str, timepoint: str, what: str, level: str | None = None
) -> str:
    base = visit_key(study, subject, timepoint)
    return f"{base}/{level}/{what}" if level else f"{base}/{what}"


# --- common parts -------------------------------------------------------------------


def _study_extension(study: str) -> list[JsonObject]:
    return [{"url": codes.EXT_RESEARCH_STUDY, "valueReference": study_ref(study)}]


def _head(rtype: str, key: str, profile: str, system: str, study: str) -> JsonObject:
    """resourceType, id, meta.profile, the study extension and the identifier."""
    out: JsonObject = {"resourceType": rtype, "id": resource_id(rtype, key)}
    out["meta"] = {"profile": [codes.structure_definition(profile)]}
    out["extension"] = _study_extension(study)
    out["identifier"] = [{"system": system, "value": key}]
    return out


def _concept(*codings: JsonObject, text: str | None = None) -> JsonObject:
    out: JsonObject = {"coding": [dict(c) for c in codings]}
    if text:
        out["text"] = text
    return out


def _category(system: str, code: str, display: str) -> list[JsonObject]:
    return [_concept(codes.coding(system, code, display))]


def _patient_ref(study: str, subject: str) -> JsonObject:
    return ref("Patient", subject_key(study, subject))


# --- study design -------------------------------------------------------------------


def research_study(
    study: str = DEFAULT_STUDY_ID,
    *,
    title: str = DEFAULT_STUDY_TITLE,
    status: str = "active",
    period_start: str | None = None,
    period_end: str | None = None,
) -> JsonObject:
    """The study with its two arms and the conditions it studies; the id is ``study``."""
    out: JsonObject = {
        "resourceType": "ResearchStudy",
        "id": study,
        "meta": {"profile": [codes.structure_definition("study")]},
        "identifier": [{"system": codes.SID_RESEARCH_STUDY, "value": study}],
        "title": title,
        "status": status,
        "condition": [
            _concept(codes.MYELOMA, text="Multiple myeloma"),
            _concept(codes.PATHOLOGICAL_FRACTURE, text="Pathological vertebral fracture"),
        ],
    }
    period = {k: v for k, v in (("start", period_start), ("end", period_end)) if v}
    if period:
        out["period"] = period
    out["arm"] = [
        {
            "name": arm,
            "type": _concept(codes.coding(codes.ARM_TYPE, arm_type), text=arm_type),
            "description": description,
        }
        for arm, (arm_type, description) in codes.ARMS.items()
    ]
    return out


def patient(study: str, subject: str, *, sex: str, birth_date: str) -> JsonObject:
    """The Patient, identified by ``study-subject|<subject id>``; no name (pseudonymous)."""
    key = subject_key(study, subject)
    out = _head("Patient", key, "kyphofhir-patient", codes.SID_STUDY_SUBJECT, study)
    out["identifier"] = [{"system": codes.SID_STUDY_SUBJECT, "value": subject}]
    out["gender"] = sex
    out["birthDate"] = birth_date
    return out


def research_subject(
    study: str,
    subject: str,
    *,
    arm: str,
    enrolled: str,
    index_date: str,
    ended: str | None = None,
    status: str = "on-study",
) -> JsonObject:
    """Enrolment in an arm; carries the index date the timepoint windows count from."""
    if arm not in codes.ARMS:
        raise ValueError(f"unknown arm {arm!r}")
    key = subject_key(study, subject)
    out = _head("ResearchSubject", key, "study-subject", codes.SID_RESEARCH_SUBJECT, study)
    out["extension"].append({"url": codes.EXT_INDEX_DATE, "valueDate": index_date})
    out["status"] = status
    out["period"] = {"start": enrolled, **({"end": ended} if ended else {})}
    out["study"] = study_ref(study)
    out["individual"] = _patient_ref(study, subject)
    out["assignedArm"] = arm
    out["actualArm"] = arm
    return out


# --- conditions and procedures ------------------------------------------------------


def _condition_status() -> JsonObject:
    return {
        "clinicalStatus": _concept(codes.coding(codes.CONDITION_CLINICAL, "active")),
        "verificationStatus": _concept(codes.coding(codes.CONDITION_VERIFICATION, "confirmed")),
        "category": _category(codes.CONDITION_CATEGORY, "problem-list-item", "Problem List Item"),
    }


def myeloma_condition(study: str, subject: str, *, diagnosed: str | None = None) -> JsonObject:
    key = myeloma_key(study, subject)
    out = _head("Condition", key, "myeloma-condition", codes.SID_STUDY_CONDITION, study)
    out.update(_condition_status())
    out["code"] = _concept(codes.MYELOMA, text="Multiple myeloma")
    out["subject"] = _patient_ref(study, subject)
    if diagnosed:
        out["onsetDateTime"] = diagnosed
    return out


def fracture_condition(study: str, subject: str, level: str) -> JsonObject:
    """One pathological fracture at ``level`` (T1-L5), due to the subject's myeloma."""
    body_site = codes.vertebra(level)  # KeyError for an unknown level
    key = fracture_key(study, subject, level)
    out = _head("Condition", key, "vertebral-fracture-condition", codes.SID_STUDY_CONDITION, study)
    out["extension"].append(
        {"url": codes.EXT_DUE_TO, "valueReference": ref("Condition", myeloma_key(study, subject))}
    )
    out.update(_condition_status())
    out["code"] = _concept(codes.PATHOLOGICAL_FRACTURE, text=f"Pathological fracture {level}")
    out["bodySite"] = [body_site]
    out["subject"] = _patient_ref(study, subject)
    return out


def kyphoplasty_procedure(
    study: str,
    subject: str,
    level: str,
    *,
    performed: str,
    extra_codings: Sequence[JsonObject] = (),
) -> JsonObject:
    """Balloon kyphoplasty of one vertebra (``treatment#bkp``; CPT/OPS as extra codings)."""
    body_site = codes.vertebra(level)
    key = procedure_key(study, subject, level)
    out = _head("Procedure", key, "kyphoplasty-procedure", codes.SID_STUDY_PROCEDURE, study)
    out["status"] = "completed"
    out["code"] = _concept(
        codes.coding(codes.CS_TREATMENT, "bkp", codes.TREATMENTS["bkp"]),
        *extra_codings,
        text=f"Balloon kyphoplasty {level}",
    )
    out["subject"] = _patient_ref(study, subject)
    out["performedDateTime"] = performed
    out["bodySite"] = [body_site]
    out["reasonReference"] = [ref("Condition", fracture_key(study, subject, level))]
    return out


# --- visits ---------------------------------------------------------------------------


def timepoint_concept(timepoint: str, arm: str) -> JsonObject:
    """``Encounter.type``: the local timepoint code plus its CID 6146/UMLS equivalents;
    in the BKP arm baseline is also pre-operative and post-intervention post-operative."""
    tp = codes.TIMEPOINTS[timepoint]
    codings = [codes.coding(codes.CS_TIMEPOINT, tp.code, tp.display), *tp.extra]
    if arm == "bkp" and timepoint == "baseline":
        codings.append(codes.PRE_OPERATIVE)
    if arm == "bkp" and timepoint == "post-intervention":
        codings.append(codes.POST_OPERATIVE)
    return _concept(*codings, text=tp.display)


def visit_encounter(
    study: str, subject: str, timepoint: str, *, arm: str, date: str | None
) -> JsonObject:
    """The study visit of one timepoint; every outcome of that timepoint points at it."""
    key = visit_key(study, subject, timepoint)
    out = _head("Encounter", key, "study-visit-encounter", codes.SID_STUDY_VISIT, study)
    out["status"] = "finished"
    out["class"] = dict(codes.ENCOUNTER_CLASS)
    out["type"] = [timepoint_concept(timepoint, arm)]
    out["subject"] = _patient_ref(study, subject)
    if date:
        out["period"] = {"start": date, "end": date}
    return out


# --- observations ----------------------------------------------------------------------


def _observation(
    study: str,
    subject: str,
    timepoint: str,
    what: str,
    *,
    profile: str,
    category: str,
    code: JsonObject,
    date: str,
    value: JsonObject,
    level: str | None = None,
) -> JsonObject:
    key = observation_key(study, subject, timepoint, what, level)
    out = _head("Observation", key, profile, codes.SID_STUDY_OBSERVATION, study)
    out["status"] = "final"
    display = {"survey": "Survey", "imaging": "Imaging"}[category]
    out["category"] = _category(codes.OBSERVATION_CATEGORY, category, display)
    out["code"] = code
    out["subject"] = _patient_ref(study, subject)
    out["encounter"] = ref("Encounter", visit_key(study, subject, timepoint))
    out["effectiveDateTime"] = date
    out["valueQuantity"] = value
    if level:
        out["bodySite"] = codes.vertebra(level)
        out["focus"] = [ref("Condition", fracture_key(study, subject, level))]
    return out


def vas_observation(
    study: str, subject: str, timepoint: str, *, date: str, value_mm: float
) -> JsonObject:
    """VAS pain, 0-100 mm (convert cm or 0-10 scores before calling)."""
    if not 0 <= value_mm <= 100:
        raise ValueError(f"VAS {value_mm} mm outside 0-100")
    return _observation(
        study,
        subject,
        timepoint,
        "vas",
        profile="vas-observation",
        category="survey",
        code=_concept(codes.VAS, codes.VAS_SNOMED, text="VAS pain"),
        date=date,
        value=codes.quantity(value_mm, codes.VAS_UNIT),
    )


def odi_observation(
    study: str,
    subject: str,
    timepoint: str,
    *,
    date: str,
    percent: float,
    derived_from: str | None = None,
    raw_sum: int | None = None,
    answered: int | None = None,
) -> JsonObject:
    """ODI total in %. From a table giving only the total there is no QuestionnaireResponse
    to derive from; the item-by-item score is computed by ``study/odi.py``."""
    if not 0 <= percent <= 100:
        raise ValueError(f"ODI {percent} % outside 0-100")
    out = _observation(
        study,
        subject,
        timepoint,
        "odi",
        profile="odi-observation",
        category="survey",
        code=_concept(codes.ODI_SCORE, text="Oswestry Disability Index"),
        date=date,
        value=codes.quantity(percent, codes.ODI_UNIT),
    )
    if derived_from:
        out["derivedFrom"] = [{"reference": derived_from}]
    components = []
    for code, value in (("odi-raw-sum", raw_sum), ("odi-answered", answered)):
        if value is not None:
            m = codes.MEASURES[code]
            components.append(
                {
                    "code": _concept(codes.coding(codes.CS_MEASURE, m.code, m.display)),
                    "valueQuantity": codes.quantity(value, m.unit),
                }
            )
    if components:
        out["component"] = components
    return out


def _measure_code(measure: str) -> JsonObject:
    m = codes.MEASURES[measure]
    extra = (m.equivalent,) if m.equivalent else ()
    return _concept(codes.coding(codes.CS_MEASURE, m.code, m.display), *extra, text=m.display)


def vertebral_height_observation(
    study: str,
    subject: str,
    timepoint: str,
    level: str,
    measure: str,
    *,
    date: str,
    value_mm: float,
) -> JsonObject:
    """Anterior/middle/posterior body height (``measure`` = ``vbh-*``) of one vertebra."""
    if measure not in codes.HEIGHT_MEASURES:
        raise ValueError(f"not a height measure: {measure!r}")
    if value_mm <= 0:
        raise ValueError(f"height {value_mm} mm must be positive")
    return _observation(
        study,
        subject,
        timepoint,
        measure,
        profile="vertebral-height-observation",
        category="imaging",
        code=_measure_code(measure),
        date=date,
        value=codes.quantity(value_mm, "mm"),
        level=level,
    )


def kyphosis_angle_observation(
    study: str, subject: str, timepoint: str, level: str, *, date: str, value_deg: float
) -> JsonObject:
    """Segmental kyphosis angle at a fractured vertebra (method: ``codes.MEASURES``)."""
    return _observation(
        study,
        subject,
        timepoint,
        "kyphosis-angle",
        profile="kyphosis-angle-observation",
        category="imaging",
        code=_measure_code("kyphosis-angle"),
        date=date,
        value=codes.quantity(value_deg, "deg"),
        level=level,
    )


def odi_questionnaire_response(
    study: str,
    subject: str,
    timepoint: str,
    *,
    date: str,
    levels: Sequence[int | None],
) -> JsonObject:
    """The ODI answers of one visit (``levels[i]`` = section i+1, 0-5, None = not
    answered). The server scores it into ``Observation/odi-<id>`` (``study/odi.py``)."""
    if len(levels) != len(codes.ODI_SECTIONS):
        raise ValueError(f"{len(codes.ODI_SECTIONS)} section levels expected")
    key = observation_key(study, subject, timepoint, "odi")
    out: JsonObject = {
        "resourceType": "QuestionnaireResponse",
        "id": resource_id("QuestionnaireResponse", key),
        "extension": _study_extension(study),
        "identifier": {"system": codes.SID_STUDY_QUESTIONNAIRE_RESPONSE, "value": key},
        "questionnaire": codes.QUESTIONNAIRE_ODI,
        "status": "completed",
        "subject": _patient_ref(study, subject),
        "encounter": ref("Encounter", visit_key(study, subject, timepoint)),
        "authored": date,
    }
    items = []
    for (section, title), level in zip(codes.ODI_SECTIONS.items(), levels, strict=True):
        if level is None:
            continue
        if level not in codes.ODI_LEVELS:
            raise ValueError(f"{section}: level {level} outside 0-5")
        code = codes.odi_answer_code(section, level)
        answer = codes.coding(codes.CS_ODI, code, codes.odi_answer_display(section, level))
        items.append({"linkId": section, "text": title, "answer": [{"valueCoding": answer}]})
    if items:
        out["item"] = items
    return out
