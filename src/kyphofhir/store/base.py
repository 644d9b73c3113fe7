"""The storage boundary: what the interaction layer needs from a resource store.

A store keeps every version of every resource and the search index rows of the current
version. All work happens inside a unit of work (:meth:`ResourceStore.unit`), which is
one database transaction: either everything in it is committed or nothing is. The store
knows nothing of HTTP, FHIR interactions or precondition rules; those live in
``kyphofhir.services``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from kyphofhir.fhir.versioned import StoredResource as StoredResource
from kyphofhir.search.extract import IndexRows
from kyphofhir.search.params import SearchQuery


class StoreError(Exception):
    """Base of store-level failures (no HTTP meaning of their own)."""


class VersionConflict(StoreError):
    """The resource changed between read and write (optimistic concurrency lost)."""


class DuplicateResource(StoreError):
    """A resource with this type and id was created concurrently."""


class InvalidCursor(StoreError):
    """A paging cursor this store did not issue (or from another search)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or refused the work (locked, out of space)."""


@dataclass(frozen=True)
class Page:
    """A page of search or history results, with the cursor for the next page."""

    items: Sequence[StoredResource]
    next_cursor: str | None
    total: int | None


@dataclass(frozen=True)
class Snapshot:
    """A search result frozen when its first page was asked for (see ``snapshot``)."""

    sid: str
    query_key: str
    size: int  # rows kept
    total: int | None  # all matches, when known (``size`` unless the result was cut)
    tail: str | None  # keyset cursor continuing after the last kept row
    expires: int  # microseconds since the epoch


class UnitOfWork(Protocol):
    """Operations available inside one transaction."""

    writable: bool

    def get(self, rtype: str, rid: str, *, for_update: bool = False) -> StoredResource | None:
        """The current version (possibly a deletion marker), or None if never created."""

    def get_version(self, rtype: str, rid: str, version_id: int) -> StoredResource | None: ...

    def write(
        self,
        resource: StoredResource,
        index: IndexRows,
        *,
        previous_version: int | None,
    ) -> None:
        """Store a new version (create, update or delete marker) and replace index rows.

        ``previous_version`` is the version the caller based the write on (None for a new
        resource); :class:`VersionConflict` or :class:`DuplicateResource` if that is no
        longer true.
        """

    def search(self, query: SearchQuery, cursor: str | None) -> Page: ...

    def count(self, query: SearchQuery) -> int: ...

    def snapshot(
        self, query: SearchQuery, query_key: str, limit: int, ttl_seconds: int
    ) -> Snapshot:
        """Keep the ordered ids of the first ``limit`` matches of ``query`` (write unit).

        Expired snapshots are removed on the way.
        """

    def get_snapshot(self, sid: str) -> Snapshot | None: ...

    def snapshot_page(self, snap: Snapshot, after: int, count: int) -> Page:
        """Kept resources at positions after ``after``, current versions, deleted ones
        left out; the next cursor is the last position returned."""

    def scan(self, rtype: str, cursor: str | None, limit: int) -> Page:
        """Live resources of ``rtype`` in storage order, a page at a time (reindexing)."""

    def replace_index(self, rtype: str, rid: str, index: IndexRows) -> None:
        """Replace the index rows of the current version of ``rtype/rid``."""

    def referenced(
        self,
        sources: Sequence[str],
        source_type: str,
        param: str | None,
        target_type: str | None,
        limit: int,
    ) -> list[StoredResource]:
        """Live resources that ``source_type`` resources with these ids refer to (_include)."""

    def referencing(
        self,
        targets: Sequence[tuple[str, str]],
        source_type: str,
        param: str | None,
        limit: int,
    ) -> list[StoredResource]:
        """Live ``source_type`` resources referring to any (type, id) target (_revinclude)."""

    def history(
        self,
        rtype: str | None,
        rid: str | None,
        *,
        since: datetime | None,
        count: int,
        cursor: str | None,
    ) -> Page: ...

    def lock(self, key: str) -> None:
        """Serialise units of work that use the same key until this one ends."""


class ResourceStore(Protocol):
    """A backend: SQLite or PostgreSQL through SQLAlchemy (``store.sql``)."""

    dialect: str

    def unit(self, *, write: bool) -> AbstractContextManager[UnitOfWork]:
        """Begin a unit of work; a write unit holds the write lock where the DB needs one."""

    def dispose(self) -> None: ...
