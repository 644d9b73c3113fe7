"""Oswestry Disability Index: scoring a QuestionnaireResponse and the ODI total Observation.

The rule is Fairbank & Pynsent, Spine 2000;25(22):2940-52 (ODI v2.1a; terminology.md
section 7.7): each of the ten sections scores 0 (first statement) to 5 (last); the total
is ``sum of answered sections / (5 x sections answered) x 100`` %. Up to ``max_missing``
sections may be unanswered (default 1); beyond that the instrument defines no score, so
the Observation carries a ``dataAbsentReason`` instead of a made-up number. Several
statements marked in one section: the highest counts. A not-applicable section (e.g.
sex life) counts as missing. The value is kept unrounded; round only for display.

Pure: FHIR JSON in, FHIR JSON out, no store and no HTTP (``services/study_hooks.py``
decides when to score and writes the result). No ODI statement text appears here, only
codes, ordinal values and section titles.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from kyphofhir.errors import Unprocessable
from kyphofhir.fhir.references import is_valid_id
from kyphofhir.study import codes

SECTIONS: tuple[str, ...] = tuple(codes.ODI_SECTIONS)
MAX_LEVEL = 5

SCORED_STATUSES = frozenset({"completed", "amended", "stopped"})
"""QuestionnaireResponse statuses whose answers are final and therefore scored.

``in-progress`` answers are provisional and are not scored; ``stopped`` (abandoned) is
scored, because its answers are final and the ``max_missing`` rule is exactly what decides
whether an incomplete response still has a score. ``entered-in-error`` withdraws it."""

ABSENT_REASON = "not-applicable"
"""``dataAbsentReason`` of an unscorable response: under the published rule no ODI value
exists for it (like a value that does not apply), whereas ``error`` would tell the
researcher a system or workflow failed, which is not what happened."""

_SECTION_LIKE = re.compile(r"^odi-\d+$")
_ANSWER_CODE = re.compile(r"^(?P<section>odi-\d+)-(?P<level>\d+)$")

# Fairbank's interpretation bands of the percentage, upper bounds inclusive.
BANDS: tuple[tuple[float, str], ...] = (
    (20, "minimal disability"),
    (40, "moderate disability"),
    (60, "severe disability"),
    (80, "crippled"),
    (100, "bed-bound or exaggerating symptoms"),
)


@dataclass(frozen=True)
class OdiScore:
    """The counted level (0-5) of each answered section and the missing-section limit."""

    levels: Mapping[str, int]
    max_missing: int = 1

    @property
    def answered(self) -> int:
        return len(self.levels)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(s for s in SECTIONS if s not in self.levels)

    @property
    def raw_sum(self) -> int:
        return sum(self.levels.values())

    @property
    def percent(self) -> float | None:
        """The unrounded ODI in %, or None when too many sections are missing."""
        if self.answered == 0 or len(self.missing) > self.max_missing:
            return None
        return 100 * self.raw_sum / (5 * self.answered)


def canonical_url(value: Any) -> str | None:
    """A canonical without its ``|version`` part (None if it is not a string)."""
    return value.split("|", 1)[0] if isinstance(value, str) else None


def is_odi_response(resource: Mapping[str, Any]) -> bool:
    """A QuestionnaireResponse of the ODI Questionnaire (any version of it)."""
    return (
        resource.get("resourceType") == "QuestionnaireResponse"
        and canonical_url(resource.get("questionnaire")) == codes.QUESTIONNAIRE_ODI
    )


def observation_id(response_id: str) -> str:
    """The id of *the* ODI Observation of a response: ``odi-<response id>``.

    Deterministic, so the server finds it without a search and an update of the response
    updates the same Observation. Ids too long for that (64 characters at most) get a
    name-based UUID instead.
    """
    candidate = f"odi-{response_id}"
    if is_valid_id(candidate):
        return candidate
    return f"odi-{uuid.uuid5(uuid.NAMESPACE_URL, codes.QUESTIONNAIRE_ODI + '/' + response_id)}"


def score_response(response: Mapping[str, Any], *, max_missing: int = 1) -> OdiScore:
    """Score an ODI QuestionnaireResponse; :class:`Unprocessable` names a bad answer.

    Sections are recognised by ``linkId`` (``odi-1`` ... ``odi-10``), also inside groups.
    An answer is a ``valueCoding`` ``odi-N-0`` ... ``odi-N-5`` (system ``odi`` or none),
    a ``valueCoding`` with the R4 ``ordinalValue`` extension, or a ``valueInteger`` 0-5.
    A ``valueCoding`` from ``data-absent-reason`` marks the section as not answered (for
    a not-applicable section). Other items (a score a form computed itself) are ignored:
    the server's score is the authoritative one.
    """
    if max_missing < 0:
        raise ValueError(f"max_missing must be 0 or more, not {max_missing}")
    levels: dict[str, int] = {}
    for section, path, item in _section_items(response.get("item"), "QuestionnaireResponse"):
        for j, answer in enumerate(_list(item.get("answer"))):
            level = _answer_level(section, f"{path}.answer[{j}]", answer)
            if level is not None:
                levels[section] = max(level, levels.get(section, 0))
    return OdiScore(levels, max_missing)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _section_items(items: Any, path: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(section, FHIRPath, item) of every ODI section item, depth first."""
    for i, item in enumerate(_list(items)):
        if not isinstance(item, dict):
            continue
        here = f"{path}.item[{i}]"
        link_id = item.get("linkId")
        if link_id in codes.ODI_SECTIONS:
            yield link_id, here, item
        elif isinstance(link_id, str) and _SECTION_LIKE.match(link_id):
            raise Unprocessable(
                f"ODI item {link_id!r} is not a section of the Oswestry Disability Index "
                f"(odi-1 ... odi-10).",
                expression=[f"{here}.linkId"],
                code="value",
            )
        yield from _section_items(item.get("item"), here)
        for j, answer in enumerate(_list(item.get("answer"))):
            if isinstance(answer, dict):
                yield from _section_items(answer.get("item"), f"{here}.answer[{j}]")


