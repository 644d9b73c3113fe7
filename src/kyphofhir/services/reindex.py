"""Rebuild the search index of stored resources (after adding SearchParameters)."""

from __future__ import annotations

from collections.abc import Iterable

from kyphofhir.fhir.models import SERVED_TYPES
from kyphofhir.services.context import Services
from kyphofhir.services.crud import check_type
from kyphofhir.store.base import Page, UnitOfWork

BATCH = 500


def reindex(svc: Services, types: Iterable[str] = ()) -> dict[str, int]:
    """Re-extract the index rows of every live resource of ``types`` (all if empty).

    Works in batches of 500 resources, one transaction each, so a large store is never
    locked for long and an interrupted run can simply be started again.
    """
    counts: dict[str, int] = {}
    for rtype in list(types) or list(SERVED_TYPES):
        check_type(rtype)
        cursor: str | None = None
        counts[rtype] = 0
        while True:

            def work(uow: UnitOfWork, rtype: str = rtype, after: str | None = cursor) -> Page:
                page = uow.scan(rtype, after, BATCH)
                for res in page.items:
                    uow.replace_index(rtype, res.id, svc.extractor.extract(res.json()))
                return page

            page = svc.run(True, work)
            counts[rtype] += len(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
    return counts
