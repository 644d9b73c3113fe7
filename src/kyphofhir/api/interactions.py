"""Type- and instance-level interactions: thin views that parse, call services, render."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, request
from flask.views import MethodView

from kyphofhir.errors import Invalid, MethodNotAllowed
from kyphofhir.fhir import bundle as bundles
from kyphofhir.fhir.outcome import information, operation_outcome
from kyphofhir.services import crud
from kyphofhir.services import search as search_service
from kyphofhir.services.context import Services
from kyphofhir.store.base import Page, UnitOfWork

from .negotiation import (
    base_url,
    fhir_response,
    if_modified_since,
    parse_body,
    parse_etag,
    prefer_return,
    prefer_strict,
    version_headers,
)


def services() -> Services:
    svc: Services = current_app.extensions["kyphofhir"]
    return svc


def write_response(result: crud.WriteResult) -> Response:
    """Status, Location/ETag/Last-Modified and the body the client's Prefer asks for."""
    mode = prefer_return(request)
    body: Any
    if mode == "minimal":
        body = None
    elif mode == "OperationOutcome":
        body = information(
            "Created."
            if result.status == 201
            else ("Updated." if result.changed else "Existing resource matched.")
        )
    else:
        body = result.stored.text.encode("utf-8") if result.stored.text else None
    return fhir_response(body, result.status, version_headers(result.stored, location=True))


def delete_response(result: crud.DeleteResult) -> Response:
    headers = version_headers(result.stored) if result.stored else {}
    if prefer_return(request) == "OperationOutcome":
        text = "Deleted." if result.stored else "Nothing to delete."
        return fhir_response(
            information(text, "MSG_DELETED_DONE" if result.stored else None), 200, headers
        )
    return fhir_response(None, 204, headers)


def _criteria() -> str:
    return request.query_string.decode("utf-8")


def _search_items() -> list[tuple[str, str]]:
    items = list(request.args.items(multi=True))
    if request.method == "POST":
        items += list(request.form.items(multi=True))
    return [(k, v) for k, v in items if k not in ("_format", "_pretty")]


def _page_links(
    path: str, items: list[tuple[str, str]], next_page: str | None
) -> list[tuple[str, str]]:
    """``self`` and, with the ``_page`` token of the next page, ``next``."""
    keep = [(k, v) for k, v in items if k != "_page"]
    self_query = urlencode(items)
    links = [("self", f"{path}?{self_query}" if self_query else path)]
    if next_page is not None:
        links.append(("next", f"{path}?{urlencode([*keep, ('_page', next_page)])}"))
    return links


def search_response(rtype: str | None, compartment: tuple[str, str] | None = None) -> Response:
    """Type-level search, system-level search (``rtype`` None) or, with ``compartment``
    ``(Patient, id)``, a compartment search (``rtype`` a type) or ``$everything`` (None)."""
    svc = services()
    items = _search_items()
    strict = prefer_strict(request)

    def work(uow: UnitOfWork) -> search_service.SearchResult:
        if compartment is not None and rtype is None:
            return search_service.everything(svc, uow, *compartment, items)
        if compartment is not None and rtype is not None:
            return search_service.compartment_search(
                svc, uow, *compartment, rtype, items, strict=strict
            )
        if rtype is None:
            return search_service.system_search(svc, uow, items, strict=strict)
        return search_service.search(svc, uow, rtype, items, strict=strict)

    result = svc.run(False, work)
    base = base_url()
    outcome = operation_outcome(result.warnings) if result.warnings else None
    body = bundles.searchset(
        base,
        result.page.items,
        total=result.total,
        links=_page_links(
            "/".join([base, *(compartment or ()), *([rtype] if rtype else [])])
            + ("/$everything" if compartment and not rtype else ""),
            items,
            result.next_page,
        ),
        outcome=outcome,
        included=result.included,
    )
    return fhir_response(body)


def history_response(rtype: str | None, rid: str | None) -> Response:
    svc = services()
    args = request.args

    def work(uow: UnitOfWork) -> Page:
        return search_service.history(
            svc,
            uow,
            rtype,
            rid,
            since=args.get("_since"),
            count=args.get("_count"),
            page=args.get("_page"),
        )

    page = svc.run(False, work)
    base = base_url()
    path = "/".join(p for p in (base, rtype, rid, "_history") if p)
    items = [(k, v) for k, v in args.items(multi=True) if k not in ("_format",)]
    return fhir_response(
        bundles.history(
            base,
            page.items,
            total=page.total,
            links=_page_links(
                path,
                items,
                search_service.encode_cursor(page.next_cursor) if page.next_cursor else None,
            ),
        )
    )


