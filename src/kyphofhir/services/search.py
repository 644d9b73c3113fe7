"""Search and history interactions: parsing, paging, snapshots, totals, warnings.

A search with more than one page keeps a snapshot: the ordered ids of its first
``search_snapshot_rows`` matches when it started (one write of the store), so its page
links return exactly those resources, once each, however other clients write meanwhile;
after the snapshot (a larger result) and for history, paging continues by keyset cursor
(the store's row order), never ``OFFSET``. Page links are opaque URL-safe base64 tokens
in ``_page``: ``k1:<keyset cursor>`` or ``s1:<snapshot id>:<position>``. A snapshot that
has expired answers ``410``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from kyphofhir.errors import Invalid, Issue, NotFound, PageExpired
from kyphofhir.fhir.datetimes import instant_to_us, parse_range, us_to_instant
from kyphofhir.fhir.models import SERVED_TYPES
from kyphofhir.fhir.summary import subset
from kyphofhir.search.params import SearchQuery, parse_count, parse_query
from kyphofhir.services import terminology
from kyphofhir.services.context import NeedsWriteUnit, Services
from kyphofhir.services.crud import check_id, check_type
from kyphofhir.store.base import InvalidCursor, Page, Snapshot, StoredResource, UnitOfWork


def encode_cursor(cursor: str, scheme: str = "k1") -> str:
    """The ``_page`` token of a keyset cursor (``k1``) or snapshot position (``s1``)."""
    return base64.urlsafe_b64encode(f"{scheme}:{cursor}".encode()).decode().rstrip("=")


def _decode(token: str | None) -> tuple[str, str] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _bad_page() from None
    scheme, sep, rest = raw.partition(":")
    if not sep or scheme not in ("k1", "s1"):
        raise _bad_page()
    return scheme, rest


def decode_cursor(token: str | None) -> str | None:
    """The keyset cursor of a ``k1`` token (history pages only have those)."""
    decoded = _decode(token)
    if decoded is None:
        return None
    if decoded[0] != "k1":
        raise _bad_page()
    return decoded[1]


def _bad_page() -> Invalid:
    return Invalid(
        "The _page token is not valid for this search; start again from the first page.",
        expression=["_page"],
        details_code="MSG_PARAM_INVALID",
    )


@dataclass
class SearchResult:
    query: SearchQuery
    page: Page
    total: int | None
    warnings: list[Issue]
    included: list[StoredResource] = field(default_factory=list)
    next_page: str | None = None  # the ``_page`` token of the next page


def search(
    svc: Services,
    uow: UnitOfWork,
    rtype: str,
    items: list[tuple[str, str]],
    *,
    strict: bool = False,
    snapshot: bool = True,
) -> SearchResult:
    """A type-level search; ``snapshot=False`` where no page link is handed out (a
    search inside a transaction answers its first page only)."""
    check_type(rtype)
    query = _parse(svc, rtype, items)
    return _run(svc, uow, query, rtype, items, strict, snapshot)


def _parse(svc: Services, rtype: str, items: list[tuple[str, str]]) -> SearchQuery:
    """Parse with the server's page-size settings; ``_page`` is the service's, not a filter."""
    return parse_query(
        svc.registry,
        rtype,
        [(k, v) for k, v in items if k != "_page"],
        default_count=svc.settings.default_page_size,
        max_count=svc.settings.max_page_size,
    )


def _run(
    svc: Services,
    uow: UnitOfWork,
    query: SearchQuery,
    rtype: str,
    items: list[tuple[str, str]],
    strict: bool,
    snapshot: bool = True,
) -> SearchResult:
    page_token = next((v for k, v in items if k == "_page"), None)
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
                    f"Search parameter {name!r} is not supported for "
                    f"{'every type searched' if rtype == '*' else rtype} and was ignored.",
                    (name,),
                    "MSG_PARAM_UNKNOWN",
                )
            )
    token = _decode(page_token)
    query = terminology.resolve(svc, uow, query)
    if query.summary_count:
        return SearchResult(query, Page([], None, None), uow.count(query), warnings)
    if token is not None and token[0] == "s1":
        page, next_page, total = _snapshot_page(svc, uow, query, rtype, items, token[1])
    else:
        try:
            page = uow.search(query, token[1] if token else None)
        except InvalidCursor:
            raise _bad_page() from None
        total = page.total
        next_page = encode_cursor(page.next_cursor) if page.next_cursor else None
        keep = snapshot and svc.settings.search_snapshot_rows > 0
        if token is None and next_page is not None and keep:
            page, next_page, total = _first_snapshot_page(svc, uow, query, rtype, items)
    if query.total == "none":
        total = None
    elif total is None:
        total = uow.count(query)
    included = _included(svc, uow, query, page.items) if query.includes else []
    if query.summary or query.elements:
        page = Page([_subset(r, query) for r in page.items], page.next_cursor, page.total)
        included = [_subset(r, query) for r in included]
    return SearchResult(query, page, total, warnings, included, next_page)


# Parameters that only shape a page, not which resources match or in what order: a page
# link may change them and still continue the same snapshot.
_PAGE_SHAPE = frozenset(
    {"_page", "_count", "_total", "_summary", "_elements", "_include", "_revinclude"}
)


def _query_key(query: SearchQuery, rtype: str, items: list[tuple[str, str]]) -> str:
    """What a snapshot belongs to: the type, compartment, criteria and sort."""
    criteria = sorted((k, v) for k, v in items if k.partition(":")[0] not in _PAGE_SHAPE)
    text = orjson.dumps([rtype, query.compartment and query.compartment[:2], criteria])
    return hashlib.sha256(text).hexdigest()


def _first_snapshot_page(
    svc: Services, uow: UnitOfWork, query: SearchQuery, rtype: str, items: list[tuple[str, str]]
) -> tuple[Page, str | None, int | None]:
    """More than one page: keep the result as a snapshot and answer from it."""
    if not uow.writable:
        raise NeedsWriteUnit()
    snap = uow.snapshot(
        query,
        _query_key(query, rtype, items),
        svc.settings.search_snapshot_rows,
        svc.settings.search_snapshot_ttl,
    )
    return _from_snapshot(uow, query, snap, 0)


def _snapshot_page(
    svc: Services,
    uow: UnitOfWork,
    query: SearchQuery,
    rtype: str,
    items: list[tuple[str, str]],
    cursor: str,
) -> tuple[Page, str | None, int | None]:
    sid, _, pos = cursor.partition(":")
    if not pos.isdigit():
        raise _bad_page()
    snap = uow.get_snapshot(sid)
    if snap is None or snap.expires < instant_to_us(datetime.now(UTC)):
        raise PageExpired(
            "This page link has expired (search results are kept for "
            f"{svc.settings.search_snapshot_ttl} s); run the search again.",
            expression=["_page"],
        )
    if snap.query_key != _query_key(query, rtype, items):
        raise _bad_page()
    return _from_snapshot(uow, query, snap, int(pos))


def _from_snapshot(
    uow: UnitOfWork, query: SearchQuery, snap: Snapshot, after: int
) -> tuple[Page, str | None, int | None]:
    page = uow.snapshot_page(snap, after, query.count)
    if page.next_cursor is not None:
        next_page: str | None = encode_cursor(f"{snap.sid}:{page.next_cursor}", "s1")
    else:  # the kept rows are done; a larger result goes on by keyset
        next_page = encode_cursor(snap.tail) if snap.tail else None
    return page, next_page, snap.total


def system_search(
    svc: Services, uow: UnitOfWork, items: list[tuple[str, str]], *, strict: bool = False
) -> SearchResult:
    """``GET [base]?_type=A,B&...``: the same parameters over several types at once.

    Only parameters every listed type has can be used (the common ``_id``,
    ``_lastUpdated``, ``_tag``, ``_profile``, ``_security``, ``_source``, or e.g.
    ``patient`` across clinical types); ``_sort`` only on ``_id`` and ``_lastUpdated``.
    """
    types_raw = ",".join(v for k, v in items if k == "_type")
    types = [t.strip() for t in types_raw.split(",") if t.strip()] or list(SERVED_TYPES)
    for rtype in types:
        if rtype not in SERVED_TYPES:
            raise Invalid(
                f"_type: {rtype!r} is not a type this server serves.", expression=["_type"]
            )
    rest = [(k, v) for k, v in items if k not in ("_type", "_page")]
    queries = [_parse(svc, t, rest) for t in types]
    first = queries[0]
    if first.includes:
        raise Invalid(
            "_include/_revinclude are not supported in system-level search.",
            expression=["_include"],
        )
    if any(p.code not in ("_id", "_lastUpdated") for p, _ in first.sort):
        raise Invalid(
            "System-level search sorts only on _id and _lastUpdated.", expression=["_sort"]
        )
    unknown_somewhere = {name for q in queries for name in q.unknown}
    unknown_everywhere = {n for n in unknown_somewhere if all(n in q.unknown for q in queries)}
    partial = sorted(unknown_somewhere - unknown_everywhere)
    if partial:
        raise Invalid(
            f"Search parameter(s) {', '.join(partial)} are not defined for every type in "
            f"_type ({', '.join(types)}); narrow _type.",
            expression=partial,
            details_code="MSG_PARAM_UNKNOWN",
        )
    unknown = sorted(unknown_everywhere)
    combined = dataclasses.replace(
        first, resource_type="*", clauses=[], unknown=unknown, union=queries
    )
    return _run(svc, uow, combined, "*", items, strict)


MAX_INCLUDE_ROUNDS = 10


def _included(
    svc: Services, uow: UnitOfWork, query: SearchQuery, matches: Sequence[StoredResource]
) -> list[StoredResource]:
    """Resources added by ``_include``/``_revinclude`` (``:iterate`` repeats on the new ones).

    More than ``max_include`` is a 400 that says so, never a silently shortened page.
    """
    cap = svc.settings.max_include
    seen = {(r.type, r.id) for r in matches}
    included: list[StoredResource] = []
    frontier: Sequence[StoredResource] = matches
    for round_ in range(MAX_INCLUDE_ROUNDS):
        new: list[StoredResource] = []
        for inc in query.includes:
            if round_ > 0 and not inc.iterate:
                continue
            limit = cap - len(included) - len(new) + 1
            if inc.reverse:
                targets = [(r.type, r.id) for r in frontier]
                found = uow.referencing(targets, inc.source, inc.param, limit) if targets else []
            else:
                sources = [r.id for r in frontier if r.type == inc.source]
                found = (
                    uow.referenced(sources, inc.source, inc.param, inc.target, limit)
                    if sources
                    else []
                )
            for res in found:
                if (res.type, res.id) not in seen:
                    seen.add((res.type, res.id))
                    new.append(res)
            if len(included) + len(new) > cap:
                raise Invalid(
                    f"_include/_revinclude would add more than {cap} resources to this page; "
                    "lower _count or narrow the includes.",
                    expression=["_include"],
                    details_code="MSG_PARAM_INVALID",
                )
        included.extend(new)
        frontier = new
        if not new or not any(i.iterate for i in query.includes):
            break
    return included


def _subset(res: StoredResource, query: SearchQuery) -> StoredResource:
    content = subset(res.json(), summary=query.summary, elements=query.elements)
    return dataclasses.replace(res, text=orjson.dumps(content).decode("utf-8"))


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
    size = (
        svc.settings.default_page_size
        if count is None
        else parse_count(count, svc.settings.max_page_size)
    )
    try:
        return uow.history(
            rtype, rid, since=parse_since(since), count=size, cursor=decode_cursor(page)
        )
    except InvalidCursor:
        raise _bad_page() from None


def compartment_search(
    svc: Services,
    uow: UnitOfWork,
    ctype: str,
    cid: str,
    rtype: str,
    items: list[tuple[str, str]],
    *,
    strict: bool = False,
) -> SearchResult:
    """``GET Patient/1/Observation?...``: a type search limited to one Patient's compartment."""
    params = _compartment_params(svc, uow, ctype, cid).get(rtype)
    check_type(rtype)
    if not params:
        raise Invalid(
            f"{rtype} resources are not in the {ctype} compartment.",
            details_code="MSG_PARAM_INVALID",
        )
    query = _parse(svc, rtype, items)
    query.compartment = (ctype, cid, params)
    return _run(svc, uow, query, rtype, items, strict)


