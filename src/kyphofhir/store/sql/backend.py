"""The SQL resource store (SQLite and PostgreSQL through SQLAlchemy Core).

A unit of work is one database transaction. A write stores the ``resource`` row, its
``resource_version`` row and the index rows of the new version together.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from kyphofhir.fhir.datetimes import instant_to_us, us_to_instant
from kyphofhir.search.extract import IndexRows
from kyphofhir.search.params import SearchQuery
from kyphofhir.store.base import (
    DuplicateResource,
    InvalidCursor,
    Page,
    Snapshot,
    StoredResource,
    StoreUnavailable,
    VersionConflict,
)
from kyphofhir.store.sql.engine import WRITE_OPTION, make_engine
from kyphofhir.store.sql.query import sort_expressions, where_clauses
from kyphofhir.store.sql.schema import (
    INDEX_TABLES,
    resource,
    resource_version,
    search_snapshot,
    search_snapshot_row,
    spidx_reference,
)

log = logging.getLogger(__name__)

_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected


class SqlStore:
    """A :class:`~kyphofhir.store.base.ResourceStore` on an SQLAlchemy engine."""

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name
        # SQLite has one writer at a time. Threads of this process queue here, where the
        # hand-off is immediate, instead of in SQLite's busy handler, which sleeps in
        # steps of up to 100 ms (measured: p95 of a 100-resource Bundle 1.2 s vs 0.25 s
        # p50). Other processes still meet the busy handler.
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None

    @contextmanager
    def unit(self, *, write: bool) -> Iterator[SqlUnit]:
        lock = self._write_lock if write else None
        if lock is not None:
            lock.acquire()
        try:
            with self.engine.connect() as conn:
                if write:
                    conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    unit = SqlUnit(conn, self.dialect, writable=write)
                    yield unit
                    unit.flush()
        except IntegrityError as exc:
            raise DuplicateResource(str(exc.orig)) from exc
        except DBAPIError as exc:
            # PostgreSQL serialization failures and deadlocks (psycopg raises them as
            # OperationalError subclasses) are lost races: the caller retries.
            if getattr(exc.orig, "sqlstate", "") in _RETRYABLE_SQLSTATES:
                raise VersionConflict(str(exc.orig)) from exc
            if isinstance(exc, OperationalError):
                log.warning("database operation failed: %s", exc.orig)
                raise StoreUnavailable(str(exc.orig)) from exc
            raise
        finally:
            if lock is not None:
                lock.release()

    def dispose(self) -> None:
        self.engine.dispose()


_RESOURCE_COLS = (
    resource.c.rid,
    resource.c.res_type,
    resource.c.res_id,
    resource.c.version_id,
    resource.c.last_updated,
    resource.c.deleted,
    resource.c.content,
)


def _parse_cursor(cursor: str | None, size: int) -> list[Any] | None:
    if cursor is None:
        return None
    try:
        values = orjson.loads(cursor)
    except orjson.JSONDecodeError:
        raise InvalidCursor(cursor) from None
    if (
        not isinstance(values, list)
        or len(values) != size
        or not isinstance(values[-1], int)
        or not all(v is None or isinstance(v, str | int | float) for v in values)
    ):
        raise InvalidCursor(cursor)
    return values


def _after(
    columns: list[Any], descending: list[bool], rid: Any, values: list[Any]
) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in (columns..., rid) order, NULLs last."""
    condition: ColumnElement[bool] = rid > values[-1]
    for col, desc, value in reversed(list(zip(columns, descending, values, strict=False))):
        if value is None:
            condition = and_(col.is_(None), condition)
        else:
            beyond = col < value if desc else col > value
            condition = or_(beyond, col.is_(None), and_(col == value, condition))
    return condition


def _resource_params(res: StoredResource) -> dict[str, Any]:
    return {
        "res_type": res.type,
        "res_id": res.id,
        "version_id": res.version_id,
        "last_updated": instant_to_us(res.last_updated),
        "deleted": res.deleted,
        "content": res.text,
    }


