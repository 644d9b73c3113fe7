"""What every interaction needs: the store, the search registry and extractor, settings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from kyphofhir.config import Settings
from kyphofhir.errors import Conflict, FhirError
from kyphofhir.search.extract import Extractor
from kyphofhir.search.registry import SearchRegistry, patient_compartment
from kyphofhir.store.base import (
    DuplicateResource,
    ResourceStore,
    StoreUnavailable,
    UnitOfWork,
    VersionConflict,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRIES = 5


class ServiceUnavailable(FhirError):
    status = 503
    issue_code = "transient"
    default_details = "MSG_DB_UNAVAILABLE"


@dataclass
class NeedsWriteUnit(Exception):
    """Read work found it has to write (a search keeping a snapshot of its result):
    :meth:`Services.run` runs it again in a write unit."""


@dataclass
class Services:
    """The service layer's dependencies, built once per application."""

    store: ResourceStore
    registry: SearchRegistry
    extractor: Extractor
    settings: Settings
    compartment: dict[str, tuple[str, ...]] = field(default_factory=patient_compartment)

    def run(self, write: bool, work: Callable[[UnitOfWork], T]) -> T:
        """Run ``work`` in one unit of work, retrying lost optimistic races.

        ``work`` raises :class:`PreconditionFailed` itself when the client asked for a
        version (If-Match); a race the client did not guard against is retried.
        """
        last: Exception | None = None
        for attempt in range(RETRIES):
            try:
                with self.store.unit(write=write) as uow:
                    return work(uow)
            except NeedsWriteUnit:
                if write:
                    raise
                write = True
            except (VersionConflict, DuplicateResource) as exc:
                log.info("write race lost (attempt %d): %s", attempt + 1, exc)
                last = exc
            except StoreUnavailable as exc:
                raise ServiceUnavailable(
                    "The database is unavailable; the request was not processed."
                ) from exc
        raise Conflict(f"Concurrent writes kept conflicting: {last}")