def _answer_level(section: str, path: str, answer: Any) -> int | None:
    """The ordinal 0-5 of one answer; None for an explicit "not answered"."""
    if not isinstance(answer, dict):
        return None
    if "valueCoding" in answer:
        return _coding_level(section, f"{path}.valueCoding", answer["valueCoding"])
    if "valueInteger" in answer:
        value = answer["valueInteger"]
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_LEVEL:
            return value
        raise Unprocessable(
            f"ODI item {section!r}: valueInteger {value!r} is not a section score 0-5.",
            expression=[f"{path}.valueInteger"],
            code="value",
        )
    kinds = [k for k in answer if k.startswith("value")]
    if not kinds:
        return None  # an answer that only carries nested items
    raise Unprocessable(
        f"ODI item {section!r}: {kinds[0]} is not an ODI answer; use valueCoding "
        f"{section}-0 ... {section}-5 or valueInteger 0-5.",
        expression=[f"{path}.{kinds[0]}"],
        code="value",
    )


def _coding_level(section: str, path: str, coding: Any) -> int | None:
    if not isinstance(coding, dict):
        return None
    system, code = coding.get("system"), coding.get("code")
    if system == codes.DATA_ABSENT_REASON:
        return None
    from_code: int | None = None
    if system in (codes.CS_ODI, None) and isinstance(code, str):
        m = _ANSWER_CODE.match(code)
        if m and m["section"] == section and int(m["level"]) <= MAX_LEVEL:
            from_code = int(m["level"])
        elif system == codes.CS_ODI or m:
            raise _bad_code(section, path, system, code)
    from_ext = _ordinal_value(section, path, coding)
    if from_code is not None and from_ext is not None and from_code != from_ext:
        raise Unprocessable(
            f"ODI item {section!r}: answer {code!r} has ordinalValue {from_ext}, "
            f"but its code means {from_code}.",
            expression=[f"{path}.extension"],
            code="value",
        )
    level = from_code if from_code is not None else from_ext
    if level is None:
        raise _bad_code(section, path, system, code)
    return level


def _bad_code(section: str, path: str, system: Any, code: Any) -> Unprocessable:
    return Unprocessable(
        f"ODI item {section!r}: answer {system or ''}|{code or ''} is not one of "
        f"{codes.CS_ODI}|{section}-0 ... {section}-5 and has no ordinalValue extension.",
        expression=[path],
        code="code-invalid",
    )


def _ordinal_value(section: str, path: str, coding: Mapping[str, Any]) -> int | None:
    for ext in _list(coding.get("extension")):
        if not isinstance(ext, dict) or ext.get("url") != codes.EXT_ORDINAL_VALUE:
            continue
        raw = ext.get("valueDecimal", ext.get("valueInteger"))
        try:
            value = Decimal(str(raw))
        except InvalidOperation:
            value = Decimal(-1)
        if isinstance(raw, bool) or value != value.to_integral_value() or not 0 <= value <= 5:
            raise Unprocessable(
                f"ODI item {section!r}: ordinalValue {raw!r} is not a section score 0-5.",
                expression=[f"{path}.extension"],
                code="value",
            )
        return int(value)
    return None


def band(percent: float) -> str:
    """Fairbank's interpretation of a score (0-20 % minimal ... 81-100 % bed-bound)."""
    for upper, label in BANDS:
        if percent <= upper:
            return label
    return BANDS[-1][1]


def display(percent: float) -> str:
    """The score for people: one decimal (the stored value stays unrounded)."""
    return f"{percent:.1f} %"


