"""Concurrent writers over real HTTP: one winner per version, one resource per identifier."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import requests

from samples import patient

THREADS = 8


def _race(work: Callable[[requests.Session], int]) -> Counter[int]:
    """Run ``work`` in THREADS threads released together; count the status codes."""
    barrier = threading.Barrier(THREADS)
    statuses: list[int] = []
    lock = threading.Lock()

    def run() -> None:
        session = requests.Session()
        barrier.wait(timeout=10)
        status = work(session)
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(statuses) == THREADS
    return Counter(statuses)


def test_concurrent_if_match_updates_have_one_winner_per_version(live_server: str) -> None:
    pid = requests.post(f"{live_server}/Patient", json=patient("race"), timeout=10).json()["id"]
    for version in (1, 2, 3):
        body: dict[str, Any] = {**patient("race"), "id": pid}

        def put(session: requests.Session, v: int = version, b: dict[str, Any] = body) -> int:
            r = session.put(
                f"{live_server}/Patient/{pid}", json=b, headers={"If-Match": f'W/"{v}"'}, timeout=30
            )
            return r.status_code

        counts = _race(put)
        assert counts == Counter({200: 1, 412: THREADS - 1}), counts
    history = requests.get(f"{live_server}/Patient/{pid}/_history", timeout=10).json()
    assert history["total"] == 4


def test_concurrent_conditional_creates_make_exactly_one_resource(live_server: str) -> None:
    def create(session: requests.Session) -> int:
        r = session.post(
            f"{live_server}/Patient",
            json=patient("only-one"),
            headers={"If-None-Exist": "identifier=urn:kyphofhir:test:mrn|only-one"},
            timeout=30,
        )
        return r.status_code

    counts = _race(create)
    assert counts == Counter({201: 1, 200: THREADS - 1}), counts
    found = requests.get(
        f"{live_server}/Patient",
        params={"identifier": "urn:kyphofhir:test:mrn|only-one"},
        timeout=10,
    ).json()
    assert found["total"] == 1


def test_concurrent_transactions_with_conditional_create(live_server: str) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0b8f2f74-0000-4000-8000-00000000000a",
                "resource": patient("tx-race"),
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": "identifier=urn:kyphofhir:test:mrn|tx-race",
                },
            }
        ],
    }

    def post(session: requests.Session) -> int:
        return session.post(live_server, json=bundle, timeout=30).status_code

    counts = _race(post)
    assert counts == Counter({200: THREADS}), counts
    found = requests.get(
        f"{live_server}/Patient",
        params={"identifier": "urn:kyphofhir:test:mrn|tx-race"},
        timeout=10,
    ).json()
    assert found["total"] == 1


def test_concurrent_unguarded_updates_all_succeed_with_distinct_versions(live_server: str) -> None:
    pid = requests.post(f"{live_server}/Patient", json=patient("free"), timeout=10).json()["id"]
    body = {**patient("free"), "id": pid}

    def put(session: requests.Session) -> int:
        return session.put(f"{live_server}/Patient/{pid}", json=body, timeout=30).status_code

    counts = _race(put)
    assert counts == Counter({200: THREADS}), counts
    history = requests.get(
        f"{live_server}/Patient/{pid}/_history", params={"_count": "50"}, timeout=10
    ).json()
    versions = sorted(int(e["resource"]["meta"]["versionId"]) for e in history["entry"])
    assert versions == list(range(1, THREADS + 2))
