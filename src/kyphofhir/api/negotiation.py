"""HTTP details of FHIR REST: formats, bodies, Prefer, ETags, response building."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any

import orjson
from flask import Request, Response, current_app, g, request

from kyphofhir.errors import Invalid, NotAcceptable, UnsupportedMediaType
from kyphofhir.fhir import bundle as bundles
from kyphofhir.fhir.versioned import StoredResource

FHIR_JSON = "application/fhir+json"
JSON_TYPES = {FHIR_JSON, "application/json", "application/json+fhir", "text/json"}
_FORMAT_JSON = {"json", "application/json", FHIR_JSON, "application/json+fhir", "text/json"}
_FORMAT_XML = {"xml", "text/xml", "application/xml", "application/fhir+xml", "application/xml+fhir"}


def response_mimetype(req: Request) -> str:
    """The media type to answer with, or :class:`NotAcceptable` (406)."""
    fmt = req.args.get("_format")
    if fmt is not None:
        base = fmt.split(";")[0].strip().lower()
        if base in _FORMAT_JSON:
            return "application/json" if base == "application/json" else FHIR_JSON
        if base in _FORMAT_XML:
            raise NotAcceptable(
                "XML is not supported by this server; use _format=json.", expression=["_format"]
            )
        raise NotAcceptable(
            f"Unknown _format {fmt!r}; this server speaks JSON only.", expression=["_format"]
        )
    header = req.headers.get("Accept", "").strip()
    if not header:
        return FHIR_JSON
    ranges = _accept_ranges(header)
    json_q = {t: q for t, q in ranges if t in _JSON_ACCEPT}
    if not any(q > 0 for q in json_q.values()):
        raise NotAcceptable(
            f"Cannot produce any of {header!r}; this server answers "
            "application/fhir+json (XML is not supported)."
        )
    plain = json_q.get("application/json", 0.0)
    fhir = max(json_q.get(FHIR_JSON, 0.0), json_q.get("application/json+fhir", 0.0))
    return "application/json" if plain > fhir else FHIR_JSON


_JSON_ACCEPT = {FHIR_JSON, "application/json", "application/json+fhir", "*/*", "application/*"}


def _accept_ranges(header: str) -> list[tuple[str, float]]:
    """``Accept`` → [(media range, q)]; parameters such as ``fhirVersion=4.0`` are ignored."""
    out: list[tuple[str, float]] = []
    for part in header.split(","):
        pieces = [p.strip() for p in part.split(";")]
        if not pieces[0]:
            continue
        q = 1.0
        for param in pieces[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        out.append((pieces[0].lower(), q))
    return out


def parse_body(req: Request) -> Any:
    """The JSON body of a write, or 415 for a non-JSON media type and 400 for bad JSON."""
    mimetype = (req.mimetype or "").lower()
    if mimetype and mimetype not in JSON_TYPES:
        if "xml" in mimetype:
            raise UnsupportedMediaType(
                f"Content-Type {mimetype} is not supported: this server accepts FHIR JSON "
                "(application/fhir+json) only."
            )
        if mimetype != "application/x-www-form-urlencoded" or req.get_data(cache=True):
            raise UnsupportedMediaType(
                f"Content-Type {mimetype} is not supported; send application/fhir+json."
            )
    data = req.get_data(cache=True)
    if not data.strip():
        raise Invalid(
            "The request has no body; a FHIR resource was expected.",
            details_code="MSG_CANT_PARSE_CONTENT",
        )
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Invalid(
            f"The body is not valid JSON: {exc}", details_code="MSG_JSON_OBJECT"
        ) from None


def prefer(req: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for header in req.headers.getlist("Prefer"):
        for part in header.split(";"):
            for token in part.split(","):
                key, _, value = token.strip().partition("=")
                if key:
                    out[key.lower()] = value.strip().strip('"')
    return out


def prefer_return(req: Request) -> str:
    value = prefer(req).get("return", "representation")
    return value if value in ("minimal", "representation", "OperationOutcome") else "representation"


def prefer_strict(req: Request) -> bool:
    return prefer(req).get("handling") == "strict"


def parse_etag(value: str | None, header: str) -> int | None:
    """``W/"3"`` (or ``"3"``, ``3``) → 3."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise Invalid(f'{header} {value!r} is not a version ETag like W/"1".', expression=[header])
    return int(text)


def if_modified_since(req: Request, stored: StoredResource) -> bool:
    """True when the client's copy (If-Modified-Since) is still current."""
    header = req.headers.get("If-Modified-Since")
    if not header:
        return False
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False
    return stored.last_updated.replace(microsecond=0) <= since


def base_url() -> str:
    configured: str = current_app.config["KYPHOFHIR_BASE_URL"]
    if configured:
        return configured.rstrip("/")
    return request.host_url.rstrip("/") + "/fhir"


def fhir_response(
    body: bytes | dict[str, Any] | None, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    payload = b"" if body is None else body if isinstance(body, bytes) else orjson.dumps(body)
    mimetype = getattr(g, "fhir_mimetype", FHIR_JSON)
    response = Response(payload if body is not None else None, status=status)
    if body is not None:
        response.headers["Content-Type"] = f"{mimetype}; charset=utf-8"
    else:
        del response.headers["Content-Type"]
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def version_headers(stored: StoredResource, *, location: bool = False) -> dict[str, str]:
    headers = {"ETag": bundles.etag(stored.version_id), "Last-Modified": bundles.http_date(stored)}
    if location:
        headers["Location"] = bundles.version_url(base_url(), stored)
    return headers
