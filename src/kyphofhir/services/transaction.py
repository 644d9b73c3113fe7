"""Transaction and batch Bundles (FHIR R4 http.html#transaction).

A transaction is one unit of work: entries are processed DELETE, POST, PUT, GET (the
order the spec mandates), ``urn:uuid:`` full URLs and conditional references
(``Patient?identifier=sys|val``) are resolved first, and any failing entry rolls the whole
Bundle back. A batch runs each entry in its own unit of work; failures become
OperationOutcomes in their response entries.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import orjson

from kyphofhir.errors import FhirError, Invalid, NotFound, PayloadTooLarge, PreconditionFailed
from kyphofhir.fhir import bundle as bundles
from kyphofhir.fhir.outcome import operation_outcome
from kyphofhir.services import crud
from kyphofhir.services.context import Services
from kyphofhir.services.search import search
from kyphofhir.store.base import UnitOfWork

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_URL = re.compile(
    r"^(?P<type>[A-Z][A-Za-z]+)(?:/(?P<id>[^/?]+)(?:/_history/(?P<vid>[^/?]+))?)?(?:\?(?P<query>.*))?$"
)
_CONDITIONAL_REF = re.compile(r"^[A-Z][A-Za-z]+\?.+")


@dataclass
class EntryRequest:
    index: int
    method: str
    rtype: str
    rid: str | None
    vid: str | None
    query: str | None
    full_url: str | None
    resource: Any
    request: dict[str, Any]
    target_id: str | None = None
    existing: Any = None
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prefer:
    """How much of each written resource a response carries."""

    return_: str = "representation"  # minimal | representation | OperationOutcome


def _parse_entries(body: dict[str, Any], base: str, max_entries: int) -> list[EntryRequest]:
    entries = body.get("entry") or []
    if not isinstance(entries, list):
        raise Invalid("Bundle.entry must be a list.", expression=["Bundle.entry"])
    if len(entries) > max_entries:
        raise PayloadTooLarge(
            f"The Bundle has {len(entries)} entries; at most {max_entries} are accepted."
        )
    out: list[EntryRequest] = []
    for i, entry in enumerate(entries):
        where = f"Bundle.entry[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
            raise Invalid(f"{where} has no request.", expression=[f"{where}.request"])
        request = entry["request"]
        method = str(request.get("method", "")).upper()
        if method not in ORDER:
            raise Invalid(
                f"{where}.request.method {request.get('method')!r} is not supported.",
                expression=[f"{where}.request.method"],
            )
        url = str(request.get("url", ""))
        if base and url.startswith(base + "/"):
            url = url[len(base) + 1 :]
        m = _URL.match(url.lstrip("/"))
        if not m:
            raise Invalid(
                f"{where}.request.url {url!r} is not a resource URL.",
                expression=[f"{where}.request.url"],
            )
        out.append(
            EntryRequest(
                index=i,
                method=method,
                rtype=m["type"],
                rid=m["id"],
                vid=m["vid"],
                query=m["query"],
                full_url=entry.get("fullUrl"),
                resource=entry.get("resource"),
                request=request,
            )
        )
    return out


def _if_match(entry: EntryRequest) -> int | None:
    value = entry.request.get("ifMatch")
    if value is None:
        return None
    digits = re.sub(r'^W/"|"$', "", str(value)).strip('"')
    if not digits.isdigit():
        raise Invalid(
            f"ifMatch {value!r} is not a version ETag.",
            expression=[f"Bundle.entry[{entry.index}].request.ifMatch"],
        )
    return int(digits)


def _wrap(entry: EntryRequest, exc: FhirError) -> FhirError:
    """The same error, located at the failing entry."""
    wrapped = type(exc)(
        f"Bundle.entry[{entry.index}] ({entry.method} {entry.rtype}): {exc.diagnostics}",
        expression=[f"Bundle.entry[{entry.index}]", *exc.expression],
        details_code=exc.details_code,
        issues=exc.extra_issues,
        code=exc.issue_code,
    )
    return wrapped


def process(svc: Services, body: Any, *, base: str, prefer: Prefer) -> bytes:
    """Run a transaction or batch Bundle; returns the response Bundle as JSON bytes."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise Invalid(
            "POST to the base URL takes a Bundle of type transaction or batch.",
            expression=["resourceType"],
        )
    kind = body.get("type")
    if kind not in ("transaction", "batch"):
        raise Invalid(
            f"Bundle.type must be transaction or batch, not {kind!r}.", expression=["Bundle.type"]
        )
    entries = _parse_entries(body, base, svc.settings.max_bundle_entries)
    if kind == "batch":
        return bundles.response_bundle(
            "batch-response", [_batch_entry(svc, e, base, prefer) for e in entries]
        )
    _check_duplicates(entries)

    originals = [e.resource for e in entries]  # _rewrite copies before it changes anything

    def work(uow: UnitOfWork) -> list[dict[str, Any]]:
        # Services.run may call this again after a lost race: start from the request.
        for entry, original in zip(entries, originals, strict=True):
            entry.resource, entry.result, entry.target_id, entry.existing = original, {}, None, None
        ordered = sorted(entries, key=lambda e: ORDER[e.method])
        for entry in ordered:
            if entry.method == "DELETE":
                _guard(entry, partial(_delete, svc, uow, entry, base, prefer))
        id_map = _resolve_identities(svc, uow, entries)
        for entry in entries:
            if entry.method in ("POST", "PUT") and isinstance(entry.resource, dict):
                entry.resource = _rewrite(svc, uow, entry, copy.deepcopy(entry.resource), id_map)
        for entry in ordered:
            if entry.method == "POST":
                _guard(entry, partial(_post, svc, uow, entry, base, prefer))
            elif entry.method in ("PUT", "PATCH"):
                _guard(entry, partial(_put, svc, uow, entry, base, prefer))
            elif entry.method in ("GET", "HEAD"):
                _guard(entry, partial(_get, svc, uow, entry, base))
        return [e.result for e in entries]

    try:
        results = svc.run(True, work)
    except RecursionError:
        raise Invalid(
            "A resource in the Bundle is nested too deeply to be processed.",
            details_code="MSG_CANT_PARSE_CONTENT",
        ) from None
    return bundles.response_bundle("transaction-response", results)