def everything(
    svc: Services, uow: UnitOfWork, ctype: str, cid: str, items: list[tuple[str, str]]
) -> SearchResult:
    """``Patient/1/$everything``: the patient and every resource in its compartment.

    ``_since`` (only resources updated since), ``_type`` (which types), ``_count`` and
    paging as for searches; one statement over all the types.
    """
    compartment = _compartment_params(svc, uow, ctype, cid)
    types_raw = ",".join(v for k, v in items if k == "_type")
    types = [t.strip() for t in types_raw.split(",") if t.strip()] or sorted(compartment)
    for rtype in types:
        if rtype not in compartment:
            raise Invalid(
                f"_type: {rtype!r} is not in the {ctype} compartment.", expression=["_type"]
            )
    since = next((v for k, v in items if k == "_since"), None)
    base = [("_lastUpdated", f"ge{since}")] if since else []
    base += [(k, v) for k, v in items if k == "_count"]
    queries = []
    for rtype in types:
        query = _parse(svc, rtype, base)
        query.compartment = (ctype, cid, compartment[rtype])
        queries.append(query)
    combined = dataclasses.replace(queries[0], resource_type="*", clauses=[], union=queries)
    return _run(svc, uow, combined, "*", items, strict=False)


def _compartment_params(
    svc: Services, uow: UnitOfWork, ctype: str, cid: str
) -> dict[str, tuple[str, ...]]:
    if ctype != "Patient":
        raise NotFound(f"Only the Patient compartment is supported, not {ctype}.")
    check_id(cid)
    found = uow.get(ctype, cid)
    if found is None or found.deleted:
        raise NotFound(f"Resource {ctype}/{cid} was not found.")
    return svc.compartment
