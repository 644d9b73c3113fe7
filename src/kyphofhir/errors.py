"""The exception tree of kyphofhir. No web imports: the REST layer maps it in one place.

::

    FhirError                      (500 exception)
     ├── Invalid                   (400 invalid)        malformed input, bad search value
     │    └── InvalidResource      (400 structure)      fails the R4 structure
     ├── NotFound                  (404 not-found)
     ├── MethodNotAllowed          (405 not-supported)
     ├── NotAcceptable             (406 not-supported)  Accept/_format we cannot produce
     ├── Conflict                  (409 conflict)       e.g. id clash, concurrent write lost
     ├── Gone                      (410 deleted)
     │    └── PageExpired          (410 not-found)      a search's page link outlived it
     ├── PreconditionFailed        (412 conflict)       If-Match, conditional multiple matches
     ├── PayloadTooLarge           (413 too-costly)
     ├── UnsupportedMediaType      (415 not-supported)
     ├── Unprocessable             (422 processing)     business rules
     └── Unsupported               (501 not-supported)

Each error carries a stable ``code`` (the ``details.coding.code`` of the OperationOutcome
issue, e.g. ``MSG_NO_EXIST``), a short ``diagnostics`` text and optional FHIRPath
``expression`` locations. Tests assert codes, not texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome issue, independent of any web framework."""

    severity: str
    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()
    details_code: str | None = None


class FhirError(Exception):
    """Base of all errors the service turns into an OperationOutcome."""

    status = 500
    issue_code = "exception"
    default_details = "MSG_EXCEPTION"

    def __init__(
        self,
        diagnostics: str,
        *,
        expression: Sequence[str] = (),
        details_code: str | None = None,
        issues: Sequence[Issue] = (),
        code: str | None = None,
    ) -> None:
        super().__init__(diagnostics)
        if code is not None:
            self.issue_code = code
        self.diagnostics = diagnostics
        self.expression = tuple(expression)
        self.details_code = details_code or self.default_details
        self.extra_issues = tuple(issues)

    @property
    def issues(self) -> tuple[Issue, ...]:
        """All issues, the main one first."""
        main = Issue(
            severity="error" if self.status < 500 else "fatal",
            code=self.issue_code,
            diagnostics=self.diagnostics,
            expression=self.expression,
            details_code=self.details_code,
        )
        return (main, *self.extra_issues)


class Invalid(FhirError):
    status = 400
    issue_code = "invalid"
    default_details = "MSG_BAD_SYNTAX"


class InvalidResource(Invalid):
    issue_code = "structure"
    default_details = "MSG_CANT_PARSE_CONTENT"


class NotFound(FhirError):
    status = 404
    issue_code = "not-found"
    default_details = "MSG_NO_EXIST"


class MethodNotAllowed(FhirError):
    status = 405
    issue_code = "not-supported"
    default_details = "MSG_OP_NOT_ALLOWED"


class NotAcceptable(FhirError):
    status = 406
    issue_code = "not-supported"
    default_details = "MSG_UNKNOWN_CONTENT"


class Conflict(FhirError):
    status = 409
    issue_code = "conflict"
    default_details = "MSG_VERSION_AWARE_CONFLICT"


class Gone(FhirError):
    status = 410
    issue_code = "deleted"
    default_details = "MSG_DELETED_ID"


class PageExpired(Gone):
    """A ``_page`` link whose search snapshot has expired: start the search again."""

    issue_code = "not-found"
    default_details = "MSG_PARAM_INVALID"


class PreconditionFailed(FhirError):
    status = 412
    issue_code = "conflict"
    default_details = "MSG_VERSION_AWARE_CONFLICT"


class PayloadTooLarge(FhirError):
    status = 413
    issue_code = "too-costly"
    default_details = "MSG_TOO_LARGE"


class UnsupportedMediaType(FhirError):
    status = 415
    issue_code = "not-supported"
    default_details = "MSG_UNKNOWN_CONTENT"


class Unprocessable(FhirError):
    status = 422
    issue_code = "processing"
    default_details = "MSG_RESOURCE_NOT_ALLOWED"


class Unsupported(FhirError):
    status = 501
    issue_code = "not-supported"
    default_details = "MSG_OP_NOT_ALLOWED"
