"""One contract for the store, run against SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select

from kyphofhir.search.extract import Extractor
from kyphofhir.search.params import parse_query
from kyphofhir.search.registry import SearchRegistry
from kyphofhir.store.base import DuplicateResource, StoredResource, VersionConflict
from kyphofhir.store.sql.backend import SqlStore
from kyphofhir.store.sql.schema import metadata, spidx_token

REGISTRY = SearchRegistry.default()
EXTRACTOR = Extractor(REGISTRY)


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    s = SqlStore(db_url)
    yield s
    s.dispose()


def _version(
    rid: str, version: int, gender: str = "female", deleted: bool = False
) -> StoredResource:
    body = {
        "resourceType": "Patient",
        "id": rid,
        "gender": gender,
        "meta": {"versionId": str(version), "lastUpdated": "2024-01-01T00:00:00.000Z"},
    }
    return StoredResource(
        "Patient",
        rid,
        version,
        datetime.now(UTC),
        deleted,
        None if deleted else orjson.dumps(body).decode(),
    )


def _index(stored: StoredResource) -> dict:
    return {} if stored.deleted else EXTRACTOR.extract(stored.json())


def _put(store: SqlStore, stored: StoredResource, previous: int | None) -> None:
    with store.unit(write=True) as uow:
        uow.write(stored, _index(stored), previous_version=previous)


def _search(store: SqlStore, **params: str) -> list[str]:
    query = parse_query(REGISTRY, "Patient", list(params.items()))
    with store.unit(write=False) as uow:
        return [r.id for r in uow.search(query, None).items]


def test_migrations_match_the_schema_module(store: SqlStore) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_versions_are_kept_and_current_is_latest(store: SqlStore) -> None:
    _put(store, _version("a", 1), None)
    _put(store, _version("a", 2, "male"), 1)
    with store.unit(write=False) as uow:
        current = uow.get("Patient", "a")
        assert current is not None and current.version_id == 2
        assert current.json()["gender"] == "male"
        first = uow.get_version("Patient", "a", 1)
        assert first is not None and first.json()["gender"] == "female"
        assert uow.get_version("Patient", "a", 3) is None
        assert uow.get("Patient", "zzz") is None


def test_stale_write_is_a_version_conflict_and_changes_nothing(store: SqlStore) -> None:
    _put(store, _version("b", 1), None)
    _put(store, _version("b", 2), 1)
    with pytest.raises(VersionConflict):
        _put(store, _version("b", 2, "other"), 1)
    with store.unit(write=False) as uow:
        assert uow.get("Patient", "b").json()["gender"] == "female"  # type: ignore[union-attr]


def test_duplicate_create_is_reported(store: SqlStore) -> None:
    _put(store, _version("c", 1), None)
    with pytest.raises(DuplicateResource):
        _put(store, _version("c", 1), None)


def test_failed_unit_of_work_rolls_back_everything(store: SqlStore) -> None:
    with pytest.raises(RuntimeError), store.unit(write=True) as uow:
        for rid in ("d1", "d2"):
            v = _version(rid, 1)
            uow.write(v, _index(v), previous_version=None)
        raise RuntimeError("abort")
    with store.unit(write=False) as uow:
        assert uow.get("Patient", "d1") is None
        assert uow.get("Patient", "d2") is None
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(spidx_token)).scalar_one() == 0


def test_index_rows_follow_the_current_version(store: SqlStore) -> None:
    _put(store, _version("e", 1, "female"), None)
    assert _search(store, gender="female") == ["e"]
    _put(store, _version("e", 2, "male"), 1)
    assert _search(store, gender="female") == []
    assert _search(store, gender="male") == ["e"]
    _put(store, _version("e", 3, deleted=True), 2)
    assert _search(store, gender="male") == []
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(spidx_token)).scalar_one() == 0


def test_history_is_newest_first_and_pages_by_cursor(store: SqlStore) -> None:
    for i in range(5):
        _put(store, _version(f"h{i}", 1), None)
    _put(store, _version("h0", 2), 1)
    with store.unit(write=False) as uow:
        page = uow.history("Patient", None, since=None, count=4, cursor=None)
        assert page.total == 6
        assert [(r.id, r.version_id) for r in page.items][:2] == [("h0", 2), ("h4", 1)]
        assert page.next_cursor is not None
        rest = uow.history("Patient", None, since=None, count=4, cursor=page.next_cursor)
        assert len(rest.items) == 2
        assert rest.next_cursor is None
        only = uow.history("Patient", "h0", since=None, count=10, cursor=None)
        assert [r.version_id for r in only.items] == [2, 1]
