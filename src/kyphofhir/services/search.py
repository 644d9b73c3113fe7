"""Search and history interactions: parsing, paging cursors, totals, warnings.

Paging uses keyset cursors (the store's row order), never ``OFFSET``, so a page link
keeps working while other clients write. A cursor is opaque to clients: a URL-safe
base64 token carried in ``_page``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from kyphofhir.errors import Invalid, Issue, NotFound
from kyphofhir.fhir.datetimes import parse_range, us_to_instant
from kyphofhir.search.params import SearchQuery, parse_count, parse_query
from kyphofhir.services.context import Services
from kyphofhir.services.crud import check_id, check_type
from kyphofhir.store.base import Page, UnitOfWork


def encode_cursor(cursor: str) -> str:
    return base64.urlsafe_b64encode(f"k1:{cursor}".encode()).decode().rstrip("=")


def decode_cursor(token: str | None) -> str | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Invalid("The _page token is not valid.", expression=["_page"]) from None
    if not raw.startswith("k1:") or not raw[3:].isdigit():
        raise Invalid("The _page token is not valid.", expression=["_page"])
    return raw[3:]


@dataclass
class SearchResult:
    query: SearchQuery
    page: Page
    total: int | None
    warnings: list[Issue]


def search(
    svc: Services,
    uow: UnitOfWork,
    rtype: str,
    items: list[tuple[str, str]],
    *,
    strict: bool = False,
) -> SearchResult:
    check_type(rtype)
    page_token = next((v for k, v in items if k == "_page"), None)
    query = parse_query(
        svc.registry,
        rtype,
        [(k, v) for k, v in items if k != "_page"],
        default_count=svc.settings.default_page_size,
        max_count=svc.settings.max_page_size,
    )
    warnings: list[Issue] = []
    if query.unknown:
        if strict:
            raise Invalid(
                f"Unknown or unsupported search parameter(s): {', '.join(query.unknown)}.",
                expression=query.unknown,
                details_code="MSG_PARAM_UNKNOWN",
            )
        for name in query.unknown:
            warnings.append(
                Issue(
                    "warning",
                    "not-supported",
                    f"Search parameter {name!r} is not supported for {rtype} and was ignored.",
                    (name,),
                    "MSG_PARAM_UNKNOWN",
                )
            )
    cursor = decode_cursor(page_token)
    if query.summary_count:
        return SearchResult(query, Page([], None, None), uow.count(query), warnings)
    page = uow.search(query, cursor)
    total: int | None = None
    if query.total != "none":
        total = page.total if page.total is not None else uow.count(query)
    return SearchResult(query, page, total, warnings)


def parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        lo, _ = parse_range(value)
    except ValueError:
        raise Invalid(
            f"_since must be a FHIR instant, got {value!r}.", expression=["_since"]
        ) from None
    return us_to_instant(lo)


def history(
    svc: Services,
    uow: UnitOfWork,
    rtype: str | None,
    rid: str | None,
    *,
    since: str | None,
    count: str | None,
    page: str | None,
) -> Page:
    if rtype is not None:
        check_type(rtype)
    if rid is not None and rtype is not None:
        check_id(rid)
        if uow.get(rtype, rid) is None:
            raise NotFound(f"Resource {rtype}/{rid} was not found.")
    return uow.history(
        rtype,
        rid,
        since=parse_since(since),
        count=(
            svc.settings.default_page_size
            if count is None
            else parse_count(count, svc.settings.max_page_size)
        ),
        cursor=decode_cursor(page),
    )
