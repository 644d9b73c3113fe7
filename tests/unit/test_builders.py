"""The study resource builders: terminology §7 shapes, determinism, valid R4."""

from __future__ import annotations

from typing import Any

import pytest

from kyphofhir.fhir.models import validate_resource
from kyphofhir.study import builders as b
from kyphofhir.study import codes

S = "test-study"
SUBJ = "BKP-001"


def _all(arm: str = "bkp") -> list[dict[str, Any]]:
    return [
        b.research_study(S, period_start="2007-01-01", period_end="2009-06-30"),
        b.patient(S, SUBJ, sex="male", birth_date="1950-01-01"),
        b.research_subject(S, SUBJ, arm=arm, enrolled="2008-01-01", index_date="2008-01-05"),
        b.myeloma_condition(S, SUBJ, diagnosed="2007-06-01"),
        b.fracture_condition(S, SUBJ, "T12"),
        b.kyphoplasty_procedure(S, SUBJ, "T12", performed="2008-01-05"),
        b.visit_encounter(S, SUBJ, "baseline", arm=arm, date="2008-01-04"),
        b.visit_encounter(S, SUBJ, "post-intervention", arm=arm, date="2008-01-07"),
        b.vas_observation(S, SUBJ, "baseline", date="2008-01-04", value_mm=72),
        b.odi_observation(S, SUBJ, "baseline", date="2008-01-04", percent=32.0),
        b.odi_observation(
            S,
            SUBJ,
            "month-3",
            date="2008-04-04",
            percent=35.6,
            raw_sum=16,
            answered=9,
            derived_from="QuestionnaireResponse/abc",
        ),
        b.vertebral_height_observation(
            S, SUBJ, "baseline", "T12", "vbh-anterior", date="2008-01-04", value_mm=14.2
        ),
        b.kyphosis_angle_observation(S, SUBJ, "baseline", "T12", date="2008-01-04", value_deg=12.5),
    ]


def _codes(concept: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concept["coding"]}


def _by(resources: list[dict[str, Any]], profile: str) -> dict[str, Any]:
    url = codes.structure_definition(profile)
    return next(r for r in resources if url in r.get("meta", {}).get("profile", []))


@pytest.mark.parametrize("arm", ["bkp", "conservative"])
def test_every_resource_is_valid_r4(arm: str) -> None:
    for resource in _all(arm):
        validate_resource(resource)


def test_building_twice_gives_identical_resources() -> None:
    assert _all() == _all()
    ids = [r["id"] for r in _all()]
    assert len(ids) == len(set(ids)), "natural keys must not collide"


def test_ids_depend_on_study_subject_and_level() -> None:
    assert (
        b.patient(S, "A", sex="male", birth_date="1950-01-01")["id"]
        != b.patient("other", "A", sex="male", birth_date="1950-01-01")["id"]
    )
    assert b.fracture_condition(S, "A", "T12")["id"] != b.fracture_condition(S, "A", "L1")["id"]


def test_every_study_resource_points_at_the_study_and_claims_its_profile() -> None:
    for resource in _all()[1:]:
        ext = [e for e in resource["extension"] if e["url"] == codes.EXT_RESEARCH_STUDY]
        assert ext == [
            {"url": codes.EXT_RESEARCH_STUDY, "valueReference": {"reference": f"ResearchStudy/{S}"}}
        ]
        assert resource["identifier"][0]["system"].startswith(codes.CANONICAL + "/sid/")
        (profile,) = resource["meta"]["profile"]
        assert profile.startswith(codes.CANONICAL + "/StructureDefinition/")


def test_research_study_arms_conditions_period() -> None:
    study = b.research_study(S, period_start="2007-01-01")
    assert study["id"] == S
    arms = {a["name"]: a["type"]["coding"][0]["code"] for a in study["arm"]}
    assert arms == {"bkp": "experimental", "conservative": "active-comparator"}
    assert {c["coding"][0]["code"] for c in study["condition"]} == {"109989006", "268029009"}
    assert study["period"] == {"start": "2007-01-01"}


