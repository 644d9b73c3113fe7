"""The one place where errors become OperationOutcome responses."""

from __future__ import annotations

import logging

from flask import Flask, Response, g
from werkzeug.exceptions import HTTPException

from kyphofhir.errors import FhirError, Issue
from kyphofhir.fhir.outcome import operation_outcome

from .negotiation import fhir_response

log = logging.getLogger(__name__)

# werkzeug's own HTTP errors (unknown route, wrong method, body too large, ...)
_HTTP_ISSUES = {
    400: ("invalid", "MSG_BAD_SYNTAX"),
    404: ("not-found", "MSG_NO_EXIST"),
    405: ("not-supported", "MSG_OP_NOT_ALLOWED"),
    406: ("not-supported", "MSG_UNKNOWN_CONTENT"),
    413: ("too-costly", "MSG_TOO_LARGE"),
    415: ("not-supported", "MSG_UNKNOWN_CONTENT"),
}


def _outcome_response(status: int, issues: tuple[Issue, ...] | list[Issue]) -> Response:
    response = fhir_response(operation_outcome(issues), status)
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(FhirError)
    def _fhir_error(exc: FhirError) -> Response:
        if exc.status >= 500:
            log.error("request %s failed: %s", getattr(g, "request_id", "-"), exc.diagnostics)
        return _outcome_response(exc.status, exc.issues)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code, details = _HTTP_ISSUES.get(status, ("exception", "MSG_EXCEPTION"))
        text = exc.description or exc.name
        if status == 413:
            text = "The request body is larger than this server accepts (max_body_bytes)."
        issue = Issue("error", code, text, (), details)
        response = _outcome_response(status, [issue])
        if status == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        request_id = getattr(g, "request_id", "-")
        log.exception("unexpected error in request %s", request_id)
        issue = Issue(
            "fatal",
            "exception",
            f"Internal server error (request id {request_id}). The error was logged; "
            "no details are shown here.",
            (),
            "MSG_EXCEPTION",
        )
        return _outcome_response(500, [issue])
