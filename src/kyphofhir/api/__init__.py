"""The FHIR REST layer (the only package that imports Flask)."""

from __future__ import annotations

import logging
import time
import uuid

from flask import Blueprint, Flask, Response, g, request
from werkzeug.routing import BaseConverter

from . import dicomweb, interactions, operations, study, system
from .errors import register_error_handlers
from .negotiation import response_mimetype

log = logging.getLogger("kyphofhir.access")


class FhirTypeConverter(BaseConverter):
    """``<fhir_type:rtype>``: a capitalised resource type name."""

    regex = r"[A-Z][A-Za-z]+"


def init_app(app: Flask) -> None:
    app.url_map.converters["fhir_type"] = FhirTypeConverter
    bp = Blueprint("fhir", __name__, url_prefix="/fhir")
    system.register(bp)
    study.register(bp)  # ResearchStudy/{id}/$import (#5)
    operations.register(bp)  # $validate, $lookup, $expand, $validate-code (#5)
    interactions.register(bp)

    @bp.before_request
    def _negotiate() -> None:
        g.fhir_mimetype = "application/fhir+json"
        g.fhir_mimetype = response_mimetype(request)

    app.register_blueprint(bp)
    dicomweb.register(app)  # WADO-RS under /dicomweb (#6)
    register_error_handlers(app)

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = (
            incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
        )

    @app.after_request
    def _log(response: Response) -> Response:
        elapsed_ms = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        request_id = g.get("request_id", "-")
        response.headers["X-Request-ID"] = request_id
        log.info(
            "%s %s %s %.1fms rid=%s",
            request.method,
            request.path,
            response.status_code,
            elapsed_ms,
            request_id,
        )
        return response