def _stored(row: Any, method: str = "PUT") -> StoredResource:
    return StoredResource(
        type=row.res_type,
        id=row.res_id,
        version_id=row.version_id,
        last_updated=us_to_instant(row.last_updated),
        deleted=bool(row.deleted),
        text=row.content,
        method=getattr(row, "method", method),
    )


# Statements built once: building them per write (``.values(**kw)``) made SQLAlchemy
# construct and cache-key a new statement every time (measured: ~20% of a create).
# One multi-row INSERT ... RETURNING for a batch; rows come back in parameter order.
_INSERT_SNAPSHOT_ROW = insert(search_snapshot_row)
_INSERT_RESOURCES = insert(resource).returning(resource.c.rid, sort_by_parameter_order=True)
_UPDATE_RESOURCE = (
    update(resource)
    .where(
        resource.c.res_type == bindparam("b_res_type"),
        resource.c.res_id == bindparam("b_res_id"),
        resource.c.version_id == bindparam("b_previous_version"),
    )
    .values(
        version_id=bindparam("b_version_id"),
        last_updated=bindparam("b_last_updated"),
        deleted=bindparam("b_deleted"),
        content=bindparam("b_content"),
    )
    .returning(resource.c.rid)
)
_INSERT_VERSION = insert(resource_version)
_GET = select(*_RESOURCE_COLS).where(
    resource.c.res_type == bindparam("t"), resource.c.res_id == bindparam("i")
)
_GET_FOR_UPDATE = _GET.with_for_update()
_GET_VERSION = select(resource_version).where(
    resource_version.c.res_type == bindparam("t"),
    resource_version.c.res_id == bindparam("i"),
    resource_version.c.version_id == bindparam("v"),
)
_INSERT_INDEX = {kind: insert(table) for kind, table in INDEX_TABLES.items()}
_DELETE_INDEX_ROWS = [delete(t).where(t.c.rid == bindparam("rid")) for t in INDEX_TABLES.values()]


