"""The documented enrolment transaction (docs/examples/enroll-transaction.json) against the
running server, and the researcher searches of docs/study-model.md on the data it makes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kyphofhir.study import codes

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
ARM_PARAM = ROOT / "profiles" / "SearchParameter-researchsubject-arm.json"
BODY_SITE_PARAM = ROOT / "profiles" / "SearchParameter-observation-body-site.json"

LOINC_VAS = f"{codes.LOINC}|38214-3"
LOINC_ODI = f"{codes.LOINC}|97909-6"
MONTH_6 = f"{codes.CS_TIMEPOINT}|month-6"
L1 = f"{codes.SNOMED}|{codes.VERTEBRAE['L1']}"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "docs_examples_generate", EXAMPLES / "generate.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gen = _generator()


def _load(name: str) -> dict[str, Any]:
    return dict(json.loads((EXAMPLES / name).read_text(encoding="utf-8")))


def _ok(reply: Any) -> dict[str, Any]:
    assert reply.status_code == 200, reply.content
    return dict(reply.json())


def _search(api: Any, rtype: str, **params: str) -> list[dict[str, Any]]:
    body = _ok(api.get(f"/{rtype}", params={**params, "_count": "100"}))
    outcome = [e for e in body.get("entry", []) if e["search"]["mode"] == "outcome"]
    assert not outcome, outcome  # every parameter was understood
    return [e["resource"] for e in body.get("entry", [])]


def _count(api: Any, rtype: str) -> int:
    return int(_ok(api.get(f"/{rtype}", params={"_summary": "count"}))["total"])


def _identifier(resource: dict[str, Any]) -> str:
    ident = resource["identifier"]
    return str((ident[0] if isinstance(ident, list) else ident)["value"])


def test_docs_examples_are_what_the_builders_produce() -> None:
    assert gen.main(["--check"]) == 0, "run: .venv/bin/python docs/examples/generate.py"


EXPECTED = {
    "ResearchStudy": 1,
    "Patient": 1,
    "ResearchSubject": 1,
    "Condition": 2,
    "Procedure": 1,
    "Encounter": 1,
    "QuestionnaireResponse": 1,
    "Observation": 6,  # VAS, three heights, kyphosis angle, and the server's ODI total
}


def test_enroll_transaction_on_an_empty_server(http) -> None:
    bundle = _load("enroll-transaction.json")
    body = _ok(http.post("", json=bundle))
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created"] * len(
        bundle["entry"]
    )
    assert {t: _count(http, t) for t in EXPECTED} == EXPECTED
    by_type = {e["resource"]["resourceType"]: e["resource"] for e in body["entry"]}
    study, patient = by_type["ResearchStudy"], by_type["Patient"]
    subject = by_type["ResearchSubject"]
    assert subject["individual"] == {"reference": f"Patient/{patient['id']}"}
    assert subject["study"] == {"reference": f"ResearchStudy/{study['id']}"}

    response = by_type["QuestionnaireResponse"]
    odi = _ok(http.get(f"/Observation/odi-{response['id']}"))
    assert odi["valueQuantity"]["value"] == pytest.approx(100 * 31 / 45)
    assert odi["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{response['id']}"}]
    assert odi["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert odi["encounter"] == {"reference": f"Encounter/{by_type['Encounter']['id']}"}
    assert odi["extension"][0]["valueReference"] == {"reference": f"ResearchStudy/{study['id']}"}
    found = _search(http, "Observation", code=LOINC_ODI, subject=f"Patient/{patient['id']}")
    assert [o["id"] for o in found] == [odi["id"]]

    # sending the Bundle again finds every resource by its identifier: nothing new
    again = _ok(http.post("", json=bundle))
    assert {e["response"]["status"] for e in again["entry"]} == {"200 OK"}
    assert {t: _count(http, t) for t in EXPECTED} == EXPECTED


def _enrolled(http: Any) -> dict[str, str]:
    """The study (PUT first, as documented), the example patient, a conservative patient
    with a T12 fracture, and month-3/month-6 visits with a VAS; returns ids by key."""
    study = _load("research-study.json")
    assert http.put(f"/ResearchStudy/{study['id']}", json=study).status_code == 201
    body = _ok(http.post("", json=_load("enroll-transaction.json")))
    assert body["entry"][0]["response"]["status"] == "200 OK"  # the existing study
    ids = {_identifier(e["resource"]): e["resource"]["id"] for e in body["entry"]}

    control = gen.enrollment("CON-001", arm="conservative", level="T12", vas_mm=60)
    _ok(http.post("", json=gen.transaction(control, elsewhere=[gen.research_study()])))
    for subject, arm, timepoint, date, vas in (
        ("BKP-001", "bkp", "month-3", "2024-06-04", 30),
        ("BKP-001", "bkp", "month-6", "2024-09-02", 24),
        ("CON-001", "conservative", "month-6", "2024-09-02", 55),
    ):
        patient = gen.b.patient(gen.STUDY, subject, sex="male", birth_date="1951-06-12")
        visit = gen.follow_up(subject, timepoint, arm=arm, date=date, vas_mm=vas)
        elsewhere = [gen.research_study(), patient]
        reply = _ok(http.post("", json=gen.transaction(visit, elsewhere=elsewhere)))
        for entry in reply["entry"]:
            ids[_identifier(entry["resource"])] = entry["resource"]["id"]
    return ids


def test_researcher_searches_find_exactly_their_resources(http) -> None:
    ids = _enrolled(http)
    key = f"{gen.STUDY}/BKP-001"

    # every reference of the study resources points at the study itself
    subject = _ok(http.get(f"/ResearchSubject/{ids[key]}"))
    assert subject["study"] == {"reference": "ResearchStudy/kyphoplasty-myeloma"}

    # fractures at L1: the BKP patient's, not the control's at T12
    fractures = _search(http, "Condition", code=f"{codes.SNOMED}|268029009", **{"body-site": L1})
    assert [c["id"] for c in fractures] == [ids[f"{key}/fracture/L1"]]

    # 6-month VAS of both arms (standard parameters only)
    month6 = _search(http, "Observation", code=LOINC_VAS, **{"encounter.type": MONTH_6})
    assert sorted(o["id"] for o in month6) == sorted(
        [ids[f"{key}/month-6/vas"], ids[f"{gen.STUDY}/CON-001/month-6/vas"]]
    )


@pytest.mark.skipif(
    not ARM_PARAM.exists(), reason=f"{ARM_PARAM.relative_to(ROOT)} (SearchParameter arm) missing"
)
def test_six_month_vas_of_the_bkp_arm(http) -> None:
    ids = _enrolled(http)
    found = _search(
        http,
        "Observation",
        code=LOINC_VAS,
        **{
            "encounter.type": MONTH_6,
            "subject:Patient._has:ResearchSubject:individual:arm": "bkp",
        },
    )
    assert [o["id"] for o in found] == [ids[f"{gen.STUDY}/BKP-001/month-6/vas"]]


@pytest.mark.skipif(
    not BODY_SITE_PARAM.exists(),
    reason=f"{BODY_SITE_PARAM.relative_to(ROOT)} (SearchParameter body-site) missing",
)
def test_radiographic_measures_at_l1(http) -> None:
    ids = _enrolled(http)
    found = _search(http, "Observation", **{"body-site": L1})
    key = f"{gen.STUDY}/BKP-001/baseline/L1"
    expected = [f"{key}/{m}" for m in (*codes.HEIGHT_MEASURES, "kyphosis-angle")]
    assert sorted(o["id"] for o in found) == sorted(ids[k] for k in expected)
