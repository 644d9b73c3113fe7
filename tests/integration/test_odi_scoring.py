"""The server scores ODI QuestionnaireResponses into THE ODI Observation, in the same unit
of work: plain and conditional create/update, transactions, batches, deletes.

The tests score by the Questionnaire's canonical URL and the codes only; the ODI
Questionnaire resource itself need not be stored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from kyphofhir.app import create_app
from kyphofhir.study import codes
from samples import create, details_code, patient

SECTIONS = list(codes.ODI_SECTIONS)
SIXTEEN = [3, 2, 2, 1, 2, 2, 1, 0, 2, 1]  # 16 points: the published worked example
ODI = f"{codes.LOINC}|97909-6"


def odi_response(
    subject: str | None,
    levels: Sequence[int | None],
    *,
    status: str = "completed",
    questionnaire: str = codes.QUESTIONNAIRE_ODI,
    **extra: Any,
) -> dict[str, Any]:
    """An ODI response; ``None`` leaves that section unanswered."""
    items = [
        {
            "linkId": section,
            "answer": [{"valueCoding": codes.coding(codes.CS_ODI, f"{section}-{level}")}],
        }
        for section, level in zip(SECTIONS, levels, strict=True)
        if level is not None
    ]
    body: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": questionnaire,
        "status": status,
        "authored": "2024-03-05T10:00:00+01:00",
        "item": items,
        **extra,
    }
    if subject:  # the ODI Observation profile needs subject, encounter and a date
        body["subject"] = {"reference": subject}
        body["author"] = {"reference": subject}
        body.setdefault("encounter", {"reference": "Encounter/visit-1"})
    return body


def odi_of(api: Any, qr_id: str) -> dict[str, Any]:
    r = api.get(f"/Observation/odi-{qr_id}")
    assert r.status_code == 200, r.content
    return dict(r.json())


def value(obs: dict[str, Any]) -> float:
    return float(obs["valueQuantity"]["value"])


def components(obs: dict[str, Any]) -> dict[str, float]:
    return {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in obs["component"]}


def count(api: Any, rtype: str, **params: str) -> int:
    r = api.get(f"/{rtype}", params={**params, "_summary": "count"})
    assert r.status_code == 200, r.content
    return int(r.json()["total"])


def test_create_scores_and_the_score_is_searchable(http) -> None:
    pid = create(http, patient("odi-1"))
    other = create(http, patient("odi-2"))
    qr_id = create(http, odi_response(f"Patient/{pid}", SIXTEEN))
    create(http, odi_response(f"Patient/{other}", [5] * 10))

    obs = odi_of(http, qr_id)
    assert value(obs) == 32.0
    assert obs["valueQuantity"]["code"] == "%"
    assert obs["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{qr_id}"}]
    assert obs["subject"] == {"reference": f"Patient/{pid}"}
    assert obs["encounter"] == {"reference": "Encounter/visit-1"}
    assert obs["effectiveDateTime"] == "2024-03-05T10:00:00+01:00"
    assert obs["performer"] == [{"reference": f"Patient/{pid}"}]
    assert obs["status"] == "final" and obs["meta"]["versionId"] == "1"
    assert components(obs) == {"odi-raw-sum": 16, "odi-answered": 10}

    found = http.get("/Observation", params={"code": ODI, "subject": f"Patient/{pid}"}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [f"odi-{qr_id}"]
    assert count(http, "Observation", code=ODI) == 2
    assert count(http, "Observation", **{"derived-from": f"QuestionnaireResponse/{qr_id}"}) == 1


def test_update_writes_a_new_version_and_one_missing_section_is_unrounded(http) -> None:
    pid = create(http, patient("odi-3"))
    qr = odi_response(f"Patient/{pid}", SIXTEEN)
    qr_id = create(http, qr)

    nine: list[int | None] = list(SIXTEEN)
    nine[7] = None  # section 8 (0 points) unanswered: 16 of 45
    r = http.put(
        f"/QuestionnaireResponse/{qr_id}",
        json=odi_response(f"Patient/{pid}", nine, id=qr_id, status="amended"),
    )
    assert r.status_code == 200, r.content
    obs = odi_of(http, qr_id)
    assert obs["meta"]["versionId"] == "2"
    assert value(obs) == pytest.approx(35.555555555, abs=1e-6) and value(obs) != 35.6
    assert obs["status"] == "amended"
    assert components(obs) == {"odi-raw-sum": 16, "odi-answered": 9}
    assert count(http, "Observation", code=ODI) == 1  # still one Observation per response

    # the same response again: the score did not change, so neither does the Observation
    r = http.put(
        f"/QuestionnaireResponse/{qr_id}",
        json=odi_response(f"Patient/{pid}", nine, id=qr_id, status="amended"),
    )
    assert r.status_code == 200
    assert odi_of(http, qr_id)["meta"]["versionId"] == "2"


def test_too_many_missing_sections_give_a_data_absent_reason(http) -> None:
    pid = create(http, patient("odi-4"))
    eight = [1, 1, 1, 1, 1, 1, 1, 1, None, None]
    versioned = codes.QUESTIONNAIRE_ODI + "|2.1a"
    qr_id = create(http, odi_response(f"Patient/{pid}", eight, questionnaire=versioned))
    obs = odi_of(http, qr_id)
    assert "valueQuantity" not in obs
    assert obs["dataAbsentReason"]["coding"][0] == {
        "system": codes.DATA_ABSENT_REASON,
        "code": "not-applicable",
        "display": "Not Applicable",
    }
    assert components(obs) == {"odi-raw-sum": 8, "odi-answered": 8}
    assert count(http, "Observation", code=ODI, subject=f"Patient/{pid}") == 1


def test_transaction_with_patient_by_urn_uuid(http) -> None:
    pat_url = "urn:uuid:0c7d6d5e-9a43-4f3e-8d55-0a1b2c3d4e5f"
    qr_url = "urn:uuid:1c7d6d5e-9a43-4f3e-8d55-0a1b2c3d4e5f"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": qr_url,
                "resource": odi_response(pat_url, [5] * 10),
                "request": {"method": "POST", "url": "QuestionnaireResponse"},
            },
            {
                "fullUrl": pat_url,
                "resource": patient("odi-tx"),
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    r = http.post("", json=bundle)
    assert r.status_code == 200, r.content
    qr_entry, pat_entry = r.json()["entry"]
    pid, qr_id = pat_entry["resource"]["id"], qr_entry["resource"]["id"]
    obs = odi_of(http, qr_id)
    assert value(obs) == 100.0
    assert obs["subject"] == {"reference": f"Patient/{pid}"}
    assert count(http, "Observation", code=ODI, subject=f"Patient/{pid}") == 1


def test_failed_transaction_leaves_neither_response_nor_score(http) -> None:
    pid = create(http, patient("odi-5"))
    good = odi_response(f"Patient/{pid}", SIXTEEN)
    bad = odi_response(f"Patient/{pid}", SIXTEEN)
    bad["item"][4]["answer"][0]["valueCoding"]["code"] = "odi-5-9"
    for second, status in (
        ({"resourceType": "Patient", "gender": "robot"}, 400),  # invalid resource
        (bad, 422),  # invalid ODI answer
    ):
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": good, "request": {"method": "POST", "url": "QuestionnaireResponse"}},
                {
                    "resource": second,
                    "request": {"method": "POST", "url": second["resourceType"]},
                },
            ],
        }
        r = http.post("", json=bundle)
        assert r.status_code == status, r.content
        assert count(http, "QuestionnaireResponse") == 0
        assert count(http, "Observation") == 0
    issue = r.json()["issue"][0]
    assert issue["code"] == "code-invalid"
    assert "odi-5" in issue["diagnostics"]
    assert issue["expression"][:2] == [
        "Bundle.entry[1]",
        "QuestionnaireResponse.item[4].answer[0].valueCoding",
    ]


def test_invalid_answer_is_422_naming_the_item(http) -> None:
    pid = create(http, patient("odi-6"))
    qr = odi_response(f"Patient/{pid}", SIXTEEN)
    qr["item"][2]["answer"] = [{"valueString": "a lot"}]
    r = http.post("/QuestionnaireResponse", json=qr)
    assert r.status_code == 422, r.content
    issue = r.json()["issue"][0]
    assert "odi-3" in issue["diagnostics"]
    assert issue["expression"] == ["QuestionnaireResponse.item[2].answer[0].valueString"]
    assert count(http, "QuestionnaireResponse") == 0


def test_status_rules_and_delete(http) -> None:
    pid = create(http, patient("odi-7"))
    qr_id = create(http, odi_response(f"Patient/{pid}", SIXTEEN, status="in-progress"))
    assert http.get(f"/Observation/odi-{qr_id}").status_code == 404  # provisional: no score

    def put(status: str) -> None:
        body = odi_response(f"Patient/{pid}", SIXTEEN, id=qr_id, status=status)
        assert http.put(f"/QuestionnaireResponse/{qr_id}", json=body).status_code == 200

    put("completed")
    assert value(odi_of(http, qr_id)) == 32.0
    put("entered-in-error")
    obs = odi_of(http, qr_id)
    assert (obs["status"], obs["meta"]["versionId"]) == ("entered-in-error", "2")
    put("completed")
    assert odi_of(http, qr_id)["status"] == "final"

    r = http.delete(f"/QuestionnaireResponse/{qr_id}")
    assert r.status_code == 204
    obs = odi_of(http, qr_id)
    assert (obs["status"], obs["meta"]["versionId"]) == ("entered-in-error", "4")
    assert value(obs) == 32.0  # what was asserted stays readable
    assert count(http, "Observation", code=ODI, status="final") == 0


def test_conditional_create_update_and_batch(http) -> None:
    pid = create(http, patient("odi-8"))
    ident = {"system": "urn:site:forms", "value": "form-1"}
    qr = odi_response(f"Patient/{pid}", SIXTEEN, identifier=ident)
    criteria = "identifier=urn:site:forms|form-1"

    r = http.post("/QuestionnaireResponse", json=qr, headers={"If-None-Exist": criteria})
    assert r.status_code == 201, r.content
    qr_id = r.json()["id"]
    assert value(odi_of(http, qr_id)) == 32.0
    r = http.post("/QuestionnaireResponse", json=qr, headers={"If-None-Exist": criteria})
    assert r.status_code == 200  # exists: nothing written, nothing scored again
    assert odi_of(http, qr_id)["meta"]["versionId"] == "1"

    changed = odi_response(f"Patient/{pid}", [0] * 10, identifier=ident)
    r = http.put(f"/QuestionnaireResponse?{criteria}", json=changed)
    assert r.status_code == 200, r.content
    obs = odi_of(http, qr_id)
    assert (value(obs), obs["meta"]["versionId"]) == (0.0, "2")

    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": odi_response(f"Patient/{pid}", [1] * 10),
                "request": {"method": "POST", "url": "QuestionnaireResponse"},
            }
        ],
    }
    r = http.post("", json=batch)
    assert r.status_code == 200, r.content
    entry = r.json()["entry"][0]
    assert entry["response"]["status"] == "201 Created"
    assert value(odi_of(http, entry["resource"]["id"])) == 20.0


def test_other_questionnaires_are_not_scored(http) -> None:
    pid = create(http, patient("odi-9"))
    qr = odi_response(f"Patient/{pid}", SIXTEEN, questionnaire="https://example.org/Q/odi")
    qr_id = create(http, qr)
    assert http.get(f"/Observation/odi-{qr_id}").status_code == 404
    # an ODI response turned into something else withdraws its score
    odi_id = create(http, odi_response(f"Patient/{pid}", SIXTEEN))
    qr["id"] = odi_id
    assert http.put(f"/QuestionnaireResponse/{odi_id}", json=qr).status_code == 200
    assert odi_of(http, odi_id)["status"] == "entered-in-error"


def test_max_missing_is_a_setting(db_url: str) -> None:
    app = create_app({"db": db_url, "odi_max_missing": 2})
    try:
        client = app.test_client()
        eight = [1, 1, 1, 1, 1, 1, 1, 1, None, None]
        r = client.post("/fhir/QuestionnaireResponse", json=odi_response("Patient/p", eight))
        assert r.status_code == 201, r.get_data(as_text=True)
        qr_id = json.loads(r.get_data())["id"]
        obs = json.loads(client.get(f"/fhir/Observation/odi-{qr_id}").get_data())
        assert value(obs) == 20.0 and "dataAbsentReason" not in obs
    finally:
        app.extensions["kyphofhir"].store.dispose()


def test_an_id_taken_by_another_observation_is_a_conflict(http) -> None:
    r = http.put(
        "/Observation/odi-taken",
        json={
            "resourceType": "Observation",
            "id": "odi-taken",
            "status": "final",
            "code": {"text": "something else"},
        },
    )
    assert r.status_code == 201
    body = odi_response(None, SIXTEEN, id="taken", status="in-progress")
    assert http.put("/QuestionnaireResponse/taken", json=body).status_code == 201
    body["status"] = "completed"
    r = http.put("/QuestionnaireResponse/taken", json=body)
    assert r.status_code == 409, r.content
    assert details_code(r) == "MSG_VERSION_AWARE_CONFLICT"
    assert "odi-taken" in r.json()["issue"][0]["diagnostics"]


def test_licensed_texts_are_merged_on_read_only(db_url: str, tmp_path) -> None:
    texts = tmp_path / "odi-texts.local.json"  # placeholders, not the licensed texts
    texts.write_text(json.dumps({"odi-1": {"text": "Q1", "answers": [f"A{k}" for k in range(6)]}}))
    questionnaire = {
        "resourceType": "Questionnaire",
        "url": codes.QUESTIONNAIRE_ODI,
        "status": "active",
        "item": [
            {
                "linkId": "odi-1",
                "type": "choice",
                "text": codes.ODI_SECTIONS["odi-1"],
                "answerOption": [
                    {"valueCoding": codes.coding(codes.CS_ODI, f"odi-1-{k}", f"level {k}")}
                    for k in range(6)
                ],
            }
        ],
    }
    app = create_app({"db": db_url, "odi_texts_file": str(texts)})
    try:
        client = app.test_client()

        def get(path: str) -> Any:
            return json.loads(client.get(f"/fhir/{path}").get_data())

        stored = {**questionnaire, "id": "odi-t"}
        assert client.put("/fhir/Questionnaire/odi-t", json=stored).status_code == 201
        read = get("Questionnaire/odi-t")
        assert read["item"][0]["text"] == "Q1"
        assert read["item"][0]["answerOption"][5]["valueCoding"]["display"] == "A5"
        # stored, searched and versioned content stays without the texts
        assert get("Questionnaire/odi-t/_history/1")["item"][0]["text"] == "Pain intensity"
        found = get("Questionnaire?_id=odi-t")
        assert found["entry"][0]["resource"]["item"][0]["text"] == "Pain intensity"
        texts.write_text("not json")  # a broken file: shipped titles, no failure
        assert get("Questionnaire/odi-t")["item"][0]["text"] == "Pain intensity"
    finally:
        app.extensions["kyphofhir"].store.dispose()


def test_a_response_the_score_cannot_be_recorded_for_is_422(http) -> None:
    """No subject: the ODI Observation (profile odi-observation) would be invalid."""
    r = http.post("/QuestionnaireResponse", json=odi_response(None, SIXTEEN))
    assert r.status_code == 422, r.content
    issue = r.json()["issue"][0]
    assert "ODI score Observation" in issue["diagnostics"]
    assert issue["expression"] == ["Observation.subject"]
    assert count(http, "QuestionnaireResponse") == 0
    # not scored yet, so nothing to record: accepted
    draft = odi_response(None, SIXTEEN, status="in-progress")
    assert http.post("/QuestionnaireResponse", json=draft).status_code == 201
