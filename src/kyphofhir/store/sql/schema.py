"""Tables of the SQL store (documented in ``docs/storage.md``).

HAPI's split: ``resource`` holds the current version of each resource, ``resource_version``
every version ever written, and one ``spidx_<type>`` table per search-parameter type holds
the index rows of current versions. Time stamps are integer microseconds since the Unix
epoch (UTC), which compare the same way on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only makes INTEGER PRIMARY KEY an alias of its rowid (autoincrementing).
_Id = BigInteger().with_variant(Integer(), "sqlite")

resource = Table(
    "resource",
    metadata,
    Column("rid", _Id, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", Text, nullable=True),
    UniqueConstraint("res_type", "res_id"),
    Index(None, "res_type", "last_updated"),
)

resource_version = Table(
    "resource_version",
    metadata,
    Column("vid", _Id, primary_key=True, autoincrement=True),
    Column("rid", _Id, ForeignKey("resource.rid", ondelete="CASCADE"), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("method", String(8), nullable=False),
    Column("content", Text, nullable=True),
    UniqueConstraint("rid", "version_id"),
    Index(None, "res_type", "vid"),
    Index(None, "last_updated"),
)


def _index_table(
    name: str, *columns: Column[object], indexes: tuple[tuple[str, ...], ...]
) -> Table:
    table = Table(
        name,
        metadata,
        Column("rid", _Id, ForeignKey("resource.rid", ondelete="CASCADE"), nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(100), nullable=False),
        *columns,
        Index(None, "rid"),
    )
    for cols in indexes:
        Index(None, *[table.c[c] for c in cols])
    return table


spidx_token = _index_table(
    "spidx_token",
    Column("system", String(255), nullable=False, default=""),
    Column("code", String(255), nullable=True),
    Column("text", String(255), nullable=True),
    indexes=(("res_type", "param", "code", "system"),),
)
spidx_string = _index_table(
    "spidx_string",
    Column("value_norm", String(255), nullable=False),
    Column("value_exact", String(255), nullable=False),
    indexes=(("res_type", "param", "value_norm"),),
)
spidx_date = _index_table(
    "spidx_date",
    Column("lo", BigInteger, nullable=False),
    Column("hi", BigInteger, nullable=False),
    indexes=(("res_type", "param", "lo"), ("res_type", "param", "hi")),
)
spidx_number = _index_table(
    "spidx_number",
    Column("value", Float, nullable=False),
    Column("lo", Float, nullable=False),
    Column("hi", Float, nullable=False),
    indexes=(("res_type", "param", "value"),),
)
spidx_quantity = _index_table(
    "spidx_quantity",
    Column("value", Float, nullable=False),
    Column("lo", Float, nullable=False),
    Column("hi", Float, nullable=False),
    Column("system", String(255), nullable=False, default=""),
    Column("code", String(100), nullable=True),
    Column("unit", String(100), nullable=True),
    # UCUM canonical form (search/ucum.py, migration 0003): NULL where the unit is not
    # UCUM or cannot be converted
    Column("canon_code", String(100), nullable=True),
    Column("canon_value", Float, nullable=True),
    Column("canon_lo", Float, nullable=True),
    Column("canon_hi", Float, nullable=True),
    indexes=(
        ("res_type", "param", "code", "value"),
        ("res_type", "param", "canon_code", "canon_value"),
    ),
)
spidx_reference = _index_table(
    "spidx_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", String(500), nullable=True),
    indexes=(("res_type", "param", "target_id", "target_type"), ("target_type", "target_id")),
)
spidx_uri = _index_table(
    "spidx_uri",
    Column("value", String(500), nullable=False),
    indexes=(("res_type", "param", "value"),),
)

# A composite value (``code-value-quantity=loinc|38214-3$gt50``): the first component is
# always a token in R4; the second is a token, quantity, date or string and uses the
# matching group of columns.
spidx_composite = _index_table(
    "spidx_composite",
    Column("system1", String(255), nullable=False, default=""),
    Column("code1", String(255), nullable=True),
    Column("system2", String(255), nullable=True),
    Column("code2", String(255), nullable=True),
    Column("text2", String(255), nullable=True),
    Column("value2", Float, nullable=True),
    Column("lo2", Float, nullable=True),
    Column("hi2", Float, nullable=True),
    Column("date_lo2", BigInteger, nullable=True),
    Column("date_hi2", BigInteger, nullable=True),
    Column("canon_code2", String(100), nullable=True),
    Column("canon_value2", Float, nullable=True),
    Column("canon_lo2", Float, nullable=True),
    Column("canon_hi2", Float, nullable=True),
    indexes=(("res_type", "param", "code1"),),
)

INDEX_TABLES: dict[str, Table] = {
    "token": spidx_token,
    "string": spidx_string,
    "date": spidx_date,
    "number": spidx_number,
    "quantity": spidx_quantity,
    "reference": spidx_reference,
    "uri": spidx_uri,
    "composite": spidx_composite,
}

# Search snapshots (docs/search.md, "Paging"): the ordered rids of a multi-page search's
# matches when it started, so its page links return exactly those resources once each
# whatever is written meanwhile. ``tail`` is the keyset cursor that continues after the
# last kept row when the result was larger than the snapshot limit.
search_snapshot = Table(
    "search_snapshot",
    metadata,
    Column("sid", String(32), primary_key=True),
    Column("query_key", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("total", Integer, nullable=True),
    Column("tail", Text, nullable=True),
    Column("created", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),
    Index(None, "expires"),
)
search_snapshot_row = Table(
    "search_snapshot_row",
    metadata,
    Column(
        "sid",
        String(32),
        ForeignKey("search_snapshot.sid", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("pos", Integer, primary_key=True, autoincrement=False),
    # no foreign key: resources are never removed from ``resource`` (a delete is a
    # version), and the rows go with their snapshot
    Column("rid", _Id, nullable=False),
)
