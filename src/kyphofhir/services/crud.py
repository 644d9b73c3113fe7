"""Create, read, vread, update, delete and their conditional forms (FHIR R4 http.html).

Every function works inside a unit of work handed in by the caller, so the same code
serves single REST requests and the entries of a transaction Bundle.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from kyphofhir.errors import (
    Gone,
    Invalid,
    InvalidResource,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from kyphofhir.fhir.datetimes import format_instant, now_instant
from kyphofhir.fhir.models import is_served_type, validate_resource
from kyphofhir.fhir.references import is_valid_id
from kyphofhir.search.params import parse_query
from kyphofhir.services import study_hooks, terminology, validation
from kyphofhir.services.context import Services
from kyphofhir.store.base import StoredResource, UnitOfWork


@dataclass(frozen=True)
class WriteResult:
    """What a write interaction did; the REST layer renders status and headers from it."""

    stored: StoredResource
    status: int  # 200 or 201
    changed: bool = True


def check_type(rtype: str) -> None:
    if not is_served_type(rtype):
        raise NotFound(
            f"Resource type {rtype!r} is not supported by this server.",
            details_code="MSG_UNKNOWN_TYPE",
        )


def check_id(rid: str) -> None:
    if not is_valid_id(rid):
        raise Invalid(
            f"Invalid resource id {rid!r}: 1-64 characters of A-Z a-z 0-9 - and '.'.",
            details_code="MSG_ID_INVALID",
        )


def read(svc: Services, uow: UnitOfWork, rtype: str, rid: str) -> StoredResource:
    check_type(rtype)
    check_id(rid)
    found = uow.get(rtype, rid)
    if found is None:
        raise NotFound(f"Resource {rtype}/{rid} was not found.")
    if found.deleted:
        raise Gone(f"Resource {rtype}/{rid} was deleted (version {found.version_id}).")
    return study_hooks.for_display(svc, found)  # licensed ODI texts, display only (#5)


def vread(svc: Services, uow: UnitOfWork, rtype: str, rid: str, vid: str) -> StoredResource:
    check_type(rtype)
    check_id(rid)
    if not vid.isdigit():
        raise NotFound(f"Version {vid!r} of {rtype}/{rid} does not exist.")
    found = uow.get_version(rtype, rid, int(vid))
    if found is None:
        if uow.get(rtype, rid) is None:
            raise NotFound(f"Resource {rtype}/{rid} was not found.")
        raise NotFound(f"Version {vid} of {rtype}/{rid} does not exist.")
    if found.deleted:
        raise Gone(f"Version {vid} of {rtype}/{rid} is a deletion.")
    return found


def prepare(rtype: str, body: Any) -> dict[str, Any]:
    """Check a request body is a JSON object of the URL's type and valid R4 structure."""
    if not isinstance(body, dict):
        raise InvalidResource("The request body must be a FHIR resource (a JSON object).")
    if body.get("resourceType") != rtype:
        raise InvalidResource(
            f"Resource type {body.get('resourceType')!r} in the body does not match "
            f"the URL's type {rtype}.",
            expression=["resourceType"],
            details_code="MSG_RESOURCE_TYPE_MISMATCH",
        )
    validate_resource(body)
    if rtype == "Bundle" and body.get("type") not in ("document", "collection"):
        raise Unprocessable(
            "Only Bundles of type document or collection can be stored; "
            "POST transactions and batches to the base URL.",
            expression=["Bundle.type"],
        )
    return body


