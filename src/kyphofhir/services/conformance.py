"""Load the conformance artefacts of ``profiles/`` into the store at start-up.

The CodeSystems, ValueSets, StructureDefinitions, SearchParameters and the ODI
Questionnaire are then served like any resource (read, search, ``$expand``, ``$lookup``).
Loading is idempotent and keyed on ``url`` + ``version``: an artefact already stored with
the same content is left alone (no new version), a changed one becomes a new version of
the stored resource, a new one is stored under the file's id (or a fresh id when a
different resource holds that id). Every worker process runs it; a lock serialises them.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from kyphofhir.errors import FhirError
from kyphofhir.fhir.models import validate_resource
from kyphofhir.fhir.profile_validation import ProfileError
from kyphofhir.search.params import parse_query
from kyphofhir.services import crud
from kyphofhir.services.context import Services
from kyphofhir.services.validation import read_artefacts
from kyphofhir.store.base import StoredResource, UnitOfWork

log = logging.getLogger(__name__)

LOCK = "kyphofhir:conformance-load"


@dataclass(frozen=True)
class LoadReport:
    created: int
    updated: int
    unchanged: int


def load(svc: Services) -> LoadReport:
    """Store every artefact of ``svc``'s profiles folder that is missing or changed.

    All reads come first (one search per type, then the ids of new artefacts), all
    writes after, so the store writes the new resources in one batch at commit: every
    test app loads them into an empty database.
    """
    artefacts = _checked(svc.settings.profiles_path)

    def work(uow: UnitOfWork) -> LoadReport:
        uow.lock(LOCK)
        stored = _stored(svc, uow, artefacts)
        plan: list[tuple[dict[str, Any], str, StoredResource | None]] = []
        unchanged = 0
        for resource in artefacts:
            key = (resource["resourceType"], resource["url"], resource.get("version"))
            current = stored.get(key)
            if current is not None:
                if _content(current.json()) == _content(resource):
                    unchanged += 1
                else:
                    plan.append((resource, current.id, current))
                continue
            rid = str(resource.get("id") or uuid.uuid4())
            holder = uow.get(str(resource["resourceType"]), rid, for_update=True)
            if holder is not None and not holder.deleted and not _same_url(holder, resource):
                rid, holder = str(uuid.uuid4()), None  # the id belongs to another resource
            plan.append((resource, rid, holder))
        created = 0
        for resource, rid, previous in plan:
            body = {**resource, "id": rid}
            result = crud.write_checked(
                svc, uow, str(resource["resourceType"]), rid, body, previous
            )
            created += result.status == 201
        return LoadReport(created, len(plan) - created, unchanged)

    report = svc.run(True, work)
    log.info(
        "conformance artefacts: %d created, %d updated, %d unchanged",
        report.created,
        report.updated,
        report.unchanged,
    )
    return report


def _stored(
    svc: Services, uow: UnitOfWork, artefacts: tuple[dict[str, Any], ...]
) -> dict[tuple[str, str, str | None], StoredResource]:
    """The stored resources with the artefacts' URLs, by (type, url, version)."""
    out: dict[tuple[str, str, str | None], StoredResource] = {}
    urls: dict[str, set[str]] = {}
    for resource in artefacts:
        urls.setdefault(str(resource["resourceType"]), set()).add(str(resource["url"]))
    for rtype, wanted in sorted(urls.items()):
        limit = svc.settings.max_page_size
        query = parse_query(
            svc.registry, rtype, [("url", ",".join(sorted(wanted)))], max_count=limit
        )
        query.count = limit
        cursor: str | None = None
        while True:
            page = uow.search(query, cursor)
            for item in page.items:
                data = item.json()
                out.setdefault((rtype, str(data.get("url")), data.get("version")), item)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    return out


@cache
def _checked(folder: Path) -> tuple[dict[str, Any], ...]:
    """The folder's artefacts, checked against R4 once per process (they are large:
    validating them on every start of a test app would dominate its start-up)."""
    artefacts = read_artefacts(folder).resources
    for resource in artefacts:
        try:
            validate_resource(resource)
        except FhirError as exc:
            raise ProfileError(
                f"{folder}: {resource['resourceType']}/{resource.get('id')} is not valid R4: "
                f"{exc.diagnostics}"
            ) from exc
    return artefacts


def _same_url(stored: StoredResource, resource: dict[str, Any]) -> bool:
    return bool(stored.json().get("url") == resource.get("url"))


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in ("id", "meta")}
