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