def test_research_subject_arm_period_index_date() -> None:
    rs = b.research_subject(
        S, SUBJ, arm="conservative", enrolled="2008-01-01", index_date="2008-01-02"
    )
    assert rs["assignedArm"] == "conservative"
    assert rs["status"] == "on-study"
    assert rs["period"] == {"start": "2008-01-01"}
    assert rs["study"] == {"reference": f"ResearchStudy/{S}"}
    assert rs["individual"] == {
        "reference": f"Patient/{b.patient(S, SUBJ, sex='male', birth_date='1950-01-01')['id']}"
    }
    assert {"url": codes.EXT_INDEX_DATE, "valueDate": "2008-01-02"} in rs["extension"]
    with pytest.raises(ValueError):
        b.research_subject(S, SUBJ, arm="placebo", enrolled="2008-01-01", index_date="2008-01-01")


def test_patient_is_found_by_study_subject_identifier() -> None:
    p = b.patient(S, SUBJ, sex="female", birth_date="1948-05-02")
    assert p["identifier"] == [{"system": codes.SID_STUDY_SUBJECT, "value": SUBJ}]
    assert (p["gender"], p["birthDate"]) == ("female", "1948-05-02")


def test_fracture_is_due_to_the_myeloma_at_its_vertebra() -> None:
    frac = b.fracture_condition(S, SUBJ, "L1")
    myeloma = b.myeloma_condition(S, SUBJ)
    assert _codes(frac["code"]) == {(codes.SNOMED, "268029009")}
    assert _codes(frac["bodySite"][0]) == {(codes.SNOMED, "66794005")}
    due = [e for e in frac["extension"] if e["url"] == codes.EXT_DUE_TO]
    assert due[0]["valueReference"] == {"reference": f"Condition/{myeloma['id']}"}
    assert _codes(myeloma["code"]) == {(codes.SNOMED, "109989006")}
    with pytest.raises(KeyError):
        b.fracture_condition(S, SUBJ, "C7")


def test_procedure_treats_the_fracture_on_the_index_date() -> None:
    proc = b.kyphoplasty_procedure(
        S, SUBJ, "T12", performed="2008-01-05", extra_codings=[codes.coding(codes.CPT, "22513")]
    )
    assert _codes(proc["code"]) == {(codes.CS_TREATMENT, "bkp"), (codes.CPT, "22513")}
    assert proc["reasonReference"] == [
        {"reference": f"Condition/{b.fracture_condition(S, SUBJ, 'T12')['id']}"}
    ]
    assert proc["performedDateTime"] == "2008-01-05"
    assert _codes(proc["bodySite"][0]) == {(codes.SNOMED, "23215003")}


@pytest.mark.parametrize(
    ("timepoint", "arm", "extra"),
    [
        ("baseline", "bkp", {(codes.UMLS, "C1442488"), (codes.SNOMED, "262068006")}),
        ("baseline", "conservative", {(codes.UMLS, "C1442488")}),
        ("post-intervention", "bkp", {(codes.DCM, "126074"), (codes.SNOMED, "262061000")}),
        ("post-intervention", "conservative", {(codes.DCM, "126074")}),
        ("month-6", "bkp", {(codes.DCM, "126074")}),
    ],
)
def test_encounter_type_is_the_timepoint_with_equivalents(
    timepoint: str, arm: str, extra: set[tuple[str, str]]
) -> None:
    enc = b.visit_encounter(S, SUBJ, timepoint, arm=arm, date="2008-01-04")
    assert enc["type"][0]["coding"][0] == {
        "system": codes.CS_TIMEPOINT,
        "code": timepoint,
        "display": codes.TIMEPOINTS[timepoint].display,
    }
    assert _codes(enc["type"][0]) == {(codes.CS_TIMEPOINT, timepoint), *extra}
    assert enc["period"] == {"start": "2008-01-04", "end": "2008-01-04"}


def test_outcomes_point_at_their_visit() -> None:
    resources = _all()
    visit = b.visit_encounter(S, SUBJ, "baseline", arm="bkp", date=None)
    for profile in ("vas-observation", "vertebral-height-observation"):
        assert _by(resources, profile)["encounter"] == {"reference": f"Encounter/{visit['id']}"}