def _guard(entry: EntryRequest, step: Callable[[], None]) -> None:
    try:
        step()
    except FhirError as exc:
        raise _wrap(entry, exc) from exc


def _check_duplicates(entries: list[EntryRequest]) -> None:
    seen: set[str] = set()
    for entry in entries:
        if entry.method in ("PUT", "DELETE") and entry.rid and not entry.query:
            key = f"{entry.rtype}/{entry.rid}"
            if key in seen:
                raise Invalid(
                    f"Bundle.entry[{entry.index}]: {key} appears more than once in the "
                    "transaction.",
                    expression=[f"Bundle.entry[{entry.index}]"],
                    details_code="MSG_TRANSACTION_DUPLICATE_ID",
                )
            seen.add(key)


def _resolve_identities(
    svc: Services, uow: UnitOfWork, entries: list[EntryRequest]
) -> dict[str, str]:
    """Decide the id of every POST/PUT entry; map full URLs to ``Type/id``."""
    id_map: dict[str, str] = {}
    for entry in entries:
        if entry.method == "POST":
            crud.check_type(entry.rtype)
            if_none_exist = entry.request.get("ifNoneExist")
            if if_none_exist:
                found = _guarded_matches(svc, uow, entry, str(if_none_exist))
                if found:
                    entry.existing = found[0]
                    entry.target_id = found[0].id
            if entry.target_id is None:
                entry.target_id = str(uuid.uuid4())
        elif entry.method == "PUT":
            crud.check_type(entry.rtype)
            if entry.query is not None:
                found = _guarded_matches(svc, uow, entry, entry.query)
                body_id = entry.resource.get("id") if isinstance(entry.resource, dict) else None
                entry.target_id = found[0].id if found else (body_id or str(uuid.uuid4()))
            else:
                entry.target_id = entry.rid
        else:
            continue
        if entry.full_url:
            id_map[entry.full_url] = f"{entry.rtype}/{entry.target_id}"
    return id_map


def _guarded_matches(
    svc: Services, uow: UnitOfWork, entry: EntryRequest, criteria: str
) -> list[Any]:
    try:
        found = crud.single_match(
            svc,
            uow,
            entry.rtype,
            criteria,
            what="Transaction entry",
            details_code="MSG_TRANSACTION_MULTIPLE_MATCHES",
        )
    except FhirError as exc:
        raise _wrap(entry, exc) from exc
    return [found] if found is not None else []


def _rewrite(
    svc: Services, uow: UnitOfWork, entry: EntryRequest, node: Any, id_map: dict[str, str]
) -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                node[key] = _resolve_reference(svc, uow, entry, value, id_map)
            else:
                node[key] = _rewrite(svc, uow, entry, value, id_map)
        return node
    if isinstance(node, list):
        return [_rewrite(svc, uow, entry, item, id_map) for item in node]
    return node


def _resolve_reference(
    svc: Services, uow: UnitOfWork, entry: EntryRequest, value: str, id_map: dict[str, str]
) -> str:
    if value in id_map:
        return id_map[value]
    if value.startswith(("urn:uuid:", "urn:oid:")):
        raise _wrap(
            entry,
            NotFound(
                f"Reference {value!r} does not match the fullUrl of any entry in the transaction.",
                details_code="MSG_TRANSACTION_MISSING_REFERENCE",
            ),
        )
    if _CONDITIONAL_REF.match(value):
        rtype, _, criteria = value.partition("?")
        try:
            crud.check_type(rtype)
            found = crud.matches(svc, uow, rtype, criteria)
        except FhirError as exc:
            raise _wrap(entry, exc) from exc
        if len(found) != 1:
            raise _wrap(
                entry,
                PreconditionFailed(
                    f"Conditional reference {value!r} matches {len(found)} resources; "
                    "it must match exactly one.",
                    details_code="MSG_TRANSACTION_REFERENCE_MATCHES",
                ),
            )
        return f"{rtype}/{found[0].id}"
    return value