class TypeAPI(MethodView):
    """``[base]/[type]``: search, create, conditional update and delete."""

    def get(self, rtype: str) -> Response:
        return search_response(rtype)

    def post(self, rtype: str) -> Response:
        svc = services()
        body = parse_body(request)
        if_none_exist = request.headers.get("If-None-Exist")
        result = svc.run(
            True, lambda uow: crud.create(svc, uow, rtype, body, if_none_exist=if_none_exist)
        )
        return write_response(result)

    def put(self, rtype: str) -> Response:
        svc = services()
        criteria = _criteria()
        if not criteria:
            raise MethodNotAllowed(
                "PUT on a type needs search criteria (conditional update) or an id in the URL."
            )
        body = parse_body(request)
        if_match = parse_etag(request.headers.get("If-Match"), "If-Match")
        result = svc.run(
            True,
            lambda uow: crud.conditional_update(svc, uow, rtype, criteria, body, if_match=if_match),
        )
        return write_response(result)

    def delete(self, rtype: str) -> Response:
        svc = services()
        criteria = _criteria()
        if not criteria:
            raise MethodNotAllowed("DELETE on a type needs search criteria (conditional delete).")
        result = svc.run(True, lambda uow: crud.conditional_delete(svc, uow, rtype, criteria))
        return delete_response(result)


class InstanceAPI(MethodView):
    """``[base]/[type]/[id]``: read, update, delete."""

    def get(self, rtype: str, rid: str) -> Response:
        svc = services()
        stored = svc.run(False, lambda uow: crud.read(svc, uow, rtype, rid))
        headers = version_headers(stored)
        none_match = request.headers.get("If-None-Match")
        if none_match and none_match.strip() in (headers["ETag"], f'"{stored.version_id}"', "*"):
            return fhir_response(None, 304, headers)
        if if_modified_since(request, stored):
            return fhir_response(None, 304, headers)
        assert stored.text is not None
        return fhir_response(stored.text.encode("utf-8"), 200, headers)

    def put(self, rtype: str, rid: str) -> Response:
        svc = services()
        body = parse_body(request)
        if_match = parse_etag(request.headers.get("If-Match"), "If-Match")
        result = svc.run(
            True, lambda uow: crud.update(svc, uow, rtype, rid, body, if_match=if_match)
        )
        return write_response(result)

    def delete(self, rtype: str, rid: str) -> Response:
        svc = services()
        if_match = parse_etag(request.headers.get("If-Match"), "If-Match")
        result = svc.run(True, lambda uow: crud.delete(svc, uow, rtype, rid, if_match=if_match))
        return delete_response(result)

    def patch(self, rtype: str, rid: str) -> Response:
        raise MethodNotAllowed("PATCH is not supported by this server; use PUT.")


def vread(rtype: str, rid: str, vid: str) -> Response:
    svc = services()
    stored = svc.run(False, lambda uow: crud.vread(svc, uow, rtype, rid, vid))
    assert stored.text is not None
    return fhir_response(stored.text.encode("utf-8"), 200, version_headers(stored))


def type_search_post(rtype: str) -> Response:
    if request.mimetype and request.mimetype != "application/x-www-form-urlencoded":
        raise Invalid("POST _search takes an application/x-www-form-urlencoded body.")
    return search_response(rtype)


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/<fhir_type:rtype>", view_func=TypeAPI.as_view("type"), strict_slashes=False)
    bp.add_url_rule("/<fhir_type:rtype>/<rid>", view_func=InstanceAPI.as_view("instance"))
    bp.add_url_rule("/<fhir_type:rtype>/_search", view_func=type_search_post, methods=["POST"])
    bp.add_url_rule(
        "/<fhir_type:rtype>/_history",
        view_func=lambda rtype: history_response(rtype, None),
        endpoint="type_history",
        methods=["GET"],
    )
    bp.add_url_rule(
        "/<fhir_type:rtype>/<rid>/_history",
        view_func=lambda rtype, rid: history_response(rtype, rid),
        endpoint="instance_history",
        methods=["GET"],
    )
    bp.add_url_rule("/<fhir_type:rtype>/<rid>/_history/<vid>", view_func=vread, methods=["GET"])
    bp.add_url_rule(
        "/<fhir_type:ctype>/<cid>/<fhir_type:rtype>",
        view_func=lambda ctype, cid, rtype: search_response(rtype, (ctype, cid)),
        endpoint="compartment_search",
        methods=["GET"],
    )
    bp.add_url_rule(
        "/<fhir_type:ctype>/<cid>/$everything",
        view_func=lambda ctype, cid: search_response(None, (ctype, cid)),
        endpoint="everything",
        methods=["GET", "POST"],
    )
