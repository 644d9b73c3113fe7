"""ODI scoring (Fairbank & Pynsent 2000) and the ODI total Observation, without a server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from kyphofhir.config import Settings
from kyphofhir.errors import Unprocessable
from kyphofhir.fhir.models import validate_resource
from kyphofhir.study import codes, odi

SECTIONS = list(codes.ODI_SECTIONS)


def answer(section: str, level: int) -> dict[str, Any]:
    return {"valueCoding": codes.coding(codes.CS_ODI, codes.odi_answer_code(section, level))}


def response(levels: Mapping[str, int | list[int]], **extra: Any) -> dict[str, Any]:
    """An ODI QuestionnaireResponse; a list gives several answers in one section."""
    items = []
    for section, value in levels.items():
        values = value if isinstance(value, list) else [value]
        items.append({"linkId": section, "answer": [answer(section, v) for v in values]})
    return {
        "resourceType": "QuestionnaireResponse",
        "id": "qr-1",
        "questionnaire": codes.QUESTIONNAIRE_ODI,
        "status": "completed",
        "item": items,
        **extra,
    }


# 16 points over ten sections: the published worked example
SIXTEEN = dict(zip(SECTIONS, [3, 2, 2, 1, 2, 2, 1, 0, 2, 1], strict=True))


def test_published_example_all_answered() -> None:
    score = odi.score_response(response(SIXTEEN))
    assert (score.raw_sum, score.answered, score.missing) == (16, 10, ())
    assert score.percent == 32.0


def test_published_example_one_missing_is_kept_unrounded() -> None:
    nine = {s: v for s, v in SIXTEEN.items() if s != "odi-8"}  # sex life: 0 points
    score = odi.score_response(response(nine))
    assert (score.raw_sum, score.answered, score.missing) == (16, 9, ("odi-8",))
    percent = score.percent
    assert percent is not None
    assert percent == pytest.approx(35.5555555555, abs=1e-9)
    assert percent != round(percent, 1)  # not rounded (nor truncated)
    assert odi.display(percent) == "35.6 %"


def test_all_missing_has_no_score() -> None:
    score = odi.score_response(response({}))
    assert (score.answered, score.raw_sum, score.percent) == (0, 0, None)
    assert score.missing == tuple(SECTIONS)
    assert odi.score_response(response({}), max_missing=10).percent is None


@pytest.mark.parametrize(
    ("missing", "max_missing", "percent"),
    [
        (1, 1, 100 * 9 / 45),
        (2, 1, None),
        (2, 2, 100 * 8 / 40),
        (3, 2, None),
        (0, 0, 20.0),
        (1, 0, None),
    ],
)
def test_max_missing_boundary(missing: int, max_missing: int, percent: float | None) -> None:
    levels = dict.fromkeys(SECTIONS[missing:], 1)
    score = odi.score_response(response(levels), max_missing=max_missing)
    assert score.answered == 10 - missing
    assert score.percent == percent


def test_negative_max_missing_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        odi.score_response(response(SIXTEEN), max_missing=-1)


def test_several_answers_in_one_section_count_the_highest() -> None:
    levels: dict[str, int | list[int]] = dict.fromkeys(SECTIONS, 0)
    levels["odi-4"] = [1, 4, 2]
    score = odi.score_response(response(levels))
    assert score.levels["odi-4"] == 4
    assert score.raw_sum == 4 and score.percent == 8.0


def test_not_applicable_section_counts_as_missing() -> None:
    qr = response({s: 2 for s in SECTIONS if s != "odi-8"})
    qr["item"].append(
        {
            "linkId": "odi-8",
            "answer": [{"valueCoding": codes.coding(codes.DATA_ABSENT_REASON, "not-applicable")}],
        }
    )
    qr["item"].append({"linkId": "odi-9"})  # an item without answer: missing as well
    score = odi.score_response(qr)
    assert score.missing == ("odi-8",)  # odi-9 has its answer in the first item
    assert score.percent == 40.0


def test_other_answer_forms() -> None:
    qr = response({})
    qr["item"] = [
        {"linkId": "odi-1", "answer": [{"valueInteger": 5}]},
        {
            "linkId": "odi-2",
            "answer": [
                {
                    "valueCoding": {
                        "system": "urn:site:forms",
                        "code": "b",
                        "extension": [{"url": codes.EXT_ORDINAL_VALUE, "valueDecimal": 3}],
                    }
                }
            ],
        },
        {"linkId": "odi-3", "answer": [{"valueCoding": {"code": "odi-3-1"}}]},  # no system
        # a group around sections, and a form's own score item (ignored)
        {"linkId": "group", "item": [{"linkId": "odi-4", "answer": [answer("odi-4", 2)]}]},
        {"linkId": "odi-score", "answer": [{"valueDecimal": 99}]},
    ]
    score = odi.score_response(qr)
    assert dict(score.levels) == {"odi-1": 5, "odi-2": 3, "odi-3": 1, "odi-4": 2}


def _bad(section: str, ans: dict[str, Any]) -> Unprocessable:
    qr = response({s: 1 for s in SECTIONS if s != section})
    qr["item"].append({"linkId": section, "answer": [{"valueInteger": 0}, ans]})
    with pytest.raises(Unprocessable) as info:
        odi.score_response(qr)
    assert info.value.status == 422
    assert section in info.value.diagnostics
    assert info.value.expression[0].startswith("QuestionnaireResponse.item[9].answer[1]")
    return info.value


@pytest.mark.parametrize(
    "ans",
    [
        {"valueCoding": codes.coding(codes.CS_ODI, "odi-5-6")},  # level out of range
        {"valueCoding": codes.coding(codes.CS_ODI, "odi-4-2")},  # another section's answer
        {"valueCoding": codes.coding(codes.CS_ODI, "walking")},
        {"valueCoding": {"code": "odi-4-1"}},
        {"valueCoding": codes.coding(codes.LOINC, "LA6111-4")},  # no ordinal value
    ],
)
def test_invalid_answer_codes_name_the_item(ans: dict[str, Any]) -> None:
    assert _bad("odi-5", ans).issue_code == "code-invalid"


@pytest.mark.parametrize(
    "ans",
    [
        {"valueInteger": 6},
        {"valueInteger": -1},
        {"valueBoolean": True},
        {"valueString": "bad"},
        {
            "valueCoding": {
                "code": "x",
                "system": "urn:x",
                "extension": [{"url": codes.EXT_ORDINAL_VALUE, "valueDecimal": 2.5}],
            }
        },
        {  # code and ordinalValue disagree
            "valueCoding": {
                **codes.coding(codes.CS_ODI, "odi-5-1"),
                "extension": [{"url": codes.EXT_ORDINAL_VALUE, "valueDecimal": 4}],
            }
        },
    ],
)
def test_invalid_answer_values_name_the_item(ans: dict[str, Any]) -> None:
    assert _bad("odi-5", ans).issue_code == "value"


def test_unknown_section_is_an_error() -> None:
    qr = response(SIXTEEN)
    qr["item"].append({"linkId": "odi-11", "answer": [{"valueInteger": 1}]})
    with pytest.raises(Unprocessable) as info:
        odi.score_response(qr)
    assert info.value.expression == ("QuestionnaireResponse.item[10].linkId",)


@pytest.mark.parametrize(
    ("questionnaire", "expected"),
    [
        (codes.QUESTIONNAIRE_ODI, True),
        (codes.QUESTIONNAIRE_ODI + "|2.1a", True),
        (codes.QUESTIONNAIRE_ODI + "-other", False),
        (None, False),
    ],
)
def test_is_odi_response(questionnaire: str | None, expected: bool) -> None:
    assert odi.is_odi_response({**response({}), "questionnaire": questionnaire}) is expected


def test_observation_ids_are_deterministic_and_valid() -> None:
    assert odi.observation_id("abc") == "odi-abc"
    long_id = "x" * 64
    assert odi.observation_id(long_id) == odi.observation_id(long_id)
    assert len(odi.observation_id(long_id)) <= 64 and odi.observation_id(long_id) != "odi-x"


def test_fairbank_bands() -> None:
    assert [odi.band(p) for p in (0, 20, 22.2, 40, 41, 60, 80, 100)] == [
        "minimal disability",
        "minimal disability",
        "moderate disability",
        "moderate disability",
        "severe disability",
        "severe disability",
        "crippled",
        "bed-bound or exaggerating symptoms",
    ]


STUDY_EXT = {"url": codes.EXT_RESEARCH_STUDY, "valueReference": {"reference": "ResearchStudy/s"}}


def _context() -> dict[str, Any]:
    return {
        "extension": [STUDY_EXT],
        "subject": {"reference": "Patient/p"},
        "encounter": {"reference": "Encounter/e"},
        "authored": "2024-03-05T10:00:00+01:00",
        "author": {"reference": "Patient/p"},
    }


def test_observation_of_a_scored_response() -> None:
    qr = response(SIXTEEN, **_context())
    obs = odi.observation(qr, odi.score_response(qr))
    validate_resource(obs)  # valid R4
    assert obs["id"] == "odi-qr-1"
    assert obs["meta"]["profile"] == [codes.structure_definition("odi-observation")]
    assert obs["status"] == "final"
    assert obs["code"]["coding"] == [codes.ODI_SCORE]
    assert obs["category"][0]["coding"][0]["code"] == "survey"
    assert obs["valueQuantity"] == codes.quantity(32.0, "%")
    assert "dataAbsentReason" not in obs
    assert obs["derivedFrom"] == [{"reference": "QuestionnaireResponse/qr-1"}]
    assert (obs["subject"], obs["encounter"]) == (qr["subject"], qr["encounter"])
    assert obs["effectiveDateTime"] == qr["authored"]
    assert obs["performer"] == [qr["author"]]
    assert obs["extension"] == [STUDY_EXT]
    components = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in obs["component"]}
    assert components == {
        "odi-raw-sum": codes.quantity(16, "{score}"),
        "odi-answered": codes.quantity(10, "1"),
    }
    assert obs["interpretation"][0]["text"].startswith("moderate disability")


def test_observation_of_an_unscorable_response() -> None:
    qr = response(dict.fromkeys(SECTIONS[:7], 3), **_context(), status="amended")
    obs = odi.observation(qr, odi.score_response(qr))
    validate_resource(obs)
    assert obs["status"] == "amended"
    assert "valueQuantity" not in obs and "interpretation" not in obs
    assert obs["dataAbsentReason"]["coding"] == [
        codes.coding(codes.DATA_ABSENT_REASON, "not-applicable", "Not Applicable")
    ]
    components = {
        c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in obs["component"]
    }
    assert components == {"odi-raw-sum": 21, "odi-answered": 7}  # always recorded


def test_device_author_is_not_a_performer() -> None:
    qr = response(SIXTEEN, author={"reference": "Device/tablet"})
    assert "performer" not in odi.observation(qr, odi.score_response(qr))


def test_max_missing_comes_from_the_environment() -> None:
    assert Settings.load(environ={}).odi_max_missing == 1
    assert Settings.load(environ={"KYPHOFHIR_ODI_MAX_MISSING": "2"}).odi_max_missing == 2


# placeholders only: the licensed statement texts never appear in the repository
TEXTS = {"odi-4": {"text": "Q4 placeholder", "answers": [f"S4.{k}" for k in range(6)]}}


def _questionnaire() -> dict[str, Any]:
    return {
        "resourceType": "Questionnaire",
        "url": codes.QUESTIONNAIRE_ODI,
        "status": "active",
        "item": [
            {
                "linkId": s,
                "type": "choice",
                "text": title,
                "answerOption": [
                    {
                        "valueCoding": codes.coding(
                            codes.CS_ODI,
                            codes.odi_answer_code(s, k),
                            codes.odi_answer_display(s, k),
                        )
                    }
                    for k in codes.ODI_LEVELS
                ],
            }
            for s, title in codes.ODI_SECTIONS.items()
        ],
    }


def test_merge_texts_only_touches_the_listed_sections() -> None:
    questionnaire = _questionnaire()
    merged = odi.merge_texts(questionnaire, odi.parse_texts(TEXTS))
    walking = merged["item"][3]
    assert walking["text"] == "Q4 placeholder"
    assert [o["valueCoding"]["display"] for o in walking["answerOption"]] == TEXTS["odi-4"][
        "answers"
    ]
    assert merged["item"][0] == questionnaire["item"][0]
    assert questionnaire["item"][3]["text"] == "Walking"  # the input is not changed


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"odi-11": {"text": "x", "answers": ["a"] * 6}},
        {"odi-1": {"text": "x", "answers": ["a"] * 5}},
        {"odi-1": {"answers": ["a"] * 6}},
        {"odi-1": "x"},
    ],
)
def test_broken_texts_files_are_rejected(data: Any) -> None:
    with pytest.raises(ValueError):
        odi.parse_texts(data)
