"""Raw-database baselines: the same JSON documents, same database, no server.

The ratio server/raw answers "how much does the FHIR layer cost on top of storing the
bytes?". The baseline writes into a table ``bench_raw(id, content)`` created in the very
database file / PostgreSQL database the server uses, with the plain DBAPI driver
(``sqlite3``, ``psycopg``), no SQLAlchemy, no validation, no index rows:

* single: one transaction per document (what one REST create must do at least);
* batch: ``batch_size`` documents per transaction (what one transaction Bundle must do);
* read: ``SELECT content ... WHERE id = ?`` of documents written by the baseline.

SQLite admits one writer at a time, so its write baselines use one connection (the
fastest way to fill SQLite from Python); PostgreSQL uses as many connections as the
HTTP benchmark has clients. SQLite connections use the server's pragmas (WAL,
``synchronous=NORMAL``), so durability settings are the same on both sides.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import closing
from typing import Any

from benchmarks.load import PhaseResult
from benchmarks.server import Database

Row = tuple[str, str]
Operation = Callable[[Any, Any], None]  # (connection, work item) -> None

_CREATE = "CREATE TABLE IF NOT EXISTS bench_raw (id TEXT PRIMARY KEY, content TEXT NOT NULL)"


def rows_for(documents: Sequence[bytes]) -> list[Row]:
    """(fresh id, JSON text) pairs, as the server would assign ids to creates."""
    return [(str(uuid.uuid4()), doc.decode("utf-8")) for doc in documents]


def connect(db: Database) -> Any:
    """A DBAPI connection in autocommit mode; transactions are explicit in each operation."""
    if db.backend == "sqlite":
        conn = sqlite3.connect(
            db.dbapi_target, isolation_level=None, check_same_thread=False, timeout=30
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn
    import psycopg

    return psycopg.connect(db.dbapi_target, autocommit=True)


def create_table(db: Database) -> None:
    with closing(connect(db)) as conn:
        conn.execute(_CREATE)


def _begin(conn: Any) -> None:
    # BEGIN IMMEDIATE takes SQLite's write lock up front, as the server's write units do.
    conn.execute("BEGIN IMMEDIATE" if isinstance(conn, sqlite3.Connection) else "BEGIN")


def _param(conn: Any) -> str:
    return "?" if isinstance(conn, sqlite3.Connection) else "%s"


def insert_one(conn: Any, row: Row) -> None:
    p = _param(conn)
    _begin(conn)
    conn.execute(f"INSERT INTO bench_raw (id, content) VALUES ({p}, {p})", row)
    conn.execute("COMMIT")


def insert_batch(conn: Any, rows: list[Row]) -> None:
    p = _param(conn)
    _begin(conn)
    conn.cursor().executemany(f"INSERT INTO bench_raw (id, content) VALUES ({p}, {p})", rows)
    conn.execute("COMMIT")


def read_one(conn: Any, rid: str) -> None:
    row = conn.execute(f"SELECT content FROM bench_raw WHERE id = {_param(conn)}", (rid,))
    if row.fetchone() is None:
        raise LookupError(rid)


def run_local(
    name: str,
    db: Database,
    items: Sequence[Any],
    operation: Operation,
    *,
    connections: int,
    resources_per_item: int = 1,
) -> PhaseResult:
    """Apply ``operation`` to every item from ``connections`` threads; time each call."""
    result = PhaseResult(name)
    lock = threading.Lock()
    next_index = itertools.count()
    conns = [connect(db) for _ in range(connections)]

    def loop(conn: Any) -> None:
        latencies: list[float] = []
        while (i := next(next_index)) < len(items):
            started = time.perf_counter()
            try:
                operation(conn, items[i])
            except Exception as exc:  # a broken baseline must show in the report, not hang
                with lock:
                    result.errors += 1
                    result.error_samples.append(f"{name}: {exc!r}")
                continue
            latencies.append((time.perf_counter() - started) * 1000)
        with lock:
            result.latencies_ms += latencies

    threads = [threading.Thread(target=loop, args=(c,)) for c in conns]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.wall_s = time.perf_counter() - started
    for conn in conns:
        conn.close()
    result.requests = len(result.latencies_ms)
    result.resources = result.requests * resources_per_item
    return result


def writers(db: Database, clients: int) -> int:
    """Concurrent writer connections for the write baselines (see the module docstring)."""
    return 1 if db.backend == "sqlite" else clients