def _written(entry: EntryRequest, result: crud.WriteResult, base: str, prefer: Prefer) -> None:
    status = "201 Created" if result.status == 201 else "200 OK"
    resource: Any = None
    outcome = None
    if prefer.return_ == "representation":
        resource = bundles.fragment(result.stored)
    elif prefer.return_ == "OperationOutcome":
        outcome = operation_outcome([])
    entry.result = bundles.response_entry(
        status, stored=result.stored, base=base, resource=resource, outcome=outcome
    )


def _post(svc: Services, uow: UnitOfWork, entry: EntryRequest, base: str, prefer: Prefer) -> None:
    if entry.existing is not None:
        _written(entry, crud.WriteResult(entry.existing, 200, changed=False), base, prefer)
        return
    result = crud.create(svc, uow, entry.rtype, entry.resource, new_id=entry.target_id)
    _written(entry, result, base, prefer)


def _put(svc: Services, uow: UnitOfWork, entry: EntryRequest, base: str, prefer: Prefer) -> None:
    if entry.method == "PATCH":
        raise Invalid("PATCH is not supported.", details_code="MSG_OP_NOT_ALLOWED")
    body = entry.resource
    if entry.query is not None and isinstance(body, dict) and "id" not in body:
        body = {**body, "id": entry.target_id}
    assert entry.target_id is not None
    result = crud.update(svc, uow, entry.rtype, entry.target_id, body, if_match=_if_match(entry))
    _written(entry, result, base, prefer)


def _delete(svc: Services, uow: UnitOfWork, entry: EntryRequest, base: str, prefer: Prefer) -> None:
    if entry.query is not None:
        result = crud.conditional_delete(svc, uow, entry.rtype, entry.query)
    elif entry.rid is not None:
        result = crud.delete(svc, uow, entry.rtype, entry.rid, if_match=_if_match(entry))
    else:
        raise Invalid("DELETE needs an id or search criteria.", details_code="MSG_OP_NOT_ALLOWED")
    if result.stored is not None:
        entry.result = bundles.response_entry("204 No Content", stored=result.stored)
    else:
        entry.result = bundles.response_entry("204 No Content")


def _get(svc: Services, uow: UnitOfWork, entry: EntryRequest, base: str) -> None:
    if entry.rid is not None and entry.vid is not None:
        stored = crud.vread(svc, uow, entry.rtype, entry.rid, entry.vid)
    elif entry.rid is not None:
        stored = crud.read(svc, uow, entry.rtype, entry.rid)
    else:
        items = parse_qsl(entry.query or "", keep_blank_values=True)
        found = search(svc, uow, entry.rtype, items, snapshot=False)
        body = bundles.searchset(base, found.page.items, total=found.total, links=[])
        entry.result = bundles.response_entry("200 OK", resource=orjson.Fragment(body))
        return
    entry.result = bundles.response_entry(
        "200 OK", stored=stored, base=base, resource=bundles.fragment(stored)
    )


def _batch_entry(svc: Services, entry: EntryRequest, base: str, prefer: Prefer) -> dict[str, Any]:
    def one(uow: UnitOfWork) -> dict[str, Any]:
        entry.result = {}
        if entry.method == "DELETE":
            _delete(svc, uow, entry, base, prefer)
        elif entry.method == "POST":
            if_none_exist = entry.request.get("ifNoneExist")
            result = crud.create(
                svc,
                uow,
                entry.rtype,
                entry.resource,
                if_none_exist=str(if_none_exist) if if_none_exist else None,
            )
            _written(entry, result, base, prefer)
        elif entry.method in ("PUT", "PATCH"):
            if entry.method == "PATCH":
                raise Invalid("PATCH is not supported.", details_code="MSG_OP_NOT_ALLOWED")
            if entry.query is not None:
                result = crud.conditional_update(
                    svc, uow, entry.rtype, entry.query, entry.resource, if_match=_if_match(entry)
                )
            else:
                if entry.rid is None:
                    raise Invalid("PUT needs an id or search criteria.")
                result = crud.update(
                    svc, uow, entry.rtype, entry.rid, entry.resource, if_match=_if_match(entry)
                )
            _written(entry, result, base, prefer)
        else:
            _get(svc, uow, entry, base)
        return entry.result

    try:
        return svc.run(entry.method != "GET", one)
    except FhirError as exc:
        return bundles.response_entry(
            f"{exc.status} {_REASONS.get(exc.status, 'Error')}",
            outcome=operation_outcome(exc.issues),
        )


_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}
