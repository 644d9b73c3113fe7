"""Planner statistics for SQLite, so that plans do not depend on ``ANALYZE`` having run.

SQLite plans from ``sqlite_stat1``; without it, it guesses from the number of equality
columns an index matches. A correlated lookup of one resource's index rows
(``t.rid = r.rid AND t.res_type = ? AND t.param = ? AND t.code = ? AND t.system = ?``)
then prefers the (res_type, param, code, system) index, which matches four columns, over
the ``rid`` index, which matches one, and walks every row of that code for every
resource: ``Observation?code=http://loinc.org|38214-3`` took 3-11 s over the 5,500 demo
Observations instead of milliseconds. SQLite's documentation allows writing
``sqlite_stat1`` directly to fix plans; we seed representative figures (a store of about a
million resources) for every index that has none, and keep statistics a real ``ANALYZE``
wrote. New connections load them (existing ones keep the statistics they loaded, so the
caller disposes its pool afterwards).
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from kyphofhir.store.sql.schema import metadata

# Rows per index, then average rows per distinct value of its leading 1, 2, ... columns
# (the sqlite_stat1 "stat" format). What matters is the shape: a resource has a few rows
# per index table, a (type, parameter, value) has many.
_ROWS_PER_RID = {
    "spidx_token": 4,
    "spidx_string": 3,
    "spidx_reference": 2,
    "spidx_date": 2,
    "spidx_quantity": 2,
    "spidx_composite": 2,
    "spidx_number": 1,
    "spidx_uri": 1,
}
_ROWS = 1_000_000
_PER_COLUMN = {
    "rid": 3,
    "res_type": 100_000,
    "param": 50_000,
    "code": 5_000,
    "system": 5_000,
    "code1": 5_000,
    "canon_code": 20_000,
    "target_id": 50,
    "target_type": 50,
    "value": 20,
    "value_norm": 20,
    "canon_value": 20,
    "lo": 20,
    "hi": 20,
    "last_updated": 1,
    "res_id": 1,
    "vid": 1,
    "expires": 10,
    "sid": 1_000,
    "pos": 1,
}


def _stat(table: str, columns: list[str]) -> str:
    figures = [str(_ROWS)]
    last = _ROWS
    for i, column in enumerate(columns):
        guess = (
            _ROWS_PER_RID.get(table, 1)
            if column == "rid" and i == 0
            else _PER_COLUMN.get(column, 10)
        )
        last = max(1, min(last, guess))
        figures.append(str(last))
    return " ".join(figures)


def _indexes() -> list[tuple[str, str, list[str]]]:
    out = []
    for table in metadata.sorted_tables:
        for index in table.indexes:
            out.append((table.name, str(index.name), [c.name for c in index.columns]))
    return out


def seed_sqlite_statistics(conn: Connection) -> int:
    """Write representative ``sqlite_stat1`` rows for indexes without any; return how many."""
    # sqlite_stat1 cannot be created by hand; analysing the one-row Alembic table makes it
    conn.exec_driver_sql("ANALYZE alembic_version")
    present = {
        (row.tbl, row.idx) for row in conn.execute(text("SELECT tbl, idx FROM sqlite_stat1"))
    }
    rows = [
        {"tbl": table, "idx": name, "stat": _stat(table, columns)}
        for table, name, columns in _indexes()
        if (table, name) not in present
    ]
    if rows:
        conn.execute(
            text("INSERT INTO sqlite_stat1(tbl, idx, stat) VALUES (:tbl, :idx, :stat)"), rows
        )
    return len(rows)