class SqlUnit:
    """One transaction on one connection.

    New resources are written in batches: :meth:`write` of a create only queues it, and
    the queue is flushed (one multi-row statement per table) before anything else touches
    the database and when the unit ends. A Bundle of 100 creates becomes a handful of
    statements instead of seven per resource.
    """

    def __init__(self, conn: Connection, dialect: str, *, writable: bool) -> None:
        self.conn = conn
        self.dialect = dialect
        self.writable = writable
        self._pending: list[tuple[StoredResource, IndexRows]] = []

    def flush(self) -> None:
        """Write the queued creates; a duplicate id raises IntegrityError here."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        params = [_resource_params(res) for res, _ in pending]
        rids = [row.rid for row in self.conn.execute(_INSERT_RESOURCES, params)]
        self.conn.execute(
            _INSERT_VERSION,
            [
                {**p, "rid": rid, "method": res.method}
                for p, rid, (res, _) in zip(params, rids, pending, strict=True)
            ],
        )
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for rid, (res, index) in zip(rids, pending, strict=True):
            for kind, rows in index.items():
                for row in rows:
                    row["rid"] = rid
                    row["res_type"] = res.type
                by_kind.setdefault(kind, []).extend(rows)
        for kind, rows in by_kind.items():
            self.conn.execute(_INSERT_INDEX[kind], rows)

    def get(self, rtype: str, rid: str, *, for_update: bool = False) -> StoredResource | None:
        self.flush()
        stmt = _GET_FOR_UPDATE if for_update and self.dialect == "postgresql" else _GET
        row = self.conn.execute(stmt, {"t": rtype, "i": rid}).first()
        return _stored(row) if row else None

    def get_version(self, rtype: str, rid: str, version_id: int) -> StoredResource | None:
        self.flush()
        row = self.conn.execute(_GET_VERSION, {"t": rtype, "i": rid, "v": version_id}).first()
        return _stored(row) if row else None

    def write(self, res: StoredResource, index: IndexRows, *, previous_version: int | None) -> None:
        if previous_version is None:
            # A concurrent create of the same id fails the unique constraint at flush;
            # unit() turns that into DuplicateResource after rolling back.
            self._pending.append((res, index))
            return
        self.flush()
        params = _resource_params(res)
        rid = self.conn.execute(
            _UPDATE_RESOURCE,
            {f"b_{k}": v for k, v in params.items()} | {"b_previous_version": previous_version},
        ).scalar_one_or_none()
        if rid is None:
            raise VersionConflict(f"{res.type}/{res.id} is no longer at version {previous_version}")
        for statement in _DELETE_INDEX_ROWS:
            self.conn.execute(statement, {"rid": rid})
        self.conn.execute(_INSERT_VERSION, {**params, "rid": rid, "method": res.method})
        for kind, rows in index.items():
            if rows:
                for row in rows:
                    row["rid"] = rid
                    row["res_type"] = res.type
                self.conn.execute(_INSERT_INDEX[kind], rows)

    def search(self, query: SearchQuery, cursor: str | None) -> Page:
        """One page in (sort keys..., rid) order; the cursor is the last row's keys.

        Keyset paging, never OFFSET: a page link returns the rows after the last one the
        client saw, whatever was written in between.
        """
        self.flush()
        rows, next_cursor = self._ordered(query, cursor, query.count, _RESOURCE_COLS)
        known_total = len(rows) if cursor is None and next_cursor is None else None
        return Page([_stored(r) for r in rows], next_cursor, known_total)

    def _ordered(
        self, query: SearchQuery, cursor: str | None, limit: int, columns: Sequence[Any]
    ) -> tuple[list[Any], str | None]:
        """Up to ``limit`` rows of ``columns`` after ``cursor``, and the cursor of the last
        row when there are more."""
        keys = sort_expressions(query)
        after = _parse_cursor(cursor, len(keys) + 1)
        inner = select(  # ``columns`` include rid
            *columns, *[expr.label(f"k{i}") for i, (expr, _) in enumerate(keys)]
        ).where(*where_clauses(query))
        page = inner.subquery() if keys else None
        if page is None:
            stmt = inner.order_by(resource.c.rid)
            if after is not None:
                stmt = stmt.where(resource.c.rid > after[-1])
        else:
            sort_cols = [page.c[f"k{i}"] for i in range(len(keys))]
            order = [
                (col.desc() if desc else col.asc()).nulls_last()
                for col, (_, desc) in zip(sort_cols, keys, strict=True)
            ]
            stmt = select(page).order_by(*order, page.c.rid)
            if after is not None:
                stmt = stmt.where(_after(sort_cols, [d for _, d in keys], page.c.rid, after))
        rows = list(self.conn.execute(stmt.limit(limit + 1)).all())
        if len(rows) <= limit:
            return rows, None
        last = rows[limit - 1]
        cursor_out = orjson.dumps(
            [*(getattr(last, f"k{i}") for i in range(len(keys))), last.rid]
        ).decode()
        return rows[:limit], cursor_out

    def snapshot(
        self, query: SearchQuery, query_key: str, limit: int, ttl_seconds: int
    ) -> Snapshot:
        """One ``INSERT ... SELECT`` numbers the first ``limit`` (+1, to know if there
        are more) matches in sort order; no row goes through Python."""
        self.flush()
        now = instant_to_us(datetime.now(UTC))
        self.conn.execute(delete(search_snapshot).where(search_snapshot.c.expires < now))
        sid = secrets.token_hex(16)
        expires = now + ttl_seconds * 1_000_000
        self.conn.execute(
            insert(search_snapshot),
            {"sid": sid, "query_key": query_key, "size": 0, "created": now, "expires": expires},
        )
        keys = sort_expressions(query)
        inner = select(
            resource.c.rid, *[expr.label(f"k{i}") for i, (expr, _) in enumerate(keys)]
        ).where(*where_clauses(query))
        if keys:
            page = inner.subquery()
            sort_cols = [page.c[f"k{i}"] for i in range(len(keys))]
            order = [
                (col.desc() if desc else col.asc()).nulls_last()
                for col, (_, desc) in zip(sort_cols, keys, strict=True)
            ]
            first = select(page).order_by(*order, page.c.rid).limit(limit + 1).subquery()
            window = [
                (first.c[f"k{i}"].desc() if desc else first.c[f"k{i}"].asc()).nulls_last()
                for i, (_, desc) in enumerate(keys)
            ]
        else:
            first = inner.order_by(resource.c.rid).limit(limit + 1).subquery()
            window = []
        numbered = select(
            literal(sid), func.row_number().over(order_by=[*window, first.c.rid]), first.c.rid
        )
        row = search_snapshot_row
        self.conn.execute(insert(row).from_select(["sid", "pos", "rid"], numbered))
        # (rowcount of INSERT ... SELECT is -1 under psycopg; the primary key answers)
        kept = self.conn.execute(
            select(func.coalesce(func.max(row.c.pos), 0)).where(row.c.sid == sid)
        ).scalar_one()
        tail = None
        if kept > limit:
            self.conn.execute(delete(row).where(row.c.sid == sid, row.c.pos == limit + 1))
            last = self.conn.execute(
                select(row.c.rid).where(row.c.sid == sid, row.c.pos == limit)
            ).scalar_one_or_none()
            if last is not None:  # limit 0 keeps nothing and pages by keyset from the start
                values = self.conn.execute(
                    select(*[expr for expr, _ in keys], resource.c.rid).where(
                        resource.c.rid == last
                    )
                ).one()
                tail = orjson.dumps(list(values)).decode()
            kept = limit
        snap = Snapshot(sid, query_key, kept, kept if tail is None else None, tail, expires)
        self.conn.execute(
            update(search_snapshot)
            .where(search_snapshot.c.sid == sid)
            .values(size=snap.size, total=snap.total, tail=tail)
        )
        return snap

    def get_snapshot(self, sid: str) -> Snapshot | None:
        row = self.conn.execute(
            select(search_snapshot).where(search_snapshot.c.sid == sid)
        ).one_or_none()
        if row is None:
            return None
        return Snapshot(row.sid, row.query_key, row.size, row.total, row.tail, row.expires)

    def snapshot_page(self, snap: Snapshot, after: int, count: int) -> Page:
        self.flush()
        kept = search_snapshot_row
        rows = self.conn.execute(
            select(kept.c.pos, *_RESOURCE_COLS)
            .join(resource, resource.c.rid == kept.c.rid)
            .where(kept.c.sid == snap.sid, kept.c.pos > after)
            .order_by(kept.c.pos)
            .limit(count)
        ).all()
        last = rows[-1].pos if rows else snap.size
        items = [_stored(r) for r in rows if not r.deleted]
        return Page(items, str(last) if last < snap.size else None, snap.total)

    def referenced(
        self,
        sources: Sequence[str],
        source_type: str,
        param: str | None,
        target_type: str | None,
        limit: int,
    ) -> list[StoredResource]:
        self.flush()
        src, ref, tgt = resource.alias(), spidx_reference.alias(), resource.alias()
        conditions = [
            src.c.res_type == source_type,
            src.c.res_id.in_(list(sources)),
            ref.c.rid == src.c.rid,
            ref.c.res_type == source_type,
            tgt.c.res_type == ref.c.target_type,
            tgt.c.res_id == ref.c.target_id,
        ]
        if param is not None:
            conditions.append(ref.c.param == param)
        if target_type is not None:
            conditions.append(tgt.c.res_type == target_type)
        rids = select(tgt.c.rid).where(*conditions)
        rows = self.conn.execute(
            select(*_RESOURCE_COLS)
            .where(resource.c.rid.in_(rids), resource.c.deleted.is_(False))
            .order_by(resource.c.rid)
            .limit(limit)
        ).all()
        return [_stored(r) for r in rows]

    def referencing(
        self,
        targets: Sequence[tuple[str, str]],
        source_type: str,
        param: str | None,
        limit: int,
    ) -> list[StoredResource]:
        self.flush()
        ref = spidx_reference.alias()
        by_type: dict[str, list[str]] = {}
        for ttype, tid in targets:
            by_type.setdefault(ttype, []).append(tid)
        target_match = or_(
            *[
                and_(ref.c.target_type == ttype, ref.c.target_id.in_(ids))
                for ttype, ids in by_type.items()
            ]
        )
        conditions = [ref.c.res_type == source_type, target_match]
        if param is not None:
            conditions.append(ref.c.param == param)
        rows = self.conn.execute(
            select(*_RESOURCE_COLS)
            .where(
                resource.c.rid.in_(select(ref.c.rid).where(*conditions)),
                resource.c.deleted.is_(False),
            )
            .order_by(resource.c.rid)
            .limit(limit)
        ).all()
        return [_stored(r) for r in rows]

    def scan(self, rtype: str, cursor: str | None, limit: int) -> Page:
        self.flush()
        if cursor is not None and not cursor.isdigit():
            raise InvalidCursor(cursor)
        conditions = [resource.c.res_type == rtype, resource.c.deleted.is_(False)]
        if cursor is not None:
            conditions.append(resource.c.rid > int(cursor))
        rows = self.conn.execute(
            select(*_RESOURCE_COLS).where(*conditions).order_by(resource.c.rid).limit(limit + 1)
        ).all()
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = str(rows[-1].rid) if more and rows else None
        return Page([_stored(r) for r in rows], next_cursor, None)

    def replace_index(self, rtype: str, rid: str, index: IndexRows) -> None:
        self.flush()
        row_id = self.conn.execute(_GET, {"t": rtype, "i": rid}).first()
        if row_id is None:
            return
        for statement in _DELETE_INDEX_ROWS:
            self.conn.execute(statement, {"rid": row_id.rid})
        for kind, rows in index.items():
            if rows:
                for row in rows:
                    row["rid"] = row_id.rid
                    row["res_type"] = rtype
                self.conn.execute(_INSERT_INDEX[kind], rows)

    def count(self, query: SearchQuery) -> int:
        self.flush()
        return int(
            self.conn.execute(
                select(func.count()).select_from(resource).where(*where_clauses(query))
            ).scalar_one()
        )

    def history(
        self,
        rtype: str | None,
        rid: str | None,
        *,
        since: datetime | None,
        count: int,
        cursor: str | None,
    ) -> Page:
        self.flush()
        v = resource_version
        conditions = []
        if rtype is not None:
            conditions.append(v.c.res_type == rtype)
        if rid is not None:
            conditions.append(v.c.res_id == rid)
        if since is not None:
            conditions.append(v.c.last_updated >= instant_to_us(since))
        if cursor is not None:
            if not cursor.isdigit():
                raise InvalidCursor(cursor)
            conditions.append(v.c.vid < int(cursor))
        rows = self.conn.execute(
            select(v).where(*conditions).order_by(v.c.vid.desc()).limit(count + 1)
        ).all()
        more = len(rows) > count
        rows = rows[:count]
        total = None
        if cursor is None and not more:
            total = len(rows)
        elif cursor is None:
            total = int(
                self.conn.execute(
                    select(func.count()).select_from(v).where(*conditions)
                ).scalar_one()
            )
        next_cursor = str(rows[-1].vid) if more and rows else None
        return Page([_stored(r) for r in rows], next_cursor, total)

    def lock(self, key: str) -> None:
        self.flush()
        if self.dialect == "postgresql":
            digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
            self.conn.execute(
                text("SELECT pg_advisory_xact_lock(:k)"),
                {"k": int.from_bytes(digest, "big", signed=True)},
            )
        # SQLite: write units already hold the database's single write lock.
