"""``POST /fhir/ResearchStudy/{id}/$import``: load a study table (CSV or NDJSON body).

The body is streamed to the importer (``services/study_import.py``), never read whole,
so its size is limited by ``max_import_bytes``, not by memory. The answer is ``200``
with a Parameters resource (row and resource counts, and an ``outcome`` OperationOutcome
with one issue per bad row) whenever the table could be read, also when some rows were
bad: those rows are reported, the good ones are kept.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from kyphofhir.config import Settings
from kyphofhir.errors import UnsupportedMediaType
from kyphofhir.services.study_import import import_table

from .interactions import services
from .negotiation import fhir_response

MEDIA_TYPES = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/x-ndjson": "ndjson",
    "application/fhir+ndjson": "ndjson",
    "application/ndjson": "ndjson",
}


def import_study_table(rid: str) -> Response:
    settings: Settings = current_app.config["KYPHOFHIR_SETTINGS"]
    request.max_content_length = settings.max_import_bytes
    mimetype = (request.mimetype or "").lower()
    fmt = MEDIA_TYPES.get(mimetype)
    if fmt is None:
        raise UnsupportedMediaType(
            f"Content-Type {mimetype or '(none)'} is not a study table: send text/csv or "
            "application/x-ndjson (columns: mappings/study-table.json)."
        )
    report = import_table(services(), request.stream, fmt, study=rid, create_study=False)
    return fhir_response(report.parameters())


def register(bp: Blueprint) -> None:
    bp.add_url_rule(
        "/ResearchStudy/<rid>/$import",
        view_func=import_study_table,
        methods=["POST"],
        endpoint="study_import",
    )
