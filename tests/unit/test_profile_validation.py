"""The profile validator: every rule kind, on the shipped profiles and on small ones."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from fhirpathpy import evaluate
from fhirpathpy.models import models

from kyphofhir.fhir.profile_validation import (
    ProfileError,
    ProfileValidator,
    _bounds,
    compile_profile,
)
from kyphofhir.services.validation import validator_for
from kyphofhir.study import codes
from profile_samples import CATEGORY, GOOD, SD, cc

PROFILES = Path(__file__).resolve().parents[2] / "profiles"


@pytest.fixture(scope="module")
def validator() -> ProfileValidator:
    return validator_for(PROFILES)


def _errors(validator: ProfileValidator, resource: dict[str, Any]) -> list[Any]:
    issues = []
    for url in resource["meta"]["profile"]:
        profile = validator.get(url)
        assert profile is not None, url
        issues += validator.validate(resource, profile)
    return [i for i in issues if i.severity == "error"]


def test_every_shipped_profile_has_a_good_example(validator: ProfileValidator) -> None:
    shipped = {url.rsplit("/", 1)[1] for url in validator.urls}
    assert shipped - {"index-date"} == set(GOOD)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_examples_pass(validator: ProfileValidator, name: str) -> None:
    assert _errors(validator, GOOD[name]) == []


def _drop(key: str):
    return lambda r: r.pop(key)


def _set(key: str, value: Any):
    return lambda r: r.__setitem__(key, value)


# (profile, change, rule in diagnostics, issue.code, issue.expression)
BROKEN = [
    # cardinality
    ("vas-observation", _drop("encounter"), "min", "required", "Observation.encounter"),
    ("vas-observation", _drop("valueQuantity"), "min", "required", "Observation.value"),
    ("kyphofhir-patient", _drop("gender"), "min", "required", "Patient.gender"),
    ("study-subject", _drop("assignedArm"), "min", "required", "ResearchSubject.assignedArm"),
    ("kyphoplasty-procedure", _drop("performedDateTime"), "min", "required", "Procedure.performed"),
    (
        "kyphoplasty-procedure",
        _drop("reasonReference"),
        "min",
        "required",
        "Procedure.reasonReference",
    ),
    (
        "vertebral-fracture-condition",
        _set("bodySite", [codes.vertebra("T12"), codes.vertebra("L1")]),
        "max",
        "structure",
        "Condition.bodySite",
    ),
    ("study", _set("arm", [{"name": "bkp"}]), "min", "required", "ResearchStudy.arm"),
    # patterns (CodeableConcept, Quantity)
    (
        "vas-observation",
        _set("code", cc(codes.LOINC, "72514-3")),
        "pattern",
        "value",
        "Observation.code",
    ),
    (
        "vas-observation",
        _set("valueQuantity", codes.quantity(7, "cm")),
        "pattern",
        "value",
        "Observation.valueQuantity",
    ),
    (
        "myeloma-condition",
        _set("code", cc(codes.SNOMED, "1162576007")),
        "pattern",
        "value",
        "Condition.code",
    ),
    (
        "kyphoplasty-procedure",
        _set("code", cc(codes.CS_TREATMENT, "conservative")),
        "pattern",
        "value",
        "Procedure.code",
    ),
    # required bindings (CodeableConcept, string)
    (
        "vertebral-fracture-condition",
        _set("bodySite", [cc(codes.SNOMED, "421060004")]),  # spine, not a vertebra
        "binding",
        "code-invalid",
        "Condition.bodySite[0]",
    ),
    (
        "kyphoplasty-procedure",
        _set("bodySite", [codes.vertebra("L1"), {"text": "C5"}]),
        "binding",
        "code-invalid",
        "Procedure.bodySite[1]",
    ),
    (
        "vertebral-height-observation",
        _set("code", cc(codes.CS_MEASURE, "kyphosis-angle")),
        "binding",
        "code-invalid",
        "Observation.code",
    ),
    (
        "study-subject",
        _set("assignedArm", "surgery"),
        "binding",
        "code-invalid",
        "ResearchSubject.assignedArm",
    ),
    # types: choice and reference targets
    (
        "vas-observation",
        lambda r: r.update(valueString="72"),
        "type",
        "structure",
        "Observation.valueString",
    ),
    (
        "vas-observation",
        _set("subject", {"reference": "Group/g1"}),
        "type",
        "structure",
        "Observation.subject",
    ),
    (
        "kyphoplasty-procedure",
        lambda r: (
            r.update(performedPeriod={"start": "2024-03-01"}, performedDateTime=None)
            or r.pop("performedDateTime")
        ),
        "type",
        "structure",
        "Procedure.performedPeriod",
    ),
    (
        "vertebral-fracture-condition",
        _set(
            "extension", [{"url": codes.EXT_DUE_TO, "valueReference": {"reference": "Patient/p1"}}]
        ),
        "type",
        "structure",
        "Condition.extension[0].valueReference",
    ),
    # slices: extension by url, components by code
    ("vertebral-fracture-condition", _drop("extension"), "min", "required", "Condition.extension"),
    (
        "odi-observation",
        lambda r: r["component"][0]["valueQuantity"].update(value=60),
        "odi-3",
        "invariant",
        "Observation.component[0].valueQuantity",
    ),
    (
        "odi-observation",
        lambda r: r["component"].append(copy.deepcopy(r["component"][1])),
        "max",
        "structure",
        "Observation.component",
    ),
    (
        "odi-observation",
        lambda r: r["component"][1].__setitem__("valueQuantity", codes.quantity(10, "{score}")),
        "pattern",
        "value",
        "Observation.component[1].valueQuantity",
    ),
    # invariants
    (
        "vas-observation",
        lambda r: r["valueQuantity"].update(value=140),
        "vas-1",
        "invariant",
        "Observation.valueQuantity",
    ),
    (
        "vas-observation",
        lambda r: r["valueQuantity"].update(value=-1),
        "vas-1",
        "invariant",
        "Observation.valueQuantity",
    ),
    (
        "vas-observation",
        _set("category", [cc(CATEGORY, "imaging")]),
        "min",
        "required",
        "Observation.category",
    ),
    (
        "vertebral-height-observation",
        _set("category", [cc(CATEGORY, "survey"), cc(CATEGORY, "laboratory")]),
        "min",
        "required",
        "Observation.category",
    ),
    (
        "odi-observation",
        lambda r: r["valueQuantity"].update(value=100.5),
        "odi-1",
        "invariant",
        "Observation.valueQuantity",
    ),
    (
        "odi-observation",
        _set("dataAbsentReason", cc(codes.DATA_ABSENT_REASON, "not-applicable")),
        "odi-2",
        "invariant",
        "Observation",
    ),
    (
        "odi-observation",
        _drop("valueQuantity"),
        "odi-2",
        "invariant",
        "Observation",
    ),
    (
        "vertebral-height-observation",
        lambda r: r["valueQuantity"].update(value=0),
        "vbh-1",
        "invariant",
        "Observation.valueQuantity",
    ),
    (
        "vertebral-height-observation",
        _set("valueQuantity", codes.quantity(2.1, "cm")),
        "pattern",
        "value",
        "Observation.valueQuantity",
    ),
    (
        "vertebral-height-observation",
        _set("bodySite", cc(codes.SNOMED, "122496007")),  # lumbar spine
        "binding",
        "code-invalid",
        "Observation.bodySite",
    ),
    ("vertebral-height-observation", _drop("focus"), "min", "required", "Observation.focus"),
    (
        "kyphosis-angle-observation",
        lambda r: r["valueQuantity"].update(value=95),
        "ka-1",
        "invariant",
        "Observation.valueQuantity",
    ),
    (
        "study-visit-encounter",
        _set("type", [cc(codes.SNOMED, "262061000")]),
        "visit-1",
        "invariant",
        "Encounter",
    ),
    (
        "study-visit-encounter",
        _set("type", [cc(codes.CS_TIMEPOINT, "month-12")]),
        "visit-1",
        "invariant",
        "Encounter",
    ),
    (
        "study",
        _set("arm", [{"name": "bkp"}, {"name": "surgery"}]),
        "study-1",
        "invariant",
        "ResearchStudy",
    ),
]


@pytest.mark.parametrize(
    ("name", "change", "rule", "code", "expression"),
    BROKEN,
    ids=[f"{b[0]}-{b[2]}-{i}" for i, b in enumerate(BROKEN)],
)
def test_broken_examples_fail_naming_element_and_rule(
    validator: ProfileValidator, name: str, change: Any, rule: str, code: str, expression: str
) -> None:
    resource = copy.deepcopy(GOOD[name])
    change(resource)
    errors = _errors(validator, resource)
    assert errors, "expected a failure"
    match = [i for i in errors if i.diagnostics.startswith(f"{name}: {rule}: ")]
    assert match, [i.diagnostics for i in errors]
    assert match[0].code == code
    assert match[0].expression == (expression,)


def test_profile_for_another_type(validator: ProfileValidator) -> None:
    profile = validator.get(SD("vas-observation"))
    assert profile is not None
    issues = validator.validate(GOOD["kyphofhir-patient"], profile)
    assert [i.code for i in issues] == ["invalid"]


def test_validation_leaves_the_resource_unchanged(validator: ProfileValidator) -> None:
    resource = copy.deepcopy(GOOD["odi-observation"])
    _errors(validator, resource)
    assert resource == GOOD["odi-observation"]


# ------------------------------------------------------------------ rules our profiles
# do not use yet, on a small profile of its own: fixed[x], closed slicing, extensible
# bindings and warning invariants.

CS = "urn:test:cs"
VS = "urn:test:vs"


def _sd(*elements: dict[str, Any], root: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition",
        "id": "t",
        "url": "urn:test:sd",
        "type": "Observation",
        "derivation": "constraint",
        "differential": {
            "element": [{"id": "Observation", "path": "Observation", **(root or {})}, *elements]
        },
    }


def _small(*elements: dict[str, Any], root: dict[str, Any] | None = None) -> ProfileValidator:
    def expand(url: str) -> frozenset[tuple[str, str]] | None:
        return frozenset({(CS, "a"), (CS, "b")}) if url == VS else None

    return ProfileValidator([compile_profile(_sd(*elements, root=root))], expand)


def _issues(v: ProfileValidator, resource: dict[str, Any]) -> list[tuple[str, str, str]]:
    profile = v.get("urn:test:sd")
    assert profile is not None
    return [
        (i.severity, i.diagnostics.split(": ")[1], i.expression[0])
        for i in v.validate(resource, profile)
    ]


OBS = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}


def test_fixed_value() -> None:
    v = _small({"id": "Observation.status", "path": "Observation.status", "fixedCode": "final"})
    assert _issues(v, OBS) == []
    assert _issues(v, {**OBS, "status": "amended"}) == [("error", "fixed", "Observation.status")]


def test_extensible_binding_is_a_warning_and_unknown_value_sets_are_not_checked() -> None:
    binding = {"strength": "extensible", "valueSet": VS}
    v = _small({"id": "Observation.code", "path": "Observation.code", "binding": binding})
    assert _issues(v, {**OBS, "code": cc(CS, "a")}) == []
    assert _issues(v, {**OBS, "code": cc(CS, "z")}) == [("warning", "binding", "Observation.code")]
    unknown = {"strength": "required", "valueSet": "urn:test:elsewhere"}
    v = _small({"id": "Observation.code", "path": "Observation.code", "binding": unknown})
    assert _issues(v, {**OBS, "code": cc(CS, "z")}) == []


def test_warning_invariant_and_unevaluable_invariant() -> None:
    warn = {
        "key": "w-1",
        "severity": "warning",
        "human": "has a note",
        "expression": "note.exists()",
    }
    v = _small(root={"constraint": [warn]})
    assert _issues(v, OBS) == [("warning", "w-1", "Observation")]
    assert _issues(v, {**OBS, "note": [{"text": "n"}]}) == []
    bad = {
        "key": "e-1",
        "severity": "error",
        "human": "x",
        "expression": "status.toInteger() > 'a'",
    }
    v = _small(root={"constraint": [bad]})
    assert _issues(v, OBS) == [("error", "e-1", "Observation")]


def test_closed_slicing() -> None:
    slicing = {"discriminator": [{"type": "pattern", "path": "code"}], "rules": "closed"}
    v = _small(
        {"id": "Observation.component", "path": "Observation.component", "slicing": slicing},
        {
            "id": "Observation.component:a",
            "path": "Observation.component",
            "sliceName": "a",
            "min": 1,
        },
        {
            "id": "Observation.component:a.code",
            "path": "Observation.component.code",
            "patternCodeableConcept": cc(CS, "a"),
        },
    )
    assert _issues(v, {**OBS, "component": [{"code": cc(CS, "a")}]}) == []
    assert _issues(v, {**OBS, "component": [{"code": cc(CS, "b")}]}) == [
        ("error", "slice", "Observation.component[0]"),
        ("error", "min", "Observation.component"),
    ]


@pytest.mark.parametrize(
    ("element", "message"),
    [
        (
            {"id": "Observation.valueQuantity", "path": "Observation.value", "maxLength": 3},
            "maxLength",
        ),
        (
            {"id": "Observation.value[x]", "path": "Observation.value[x]", "minValueQuantity": {}},
            "minValue",
        ),
        (
            {
                "id": "Observation.component",
                "path": "Observation.component",
                "slicing": {"discriminator": [{"type": "type", "path": "value"}]},
            },
            "discriminator",
        ),
        ({"id": "Patient.name", "path": "Patient.name"}, "not under Observation"),
    ],
)
def test_unsupported_rules_are_refused_at_load(element: dict[str, Any], message: str) -> None:
    sd = _sd(element)
    if "slicing" in element:
        sd["differential"]["element"].append(
            {"id": "Observation.component:x", "path": "Observation.component", "sliceName": "x"}
        )
    with pytest.raises(ProfileError, match=message):
        compile_profile(sd)


def test_bad_fhirpath_is_refused_at_load() -> None:
    bad = {"key": "b-1", "severity": "error", "human": "x", "expression": "where(("}
    with pytest.raises(ProfileError, match="b-1"):
        compile_profile(_sd(root={"constraint": [bad]}))


def test_an_odi_score_needs_no_visit(validator: ProfileValidator) -> None:
    """A score derived from a QuestionnaireResponse without encounter or authored time."""
    resource = copy.deepcopy(GOOD["odi-observation"])
    del resource["encounter"], resource["effectiveDateTime"]
    assert _errors(validator, resource) == []


def test_range_invariants_in_python_agree_with_fhirpathpy() -> None:
    expressions = {
        c["expression"]
        for path in PROFILES.glob("StructureDefinition-*.json")
        for e in json.loads(path.read_text(encoding="utf-8"))["differential"]["element"]
        for c in e.get("constraint", [])
        if "." in e["id"]
    }
    fast = {x: _bounds(x) for x in expressions}
    assert len([f for f in fast.values() if f]) >= 5, expressions
    values: list[Any] = [0, 0.0, 1e-9, -1e-9, 1, 49.999, 50, 50.0001, 89.99, 90, 95, 100,
                         100.5, -89.9, -90, -4.5, None]  # fmt: skip
    for expression, check in fast.items():
        if check is None:
            continue
        for value in values:
            quantity = {"system": codes.UCUM, "code": "mm"}
            if value is not None:
                quantity["value"] = value
            slow = evaluate(
                quantity, {"base": "Quantity", "expression": expression}, {}, models["r4"]
            )
            assert check(quantity) == (slow == [True]), (expression, value)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_malformed_content_gives_issues_not_exceptions(
    validator: ProfileValidator, name: str
) -> None:
    """$validate also sees resources that fail the R4 structure check."""
    junk: list[Any] = [None, 1, True, "x", [], {}, [1], [{"value": "x"}], {"coding": "x"}]
    for key in [k for k in GOOD[name] if k not in ("resourceType", "meta")]:
        for value in junk:
            resource = {**copy.deepcopy(GOOD[name]), key: value}
            _errors(validator, resource)  # must not raise