def test_vas_coding_unit_range() -> None:
    vas = b.vas_observation(S, SUBJ, "month-6", date="2008-07-01", value_mm=0)
    assert _codes(vas["code"]) == {(codes.LOINC, "38214-3"), (codes.SNOMED, "443394008")}
    assert vas["valueQuantity"] == codes.quantity(0, "mm")
    assert vas["category"][0]["coding"][0]["code"] == "survey"
    for bad in (-1, 100.5, 140):
        with pytest.raises(ValueError):
            b.vas_observation(S, SUBJ, "month-6", date="2008-07-01", value_mm=bad)


def test_odi_total_with_and_without_items() -> None:
    total_only = b.odi_observation(S, SUBJ, "baseline", date="2008-01-04", percent=32)
    assert _codes(total_only["code"]) == {(codes.LOINC, "97909-6")}
    assert total_only["valueQuantity"]["code"] == "%"
    assert "derivedFrom" not in total_only and "component" not in total_only
    scored = _all()[10]
    assert scored["derivedFrom"] == [{"reference": "QuestionnaireResponse/abc"}]
    comps = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in scored["component"]}
    assert comps == {
        "odi-raw-sum": codes.quantity(16, "{score}"),
        "odi-answered": codes.quantity(9, "1"),
    }
    with pytest.raises(ValueError):
        b.odi_observation(S, SUBJ, "baseline", date="2008-01-04", percent=101)


def test_radiographic_measures() -> None:
    h = b.vertebral_height_observation(
        S, SUBJ, "month-3", "L2", "vbh-posterior", date="2008-04-01", value_mm=25.1
    )
    assert _codes(h["code"]) == {(codes.CS_MEASURE, "vbh-posterior"), (codes.DCM, "121207")}
    assert h["valueQuantity"] == codes.quantity(25.1, "mm")
    assert _codes(h["bodySite"]) == {(codes.SNOMED, "14293000")}
    assert h["focus"] == [{"reference": f"Condition/{b.fracture_condition(S, SUBJ, 'L2')['id']}"}]
    assert h["category"][0]["coding"][0]["code"] == "imaging"
    a = b.kyphosis_angle_observation(S, SUBJ, "month-3", "L2", date="2008-04-01", value_deg=-3)
    assert _codes(a["code"]) == {(codes.CS_MEASURE, "kyphosis-angle"), (codes.SNOMED, "285285000")}
    assert a["valueQuantity"] == codes.quantity(-3, "deg")
    assert a["id"] != h["id"]
    with pytest.raises(ValueError):
        b.vertebral_height_observation(
            S, SUBJ, "month-3", "L2", "vbh-anterior", date="2008-04-01", value_mm=0
        )
    with pytest.raises(ValueError):
        b.vertebral_height_observation(
            S, SUBJ, "month-3", "L2", "kyphosis-angle", date="2008-04-01", value_mm=3
        )


def test_odi_response_is_scored_by_the_odi_rules() -> None:
    from kyphofhir.study import odi

    levels = [3, 2, 4, 3, 2, 3, 2, None, 3, 2]
    qr = b.odi_questionnaire_response(S, SUBJ, "baseline", date="2008-01-04", levels=levels)
    validate_resource(qr)
    assert qr["questionnaire"] == codes.QUESTIONNAIRE_ODI and qr["status"] == "completed"
    assert [i["linkId"] for i in qr["item"]] == [f"odi-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 9, 10)]
    assert qr["item"][0]["answer"][0]["valueCoding"]["code"] == "odi-1-3"
    assert (
        qr["encounter"] == b.vas_observation(S, SUBJ, "baseline", date="x", value_mm=1)["encounter"]
    )
    score = odi.score_response(qr)
    assert (score.raw_sum, score.answered) == (24, 9)
    with pytest.raises(ValueError):
        b.odi_questionnaire_response(S, SUBJ, "baseline", date="2008-01-04", levels=[6] * 10)
