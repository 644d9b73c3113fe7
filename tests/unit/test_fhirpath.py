"""The direct path walker must agree with fhirpathpy on every plain branch it takes over."""

from __future__ import annotations

from typing import Any

import pytest

from kyphofhir.search.fhirpath import (
    _PLAIN,
    AS_CALL,
    CAST_TAIL,
    WHERE_RESOLVE,
    _compile_branch,
    compile_expression,
    fhirpathpy_evaluator,
    plain_path,
)
from kyphofhir.search.registry import SearchRegistry, split_union

REGISTRY = SearchRegistry.default()

SAMPLES: list[dict[str, Any]] = [
    {
        "resourceType": "Observation",
        "id": "o",
        "meta": {"tag": [{"system": "s", "code": "t"}], "profile": ["http://p"], "source": "x"},
        "status": "final",
        "category": [{"coding": [{"system": "c", "code": "survey"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "38214-3"}], "text": "VAS"},
        "subject": {"reference": "Patient/1"},
        "encounter": {"reference": "Encounter/e"},
        "effectivePeriod": {"start": "2024-01-01", "end": "2024-02-01"},
        "valueQuantity": {
            "value": 42,
            "unit": "mm",
            "system": "http://unitsofmeasure.org",
            "code": "mm",
        },
        "bodySite": {"coding": [{"code": "23215003"}]},
        "component": [
            {"code": {"text": "a"}, "valueQuantity": {"value": 3}},
            {"code": {"text": "b"}, "valueCodeableConcept": {"text": "c"}},
        ],
        "derivedFrom": [{"reference": "QuestionnaireResponse/q"}],
    },
    {
        "resourceType": "Patient",
        "id": "p",
        "identifier": [{"system": "urn:x", "value": "1"}],
        "name": [{"family": "Müller", "given": ["Anna", "B"]}],
        "telecom": [{"system": "phone", "value": "123"}],
        "address": [{"city": "Berlin", "line": ["A 1"], "postalCode": "10115"}],
        "birthDate": "1950-01-01",
        "deceasedDateTime": "2020-01-01",
        "generalPractitioner": [{"reference": "Practitioner/1"}],
        "link": [{"other": {"reference": "Patient/2"}, "type": "seealso"}],
    },
    {
        "resourceType": "Questionnaire",
        "id": "q",
        "url": "https://kyphofhir.org/fhir/Questionnaire/odi",
        "status": "active",
        "code": [{"system": "http://loinc.org", "code": "97908-8"}],
        "item": [{"linkId": "1", "type": "choice", "item": [{"linkId": "1.1", "type": "string"}]}],
    },
    {
        "resourceType": "ImagingStudy",
        "id": "i",
        "status": "available",
        "subject": {"reference": "Patient/p"},
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
        "series": [
            {
                "uid": "1.2.3.4",
                "modality": {"code": "DX"},
                "bodySite": {"code": "122496007"},
                "instance": [{"uid": "1.2.3.4.5", "sopClass": {"code": "urn:oid:1.2"}}],
            }
        ],
    },
]


def _plain_branches() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for sample in SAMPLES:
        for param in REGISTRY.indexed(sample["resourceType"]):
            for branch in split_union(param.expression or ""):
                if _PLAIN.match(branch):
                    cases.append((branch, sample))
    return cases


@pytest.mark.parametrize(
    ("branch", "sample"), _plain_branches(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_walker_equals_fhirpathpy(branch: str, sample: dict[str, Any]) -> None:
    m = _PLAIN.match(branch)
    assert m
    walked = plain_path(m.group(1), m.group(2)[1:].split("."), m.group(3))(sample)
    # fhirpathpy gets the element-wise ofType() form of "as" (see rewrite_for_indexing)
    expected = fhirpathpy_evaluator(branch)(sample)
    assert [v for _, v in walked] == [v for _, v in expected]
    # backbone elements have no FHIR type of their own: fhirpathpy names them "object" or
    # "BackboneElement" depending on its global TypeInfo state
    anonymous = {"BackboneElement", "object"}
    assert [t for t, _ in walked if t not in anonymous] == [
        t for t, _ in expected if t not in anonymous
    ]


def _where_resolve_branches() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for sample in SAMPLES:
        for param in REGISTRY.indexed(sample["resourceType"]):
            for branch in split_union(param.expression or ""):
                if WHERE_RESOLVE.match(branch):
                    cases.append((branch, sample))
    return cases


@pytest.mark.parametrize(
    ("branch", "sample"), _where_resolve_branches(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_typed_reference_fast_path_equals_fhirpathpy(branch: str, sample: dict[str, Any]) -> None:
    for variant in (sample, {**sample, "subject": {"reference": "Group/g"}}):
        assert _compile_branch(branch)(variant) == fhirpathpy_evaluator(branch)(variant)


def test_most_branches_take_the_fast_path() -> None:
    cases = _plain_branches()
    assert len(cases) > 60


def test_cast_then_path_fast_path_equals_fhirpathpy() -> None:
    branch = "(Observation.value as CodeableConcept).text"
    assert CAST_TAIL.match(branch)
    sample = {**SAMPLES[0], "valueCodeableConcept": {"text": "severe"}}
    del sample["valueQuantity"]
    assert _compile_branch(branch)(sample) == fhirpathpy_evaluator(branch)(sample)
    assert _compile_branch(branch)(SAMPLES[0]) == fhirpathpy_evaluator(branch)(SAMPLES[0]) == []


@pytest.mark.parametrize("cast", ["dateTime", "Period", "string", "Age"])
def test_as_function_fast_path_equals_fhirpathpy(cast: str) -> None:
    branch = f"Condition.onset.as({cast})"
    assert AS_CALL.match(branch)
    for onset in (
        {"onsetDateTime": "2024-01-01"},
        {"onsetString": "childhood"},
        {"onsetPeriod": {"start": "2020"}},
        {},
    ):
        sample = {"resourceType": "Condition", "subject": {"reference": "Patient/1"}, **onset}
        assert _compile_branch(branch)(sample) == fhirpathpy_evaluator(branch)(sample)


def test_as_on_a_collection_is_element_wise() -> None:
    values = fhirpathpy_evaluator("(Observation.component.value as Quantity)")(SAMPLES[0])
    assert values == [("Quantity", {"value": 3})]


def test_resolve_is_rewritten_for_references() -> None:
    evaluate = compile_expression("Observation.subject.where(resolve() is Patient)")
    assert evaluate(SAMPLES[0]) == [("Reference", {"reference": "Patient/1"})]
    group = {**SAMPLES[0], "subject": {"reference": "Group/1"}}
    assert evaluate(group) == []
    absolute = {**SAMPLES[0], "subject": {"reference": "https://x.org/fhir/Patient/9/_history/2"}}
    assert len(evaluate(absolute)) == 1
