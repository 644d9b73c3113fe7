"""Searchset, history and transaction-response Bundles. Pure.

Stored resources are embedded as the exact JSON text kept by the store
(``orjson.Fragment``), so serving a page never parses and re-serialises resources.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from email.utils import format_datetime
from typing import Any

import orjson

from kyphofhir.fhir.datetimes import format_instant, now_instant
from kyphofhir.fhir.versioned import StoredResource


def etag(version_id: int) -> str:
    return f'W/"{version_id}"'


def http_date(stored: StoredResource) -> str:
    return format_datetime(stored.last_updated, usegmt=True)


def resource_url(base: str, stored: StoredResource) -> str:
    return f"{base}/{stored.type}/{stored.id}"


def version_url(base: str, stored: StoredResource) -> str:
    return f"{base}/{stored.type}/{stored.id}/_history/{stored.version_id}"


def _fragment(stored: StoredResource) -> orjson.Fragment:
    assert stored.text is not None
    return orjson.Fragment(stored.text)


def searchset(
    base: str,
    items: Sequence[StoredResource],
    *,
    total: int | None,
    links: Sequence[tuple[str, str]],
    outcome: dict[str, Any] | None = None,
    included: Sequence[StoredResource] = (),
) -> bytes:
    entries: list[dict[str, Any]] = []
    for mode, group in (("match", items), ("include", included)):
        for stored in group:
            entries.append(
                {
                    "fullUrl": resource_url(base, stored),
                    "resource": _fragment(stored),
                    "search": {"mode": mode},
                }
            )
    if outcome is not None:
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": outcome,
                "search": {"mode": "outcome"},
            }
        )
    return _bundle("searchset", total, links, entries)


def history(
    base: str,
    items: Sequence[StoredResource],
    *,
    total: int | None,
    links: Sequence[tuple[str, str]],
) -> bytes:
    entries: list[dict[str, Any]] = []
    for stored in items:
        entry: dict[str, Any] = {"fullUrl": resource_url(base, stored)}
        if stored.text is not None:
            entry["resource"] = _fragment(stored)
        method = "DELETE" if stored.deleted else ("POST" if stored.version_id == 1 else "PUT")
        url = f"{stored.type}/{stored.id}" if method != "POST" else stored.type
        entry["request"] = {"method": method, "url": url}
        entry["response"] = {
            "status": "204" if stored.deleted else ("201" if method == "POST" else "200"),
            "etag": etag(stored.version_id),
            "lastModified": format_instant(stored.last_updated),
        }
        entries.append(entry)
    return _bundle("history", total, links, entries)


def _bundle(
    kind: str, total: int | None, links: Sequence[tuple[str, str]], entries: list[dict[str, Any]]
) -> bytes:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": format_instant(now_instant())},
        "type": kind,
    }
    if total is not None:
        bundle["total"] = total
    bundle["link"] = [{"relation": rel, "url": url} for rel, url in links]
    bundle["entry"] = entries
    return orjson.dumps(bundle)


def response_entry(
    status: str,
    *,
    stored: StoredResource | None = None,
    base: str | None = None,
    resource: Any = None,
    outcome: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``transaction-response``/``batch-response`` entry."""
    response: dict[str, Any] = {"status": status}
    entry: dict[str, Any] = {}
    if stored is not None:
        if base is not None:
            response["location"] = version_url(base, stored)
            if not stored.deleted:
                entry["fullUrl"] = resource_url(base, stored)
        response["etag"] = etag(stored.version_id)
        response["lastModified"] = format_instant(stored.last_updated)
    if outcome is not None:
        response["outcome"] = outcome
    if resource is not None:
        entry["resource"] = resource
    entry["response"] = response
    return entry


def response_bundle(kind: str, entries: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "type": kind,
            "entry": entries,
        }
    )


def fragment(stored: StoredResource) -> orjson.Fragment:
    return _fragment(stored)