def _stamp(
    body: dict[str, Any], rtype: str, rid: str, version: int
) -> tuple[StoredResource, dict[str, Any]]:
    when = now_instant()
    meta = dict(body.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = format_instant(when)
    out = {
        "resourceType": rtype,
        "id": rid,
        **{k: v for k, v in body.items() if k not in ("resourceType", "id", "meta")},
    }
    out["meta"] = meta
    stored = StoredResource(
        rtype,
        rid,
        version,
        when,
        False,
        orjson.dumps(out).decode("utf-8"),
        "POST" if version == 1 else "PUT",
    )
    return stored, out


def _write(
    svc: Services,
    uow: UnitOfWork,
    rtype: str,
    rid: str,
    body: dict[str, Any],
    previous: StoredResource | None,
) -> WriteResult:
    validation.check(svc, body)  # the profiles in meta.profile (422)
    version = previous.version_id + 1 if previous else 1
    stored, content = _stamp(body, rtype, rid, version)
    index = svc.extractor.extract(content)
    uow.write(stored, index, previous_version=previous.version_id if previous else None)
    study_hooks.after_write(svc, uow, content, previous)  # derived study resources (#5)
    created = previous is None or previous.deleted
    return WriteResult(stored, 201 if created else 200)


def write_checked(
    svc: Services,
    uow: UnitOfWork,
    rtype: str,
    rid: str,
    body: dict[str, Any],
    previous: StoredResource | None,
) -> WriteResult:
    """Store ``body`` as the version after ``previous`` (read by the caller) without
    repeating the R4 structure check: for content validated already (the conformance
    artefacts of profiles/, checked once per process; services/conformance.py)."""
    return _write(svc, uow, rtype, rid, body, previous)


def _criteria_items(rtype: str, criteria: str) -> list[tuple[str, str]]:
    text = criteria.strip()
    if text.startswith(f"{rtype}?"):  # some clients send the full relative URL
        text = text[len(rtype) + 1 :]
    return parse_qsl(text.lstrip("?"), keep_blank_values=True)


def matches(
    svc: Services, uow: UnitOfWork, rtype: str, criteria: str, limit: int = 2
) -> list[StoredResource]:
    """Resources matching a conditional query (unknown parameters are an error here)."""
    items = _criteria_items(rtype, criteria)
    if not items:
        raise Invalid(
            "A conditional interaction needs search criteria.", details_code="MSG_PARAM_INVALID"
        )
    query = parse_query(svc.registry, rtype, items, default_count=limit, max_count=limit)
    if query.unknown:
        raise Invalid(
            f"Unknown search parameter(s) in conditional criteria: {', '.join(query.unknown)}.",
            expression=query.unknown,
            details_code="MSG_PARAM_UNKNOWN",
        )
    query.count = limit
    return list(uow.search(terminology.resolve(svc, uow, query), None).items)


def single_match(
    svc: Services, uow: UnitOfWork, rtype: str, criteria: str, *, what: str, details_code: str
) -> StoredResource | None:
    """The one resource matching conditional ``criteria``, None, or 412 for several.

    Holds a lock on the criteria until the unit of work ends, so two requests with the
    same criteria cannot both see "no match" and both create.
    """
    uow.lock(f"{rtype}?{urlencode(sorted(_criteria_items(rtype, criteria)))}")
    found = matches(svc, uow, rtype, criteria)
    if len(found) > 1:
        raise PreconditionFailed(
            f"{what} criteria {criteria!r} match more than one {rtype}.", details_code=details_code
        )
    return found[0] if found else None


def create(
    svc: Services,
    uow: UnitOfWork,
    rtype: str,
    body: Any,
    *,
    if_none_exist: str | None = None,
    new_id: str | None = None,
) -> WriteResult:
    check_type(rtype)
    if isinstance(body, dict) and "id" in body:  # R4: the server ignores an id on create
        body = {k: v for k, v in body.items() if k != "id"}
    prepared = prepare(rtype, body)
    if if_none_exist:
        existing = single_match(
            svc,
            uow,
            rtype,
            if_none_exist,
            what="If-None-Exist",
            details_code="MSG_CREATE_MULTIPLE_MATCHES",
        )
        if existing is not None:
            return WriteResult(existing, 200, changed=False)
    return _write(svc, uow, rtype, new_id or str(uuid.uuid4()), prepared, None)


def update(
    svc: Services,
    uow: UnitOfWork,
    rtype: str,
    rid: str,
    body: Any,
    *,
    if_match: int | None = None,
) -> WriteResult:
    check_type(rtype)
    check_id(rid)
    prepared = prepare(rtype, body)
    body_id = prepared.get("id")
    if body_id is None:
        raise InvalidResource(
            "The resource in an update must have an id.",
            expression=[f"{rtype}.id"],
            details_code="MSG_RESOURCE_ID_MISSING",
        )
    if body_id != rid:
        raise InvalidResource(
            f"Resource id {body_id!r} does not match the URL id {rid!r}.",
            expression=[f"{rtype}.id"],
            details_code="MSG_RESOURCE_ID_MISMATCH",
        )
    current = uow.get(rtype, rid, for_update=True)
    _check_if_match(rtype, rid, current, if_match)
    return _write(svc, uow, rtype, rid, prepared, current)


def _check_if_match(
    rtype: str, rid: str, current: StoredResource | None, if_match: int | None
) -> None:
    if if_match is None:
        return
    if current is None:
        raise PreconditionFailed(
            f"If-Match given but {rtype}/{rid} does not exist.",
            details_code="MSG_VERSION_AWARE_CONFLICT",
        )
    if current.version_id != if_match:
        raise PreconditionFailed(
            f"Version conflict: {rtype}/{rid} is at version {current.version_id}, "
            f"If-Match asked for {if_match}.",
            details_code="MSG_VERSION_AWARE_CONFLICT",
        )


def conditional_update(
    svc: Services,
    uow: UnitOfWork,
    rtype: str,
    criteria: str,
    body: Any,
    *,
    if_match: int | None = None,
) -> WriteResult:
    check_type(rtype)
    prepared = prepare(rtype, body)
    target = single_match(
        svc,
        uow,
        rtype,
        criteria,
        what="Conditional update",
        details_code="MSG_UPDATE_MULTIPLE_MATCHES",
    )
    body_id = prepared.get("id")
    if target is not None:
        if body_id is not None and body_id != target.id:
            raise InvalidResource(
                f"Resource id {body_id!r} does not match the matched resource {target.id!r}.",
                expression=[f"{rtype}.id"],
                details_code="MSG_RESOURCE_ID_MISMATCH",
            )
        current = uow.get(rtype, target.id, for_update=True)
        _check_if_match(rtype, target.id, current, if_match)
        return _write(svc, uow, rtype, target.id, prepared, current)
    if body_id is not None:
        check_id(body_id)
        current = uow.get(rtype, body_id, for_update=True)
        if current is not None and not current.deleted:
            raise PreconditionFailed(
                f"{rtype}/{body_id} exists but does not match the criteria {criteria!r}.",
                details_code="MSG_UPDATE_MULTIPLE_MATCHES",
            )
        return _write(svc, uow, rtype, body_id, prepared, current)
    return _write(svc, uow, rtype, str(uuid.uuid4()), prepared, None)


@dataclass(frozen=True)
class DeleteResult:
    stored: StoredResource | None  # the deletion marker, None if nothing was deleted


def delete(
    svc: Services, uow: UnitOfWork, rtype: str, rid: str, *, if_match: int | None = None
) -> DeleteResult:
    check_type(rtype)
    check_id(rid)
    current = uow.get(rtype, rid, for_update=True)
    _check_if_match(rtype, rid, current, if_match)
    if current is None or current.deleted:
        return DeleteResult(None)
    marker = StoredResource(rtype, rid, current.version_id + 1, now_instant(), True, None, "DELETE")
    uow.write(marker, {}, previous_version=current.version_id)
    study_hooks.after_delete(svc, uow, current)  # derived study resources (#5)
    return DeleteResult(marker)


def conditional_delete(svc: Services, uow: UnitOfWork, rtype: str, criteria: str) -> DeleteResult:
    check_type(rtype)
    target = single_match(
        svc,
        uow,
        rtype,
        criteria,
        what="Conditional delete",
        details_code="MSG_DELETE_MULTIPLE_MATCHES",
    )
    if target is None:
        return DeleteResult(None)
    return delete(svc, uow, rtype, target.id)
