"""Regenerate the study examples in docs/ from ``kyphofhir.study.builders``.

    .venv/bin/python docs/examples/generate.py          # rewrite the files
    .venv/bin/python docs/examples/generate.py --check  # exit 1 if any is stale

Writes ``docs/examples/research-study.json`` (the study, created once with
``PUT ResearchStudy/kyphoplasty-myeloma``), ``docs/examples/enroll-transaction.json`` (one
patient enrolled with a fracture, a kyphoplasty and baseline outcomes, all references
``urn:uuid:``) and the JSON blocks between ``<!-- example:NAME -->`` markers in
``docs/study-model.md``. ``tests/integration/test_enroll_example.py`` runs ``--check``, so
the documentation always shows what the builders and the ODI scoring produce. No ODI
statement text is involved: answers are codes with generic labels.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kyphofhir.study import builders as b
from kyphofhir.study import codes, odi

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "study-model.md"
STUDY = b.DEFAULT_STUDY_ID
SUBJECT = "BKP-001"
LEVEL = "L1"
ODI_LEVELS: list[int | None] = [4, 3, 4, 3, 3, 4, 3, None, 3, 4]  # 31 of 45: 68.89 %

Json = dict[str, Any]


def research_study() -> Json:
    return b.research_study(STUDY, period_start="2024-01-01")


def enrollment(
    subject: str = SUBJECT,
    *,
    arm: str = "bkp",
    level: str = LEVEL,
    vas_mm: float = 72,
    odi_levels: Sequence[int | None] = ODI_LEVELS,
) -> list[Json]:
    """Everything one enrolment creates: patient, subject, conditions, the kyphoplasty
    (BKP arm), the baseline visit and its outcomes. The ODI total is not among them: the
    server computes it from the QuestionnaireResponse."""
    baseline, index = "2024-03-04", "2024-03-05"
    out = [
        b.patient(STUDY, subject, sex="male", birth_date="1951-06-12"),
        b.research_subject(STUDY, subject, arm=arm, enrolled=baseline, index_date=index),
        b.myeloma_condition(STUDY, subject, diagnosed="2023-11-20"),
        b.fracture_condition(STUDY, subject, level),
    ]
    if arm == "bkp":
        out.append(b.kyphoplasty_procedure(STUDY, subject, level, performed=index))
    out += [
        b.visit_encounter(STUDY, subject, "baseline", arm=arm, date=baseline),
        b.vas_observation(STUDY, subject, "baseline", date=baseline, value_mm=vas_mm),
        *(
            b.vertebral_height_observation(
                STUDY, subject, "baseline", level, measure, date=baseline, value_mm=value
            )
            for measure, value in zip(codes.HEIGHT_MEASURES, (18.2, 16.9, 26.4), strict=True)
        ),
        b.kyphosis_angle_observation(
            STUDY, subject, "baseline", level, date=baseline, value_deg=14.5
        ),
        b.odi_questionnaire_response(STUDY, subject, "baseline", date=baseline, levels=odi_levels),
    ]
    return out


def follow_up(subject: str, timepoint: str, *, arm: str, date: str, vas_mm: float) -> list[Json]:
    """A later visit with its VAS (used by the tests of the researcher searches)."""
    return [
        b.visit_encounter(STUDY, subject, timepoint, arm=arm, date=date),
        b.vas_observation(STUDY, subject, timepoint, date=date, value_mm=vas_mm),
    ]


# --- builder resources -> a transaction an EHR could send ------------------------------


def _identifier(resource: Json) -> tuple[str, str]:
    ident = resource["identifier"]
    first = ident[0] if isinstance(ident, list) else ident
    return first["system"], first["value"]


def _key(resource: Json) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def _full_url(resource: Json) -> str:
    rid = resource["id"]
    try:
        return f"urn:uuid:{uuid.UUID(rid)}"
    except ValueError:
        return f"urn:uuid:{uuid.uuid5(b.NAMESPACE, _key(resource))}"


def _criteria(resource: Json) -> str:
    system, value = _identifier(resource)
    return f"identifier={system}|{value}"


def transaction(resources: Iterable[Json], *, elsewhere: Iterable[Json] = ()) -> Json:
    """POST entries with server-assigned ids: ``fullUrl`` ``urn:uuid:``, references between
    entries by that ``urn:uuid:``, references to ``elsewhere`` (already stored) as
    conditional references on their identifier, and ``ifNoneExist`` on each entry's
    identifier, so sending the Bundle again creates nothing."""
    resources = list(resources)
    targets = {_key(r): _full_url(r) for r in resources}
    targets |= {_key(r): f"{r['resourceType']}?{_criteria(r)}" for r in elsewhere}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: targets.get(v, v) if k == "reference" else rewrite(v) for k, v in node.items()
            }
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    entries = []
    for resource in resources:
        body = rewrite({k: v for k, v in resource.items() if k != "id"})
        rtype = resource["resourceType"]
        entries.append(
            {
                "fullUrl": _full_url(resource),
                "resource": body,
                "request": {"method": "POST", "url": rtype, "ifNoneExist": _criteria(resource)},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def enroll_transaction() -> Json:
    """The documented enrolment: the study by conditional create, then the patient."""
    return transaction([research_study(), *enrollment()])


# --- the per-resource examples of docs/study-model.md -------------------------------------


def questionnaire_excerpt() -> Json:
    """The served ODI Questionnaire (``profiles/Questionnaire-odi.json``): one section, three
    of its six answer options, and the score item."""
    served = json.loads((HERE.parents[1] / "profiles" / "Questionnaire-odi.json").read_text())
    shown = [dict(i) for i in served["item"] if i["linkId"] in ("odi-4", "odi-score")]
    options = shown[0]["answerOption"]
    shown[0]["answerOption"] = [options[0], options[1], options[-1]]  # levels 0, 1 and 5
    return {**served, "item": shown}


def examples() -> dict[str, Json]:
    resources = [research_study(), *enrollment()]

    def by_profile(name: str) -> Json:
        url = codes.structure_definition(name)
        return next(r for r in resources if url in r.get("meta", {}).get("profile", []))

    response = resources[-1]
    assert response["resourceType"] == "QuestionnaireResponse"
    return {
        "ResearchStudy": resources[0],
        "ResearchSubject": by_profile("study-subject"),
        "Patient": resources[1],
        "myeloma": by_profile("myeloma-condition"),
        "fracture": by_profile("vertebral-fracture-condition"),
        "Procedure": by_profile("kyphoplasty-procedure"),
        "Encounter": by_profile("study-visit-encounter"),
        "VAS": by_profile("vas-observation"),
        "ODI": odi.observation(response, odi.score_response(response)),
        "height": by_profile("vertebral-height-observation"),
        "kyphosis": by_profile("kyphosis-angle-observation"),
        "Questionnaire": questionnaire_excerpt(),
        "QuestionnaireResponse": {**response, "item": response["item"][:2]},
    }


# --- files ---------------------------------------------------------------------------------

_BLOCK = re.compile(r"(<!-- example:(?P<name>\w+) -->\n)```json\n.*?```\n", re.DOTALL)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def render_doc(text: str, blocks: dict[str, Json]) -> str:
    def replace(m: re.Match[str]) -> str:
        return f"{m[1]}```json\n{dumps(blocks[m['name']])}```\n"

    return _BLOCK.sub(replace, text)


def outputs() -> dict[Path, str]:
    return {
        HERE / "research-study.json": dumps(research_study()),
        HERE / "enroll-transaction.json": dumps(enroll_transaction()),
        DOC: render_doc(DOC.read_text(encoding="utf-8"), examples()),
    }


def main(argv: Sequence[str]) -> int:
    stale = [p for p, text in outputs().items() if not p.exists() or p.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"stale: {path} (run docs/examples/generate.py)", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs().items():
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
