"""DICOMweb WADO-RS (DICOM PS3.18 §10.4): the stored instances and their metadata.

Routes under ``/dicomweb`` (the base of ``Endpoint/dicomweb``)::

    GET /studies/{study}[/series/{series}[/instances/{instance}]]           instances
    GET /studies/{study}[/series/{series}[/instances/{instance}]]/metadata  DICOM JSON

Instances are answered as ``multipart/related; type="application/dicom"``, one part per
instance, streamed from the files exactly as they were received and stored (Part 10,
transfer syntax as sent: there is no transcoding). ``Accept`` is honoured as far as that
allows: ``multipart/related`` with ``type="application/dicom"`` (any or no
``transfer-syntax``, or one every instance already has), ``*/*``, and for a single
instance also ``application/dicom``; anything else is ``406``. Metadata is
``application/dicom+json`` (the DICOM JSON model of PS3.18 Annex F, from pydicom's
``Dataset.to_json_dict``) without bulk data: pixel data and other binary values larger
than 1 KiB are left out (no BulkDataURI, as no bulk data resource is served).

Errors are OperationOutcomes like the FHIR API's: ``400`` for a path segment that is not
a UID, ``404`` for a study, series or instance the store does not have.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pydicom
from flask import Blueprint, Flask, Response, current_app, request
from pydicom import Dataset
from pydicom.errors import InvalidDicomError

from kyphofhir.errors import Invalid, NotAcceptable, NotFound
from kyphofhir.services import imaging
from kyphofhir.services.context import Services

log = logging.getLogger(__name__)

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
CHUNK = 256 * 1024
BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
BULK_THRESHOLD = 1024


def register(app: Flask) -> None:
    bp = Blueprint("dicomweb", __name__, url_prefix="/dicomweb")
    bp.add_url_rule("/studies/<study>", view_func=retrieve, methods=["GET"])
    bp.add_url_rule("/studies/<study>/series/<series>", view_func=retrieve, methods=["GET"])
    bp.add_url_rule(
        "/studies/<study>/series/<series>/instances/<instance>",
        view_func=retrieve,
        methods=["GET"],
    )
    bp.add_url_rule("/studies/<study>/metadata", view_func=metadata, methods=["GET"])
    bp.add_url_rule(
        "/studies/<study>/series/<series>/metadata", view_func=metadata, methods=["GET"]
    )
    bp.add_url_rule(
        "/studies/<study>/series/<series>/instances/<instance>/metadata",
        view_func=metadata,
        methods=["GET"],
    )
    app.register_blueprint(bp)


def _svc() -> Services:
    svc: Services = current_app.extensions["kyphofhir"]
    return svc


def _files(study: str, series: str | None, instance: str | None) -> list[Path]:
    """The files the URL names; 400 for a segment that is not a UID, 404 if none."""
    for name, uid in (("study", study), ("series", series), ("instance", instance)):
        if uid is not None and not imaging.valid_uid(uid):
            raise Invalid(
                f"The {name} UID {uid!r} is not a DICOM UID.", details_code="MSG_PARAM_INVALID"
            )
    svc = _svc()
    if instance is not None and series is not None:
        path = imaging.instance_file(svc, study, series, instance)
        if path is None:
            raise NotFound(
                f"Instance {instance} of series {series} of study {study} is not stored here."
            )
        return [path]
    files = imaging.study_files(svc, study, series)
    if not files:
        what = f"Series {series} of study {study}" if series else f"Study {study}"
        raise NotFound(f"{what} is not stored here.")
    return files


# --- Accept --------------------------------------------------------------------------------


def _media_ranges(header: str) -> list[tuple[str, dict[str, str], float]]:
    """``Accept`` → [(type, parameters, q)], highest q first."""
    out: list[tuple[str, dict[str, str], float]] = []
    for part in header.split(","):
        pieces = [p.strip() for p in part.split(";")]
        if not pieces[0]:
            continue
        params: dict[str, str] = {}
        q = 1.0
        for param in pieces[1:]:
            key, _, value = param.partition("=")
            key, value = key.strip().lower(), value.strip().strip('"')
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
            elif key:
                params[key] = value
        if q > 0:
            out.append((pieces[0].lower(), params, q))
    return sorted(out, key=lambda r: -r[2])


def _transfer_syntax(path: Path) -> str | None:
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except (InvalidDicomError, OSError, ValueError):
        return None
    uid = meta.get("TransferSyntaxUID")
    return str(uid) if uid else None


def _negotiate_instances(files: list[Path], single: bool) -> str:
    """``multipart`` or ``single`` (``application/dicom``, one instance), else 406."""
    header = request.headers.get("Accept", "").strip()
    if not header:
        return "multipart"
    for media, params, _q in _media_ranges(header):
        if media in ("*/*", "multipart/*"):
            return "multipart"
        if media == "multipart/related":
            if params.get("type", DICOM).lower() != DICOM:
                continue
            wanted = params.get("transfer-syntax", "*")
            if wanted == "*" or all(_transfer_syntax(f) == wanted for f in files):
                return "multipart"
        if media in (DICOM, "application/*") and single:
            wanted = params.get("transfer-syntax", "*")
            if wanted == "*" or _transfer_syntax(files[0]) == wanted:
                return "single"
    raise NotAcceptable(
        f"Cannot produce {header!r}: instances are served as stored, as "
        'multipart/related; type="application/dicom" (no transcoding).'
    )


def _negotiate_metadata() -> None:
    header = request.headers.get("Accept", "").strip()
    if not header:
        return
    for media, _params, _q in _media_ranges(header):
        if media in (DICOM_JSON, "application/json", "application/*", "*/*"):
            return
    raise NotAcceptable(f"Cannot produce {header!r}: metadata is served as {DICOM_JSON}.")


# --- retrieve ------------------------------------------------------------------------------


def _stream(files: list[Path], boundary: str) -> Iterator[bytes]:
    for path in files:
        try:
            fh = path.open("rb")
        except FileNotFoundError:  # removed since it was listed: leave it out
            log.warning("WADO-RS: %s disappeared while streaming", path.name)
            continue
        with fh:
            size = path.stat().st_size
            syntax = _transfer_syntax(path)
            content_type = f"{DICOM}; transfer-syntax={syntax}" if syntax else DICOM
            yield (
                f"--{boundary}\r\nContent-Type: {content_type}\r\nContent-Length: {size}\r\n\r\n"
            ).encode("ascii")
            while chunk := fh.read(CHUNK):
                yield chunk
            yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


def retrieve(study: str, series: str | None = None, instance: str | None = None) -> Response:
    files = _files(study, series, instance)
    mode = _negotiate_instances(files, single=instance is not None)
    if mode == "single":
        return Response(files[0].read_bytes(), status=200, content_type=DICOM)
    boundary = secrets.token_hex(16)
    return Response(
        _stream(files, boundary),
        status=200,
        content_type=f'multipart/related; type="{DICOM}"; boundary={boundary}',
    )


# --- metadata ------------------------------------------------------------------------------


def _drop_bulk(ds: Dataset) -> None:
    """Remove binary values larger than :data:`BULK_THRESHOLD`, at every nesting level."""
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value:
                _drop_bulk(item)
        elif elem.VR in BULK_VRS and elem.value is not None:
            try:
                length = len(elem.value)
            except TypeError:
                continue
            if length > BULK_THRESHOLD:
                del ds[elem.tag]


def _json_model(path: Path) -> dict[str, Any] | None:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError) as exc:
        log.warning("WADO-RS metadata: %s not readable: %s", path.name, exc)
        return None
    _drop_bulk(ds)
    model: dict[str, Any] = ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD)
    return model


def metadata(study: str, series: str | None = None, instance: str | None = None) -> Response:
    files = _files(study, series, instance)
    _negotiate_metadata()
    models = [m for m in (_json_model(f) for f in files) if m is not None]
    return Response(orjson.dumps(models), status=200, content_type=DICOM_JSON)
