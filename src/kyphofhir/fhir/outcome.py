"""OperationOutcome rendering of :mod:`kyphofhir.errors` issues. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kyphofhir.errors import Issue

OPERATION_OUTCOME_SYSTEM = "http://terminology.hl7.org/CodeSystem/operation-outcome"


def issue_json(issue: Issue) -> dict[str, Any]:
    out: dict[str, Any] = {"severity": issue.severity, "code": issue.code}
    if issue.details_code:
        out["details"] = {
            "coding": [{"system": OPERATION_OUTCOME_SYSTEM, "code": issue.details_code}]
        }
    if issue.diagnostics:
        out["diagnostics"] = issue.diagnostics
    if issue.expression:
        out["expression"] = list(issue.expression)
    return out


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    items = [issue_json(i) for i in issues]
    if not items:
        items = [{"severity": "information", "code": "informational", "diagnostics": "OK"}]
    return {"resourceType": "OperationOutcome", "issue": items}


def information(diagnostics: str, details_code: str | None = None) -> dict[str, Any]:
    return operation_outcome([Issue("information", "informational", diagnostics, (), details_code)])