def observation(
    response: Mapping[str, Any], score: OdiScore, *, with_band: bool = True
) -> dict[str, Any]:
    """The ODI total Observation (LOINC 97909-6) derived from ``response`` (which has an id).

    Subject, encounter, ``workflow-researchStudy``, ``effectiveDateTime`` (= authored) and
    ``performer`` (= author, unless a Device) come from the response, as SDC extraction
    does; the raw sum and the number of answered sections are always recorded.
    """
    rid = response.get("id")
    if not isinstance(rid, str):
        raise ValueError("the QuestionnaireResponse needs an id to be referenced")
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_id(rid),
        "meta": {"profile": [codes.structure_definition("odi-observation")]},
    }
    study = [
        e
        for e in _list(response.get("extension"))
        if isinstance(e, dict) and e.get("url") == codes.EXT_RESEARCH_STUDY
    ]
    if study:
        obs["extension"] = study
    obs["status"] = "amended" if response.get("status") == "amended" else "final"
    obs["category"] = [{"coding": [codes.coding(codes.OBSERVATION_CATEGORY, "survey", "Survey")]}]
    obs["code"] = {"coding": [codes.ODI_SCORE], "text": "Oswestry Disability Index score"}
    for key in ("subject", "encounter"):
        if isinstance(response.get(key), dict):
            obs[key] = response[key]
    if isinstance(response.get("authored"), str):
        obs["effectiveDateTime"] = response["authored"]
    author = response.get("author")
    if isinstance(author, dict) and not str(author.get("reference", "")).startswith("Device/"):
        obs["performer"] = [author]
    percent = score.percent
    if percent is None:
        obs["dataAbsentReason"] = {
            "coding": [codes.coding(codes.DATA_ABSENT_REASON, ABSENT_REASON, "Not Applicable")],
            "text": (
                f"{len(score.missing)} of 10 sections unanswered; the ODI allows at most "
                f"{score.max_missing}"
            ),
        }
    else:
        obs["valueQuantity"] = codes.quantity(percent, codes.ODI_UNIT)
        if with_band:
            obs["interpretation"] = [{"text": f"{band(percent)} (Fairbank)"}]
    obs["derivedFrom"] = [{"reference": f"QuestionnaireResponse/{rid}"}]
    obs["component"] = [
        _component("odi-raw-sum", score.raw_sum),
        _component("odi-answered", score.answered),
    ]
    return obs


def _component(measure: str, value: int) -> dict[str, Any]:
    m = codes.MEASURES[measure]
    return {
        "code": {"coding": [codes.coding(codes.CS_MEASURE, m.code, m.display)]},
        "valueQuantity": codes.quantity(value, m.unit),
    }


# --- licensed statement texts (a site's local file, never in the repository) ---------


@dataclass(frozen=True)
class SectionTexts:
    """The licensed wording of one section: its question and its six statements."""

    text: str
    answers: tuple[str, str, str, str, str, str]


def parse_texts(data: Any) -> dict[str, SectionTexts]:
    """Check the texts file's JSON: ``{"odi-1": {"text": ..., "answers": [6 texts]}, ...}``.

    Sections may be left out (they keep the shipped titles); anything else is a
    ``ValueError`` naming the section, so a broken file is noticed rather than half used.
    """
    if not isinstance(data, dict):
        raise ValueError("the ODI texts file must hold a JSON object keyed by odi-1 ... odi-10")
    out: dict[str, SectionTexts] = {}
    for section, entry in data.items():
        if section not in codes.ODI_SECTIONS:
            raise ValueError(f"unknown ODI section {section!r} in the texts file")
        text = entry.get("text") if isinstance(entry, dict) else None
        answers = entry.get("answers") if isinstance(entry, dict) else None
        if (
            not isinstance(text, str)
            or not isinstance(answers, list)
            or len(answers) != len(codes.ODI_LEVELS)
            or not all(isinstance(a, str) for a in answers)
        ):
            raise ValueError(
                f"ODI texts of {section!r} need a string 'text' and a list of 6 'answers'"
            )
        out[section] = SectionTexts(text, tuple(answers))
    return out


def merge_texts(
    questionnaire: Mapping[str, Any], texts: Mapping[str, SectionTexts]
) -> dict[str, Any]:
    """A copy of the ODI Questionnaire with a site's licensed texts as item texts and
    answer displays (matched by linkId and by the level in each answer's code)."""
    out = copy.deepcopy(dict(questionnaire))

    def walk(items: Any) -> None:
        for item in _list(items):
            if not isinstance(item, dict):
                continue
            section = texts.get(str(item.get("linkId")))
            if section is not None:
                item["text"] = section.text
                for option in _list(item.get("answerOption")):
                    coding = option.get("valueCoding") if isinstance(option, dict) else None
                    m = _ANSWER_CODE.match(str((coding or {}).get("code", "")))
                    if coding is not None and m and int(m["level"]) <= MAX_LEVEL:
                        coding["display"] = section.answers[int(m["level"])]
            walk(item.get("item"))

    walk(out.get("item"))
    return out
