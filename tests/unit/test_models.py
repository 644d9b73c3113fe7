"""R4 structure validation: R4B models plus R4 JSON kinds and required bindings."""

from __future__ import annotations

from typing import Any

import pytest

from kyphofhir.errors import InvalidResource
from kyphofhir.fhir.models import SERVED_TYPES, is_known_type, validate_resource


def _issues(resource: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    with pytest.raises(InvalidResource) as exc:
        validate_resource(resource)
    return [(i.code, i.expression) for i in exc.value.issues]


def test_valid_resources_pass() -> None:
    validate_resource({"resourceType": "Patient", "gender": "female", "active": True})
    validate_resource(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "38214-3"}]},
            "valueQuantity": {"value": 4.5, "comparator": "<"},
            "component": [{"code": {"text": "x"}, "valueInteger": 3}],
        }
    )


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ({"resourceType": "Patient", "gender": "robot"}, ("code-invalid", ("Patient.gender",))),
        ({"resourceType": "Patient", "active": "yes"}, ("value", ("Patient.active",))),
        (
            {"resourceType": "Patient", "multipleBirthInteger": True},
            ("value", ("Patient.multipleBirthInteger",)),
        ),
        (
            {"resourceType": "Patient", "contact": [{"gender": "x"}]},
            ("code-invalid", ("Patient.contact[0].gender",)),
        ),
        (
            {"resourceType": "Patient", "telecom": [{"system": "pager2"}]},
            ("code-invalid", ("Patient.telecom[0].system",)),
        ),
        ({"resourceType": "Patient", "foo": 1}, ("structure", ("Patient.foo",))),
        (
            {"resourceType": "Observation", "code": {"text": "x"}},
            ("value", ("Observation.status",)),
        ),
        (
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": {"resourceType": "Patient", "gender": "robot"}}],
            },
            ("code-invalid", ("Bundle.entry[0].resource.gender",)),
        ),
    ],
)
def test_violations_point_at_the_element(
    resource: dict[str, Any], expected: tuple[str, tuple[str, ...]]
) -> None:
    assert expected in _issues(resource)


def test_unknown_resource_type() -> None:
    assert _issues({"resourceType": "Unicorn"})[0][1] == ("resourceType",)
    assert not is_known_type("Unicorn")
    assert is_known_type("Medication")  # known to FHIR, just not served


def test_served_types_are_the_issue_list() -> None:
    assert len(SERVED_TYPES) == 21
    assert "Bundle" in SERVED_TYPES and "ImagingStudy" in SERVED_TYPES


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        # python field names pydantic would accept (populate_by_name) are not FHIR JSON
        (
            {"resourceType": "Encounter", "status": "planned", "class_fhir": {"code": "AMB"}},
            "Encounter.class_fhir",
        ),
        ({"resourceType": "Patient", "gender__ext": {}}, "Patient.gender__ext"),
        ({"resourceType": "Patient", "fhir_comments": ["x"]}, "Patient.fhir_comments"),
        # R4B-only data types
        (
            {
                "resourceType": "Patient",
                "extension": [{"url": "http://x", "valueCodeableReference": {}}],
            },
            "Patient.extension[0].valueCodeableReference",
        ),
        # required bindings below contentReference elements
        (
            {
                "resourceType": "Questionnaire",
                "status": "active",
                "item": [
                    {"linkId": "1", "type": "group", "item": [{"linkId": "2", "type": "bogus"}]}
                ],
            },
            "Questionnaire.item[0].item[0].type",
        ),
        # R4 ids are at most 64 characters, also on contained resources
        (
            {"resourceType": "Patient", "contained": [{"resourceType": "Patient", "id": "x" * 70}]},
            "Patient.contained[0].id",
        ),
    ],
)
def test_r4_rules_the_r4b_models_miss(resource: dict[str, Any], expression: str) -> None:
    assert any(expression in expr for _, expr in _issues(resource))


def test_primitive_extensions_are_allowed() -> None:
    validate_resource(
        {
            "resourceType": "Patient",
            "_gender": {"extension": [{"url": "http://x", "valueString": "a"}]},
        }
    )
