"""Search snapshots: paging returns the resources that matched when the search started,
once each, even when their sort keys change meanwhile; page links expire with 410."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from sqlalchemy import func, select

from kyphofhir.store.sql.schema import search_snapshot, search_snapshot_row
from samples import create, patient, vas


def _next(page: dict[str, Any]) -> str | None:
    return next((link["url"] for link in page["link"] if link["relation"] == "next"), None)


def _ids(page: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in page.get("entry", []) if e["search"]["mode"] == "match"]


def _settings(app):
    return app.extensions["kyphofhir"].settings


def _snapshots(app) -> int:
    with app.extensions["kyphofhir"].store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(search_snapshot)).scalar_one())


@pytest.fixture
def subject(api) -> tuple[str, list[str]]:
    pid = create(api, patient("snap"))
    obs = [create(api, vas(f"Patient/{pid}", i, f"2024-01-{i + 1:02d}")) for i in range(12)]
    return pid, obs


def test_sort_key_updates_during_paging_neither_skip_nor_repeat(api, subject) -> None:
    pid, obs = subject

    params = {"subject": f"Patient/{pid}", "_sort": "-_lastUpdated", "_count": "4"}
    page = api.get("/Observation", params=params).json()
    seen = _ids(page)
    assert page["total"] == 12
    # every resource not seen yet is updated: under -_lastUpdated they all jump to the
    # front, behind a keyset cursor; the snapshot still returns each of them once
    for oid in obs:
        if oid not in seen:
            body = api.get(f"/Observation/{oid}").json()
            body["valueQuantity"]["value"] = 77
            assert api.put(f"/Observation/{oid}", json=body).status_code == 200
    create(api, vas(f"Patient/{pid}", 5, "2024-02-01"))  # created after the start
    while (url := _next(page)) is not None:
        page = api.get(url).json()
        assert page["total"] == 12
        seen += _ids(page)
    assert sorted(seen) == sorted(obs)


def test_pages_show_current_versions_and_leave_out_deleted(api, subject) -> None:
    pid, obs = subject
    page = api.get("/Observation", params={"subject": f"Patient/{pid}", "_count": "5"}).json()
    assert _ids(page) == obs[:5]
    assert api.delete(f"/Observation/{obs[6]}").status_code in (200, 204)
    body = api.get(f"/Observation/{obs[7]}").json()
    body["status"] = "amended"
    api.put(f"/Observation/{obs[7]}", json=body)
    page = api.get(_next(page)).json()
    assert _ids(page) == [obs[5], obs[7], obs[8], obs[9]]  # position 7 was deleted
    assert page["entry"][1]["resource"]["status"] == "amended"
    page = api.get(_next(page)).json()
    assert _ids(page) == obs[10:]
    assert _next(page) is None


def test_count_may_change_between_pages(api, subject) -> None:
    pid, obs = subject
    page = api.get("/Observation", params={"subject": f"Patient/{pid}", "_count": "3"}).json()
    url = _next(page).replace("_count=3", "_count=20")
    assert _ids(api.get(url).json()) == obs[3:]


def test_result_larger_than_the_snapshot_continues_by_keyset(api, app, subject) -> None:
    pid, obs = subject
    object.__setattr__(_settings(app), "search_snapshot_rows", 5)
    params = {"subject": f"Patient/{pid}", "_count": "3", "_sort": "date"}
    page = api.get("/Observation", params=params).json()
    assert page["total"] == 12  # counted: the snapshot holds 5 of them
    seen = _ids(page)
    while (url := _next(page)) is not None:
        page = api.get(url).json()
        assert page["total"] == 12
        seen += _ids(page)
    assert seen == obs  # dates ascend with creation order


def test_single_page_and_transaction_searches_keep_no_snapshot(api, app, subject) -> None:
    pid, _ = subject
    before = _snapshots(app)
    r = api.get("/Observation", params={"subject": f"Patient/{pid}", "_count": "50"})
    assert len(_ids(r.json())) == 12
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": f"Observation?subject=Patient/{pid}"}}],
    }
    assert api.post("", json=bundle).status_code == 200
    assert _snapshots(app) == before
    api.get("/Observation", params={"subject": f"Patient/{pid}", "_count": "2"})
    assert _snapshots(app) == before + 1


def test_snapshots_off_pages_by_keyset(api, app, subject) -> None:
    pid, obs = subject
    object.__setattr__(_settings(app), "search_snapshot_rows", 0)
    page = api.get("/Observation", params={"subject": f"Patient/{pid}", "_count": "5"}).json()
    seen = _ids(page)
    while (url := _next(page)) is not None:
        page = api.get(url).json()
        seen += _ids(page)
    assert seen == obs
    assert _snapshots(app) == 0


def test_expired_page_link_is_410(api, app, subject) -> None:
    pid, _ = subject
    object.__setattr__(_settings(app), "search_snapshot_ttl", -1)
    page = api.get("/Observation", params={"subject": f"Patient/{pid}", "_count": "5"}).json()
    assert len(_ids(page)) == 5  # the first page comes from the new snapshot
    r = api.get(_next(page))
    assert r.status_code == 410, r.content
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["expression"] == ["_page"]
    assert "run the search again" in body["issue"][0]["diagnostics"]


def test_expired_snapshots_are_removed_when_new_ones_are_made(api, app, subject) -> None:
    pid, _ = subject
    object.__setattr__(_settings(app), "search_snapshot_ttl", -1)
    for _ in range(3):
        api.get("/Observation", params={"subject": f"Patient/{pid}", "_count": "5"})
    assert _snapshots(app) == 1  # each new one removed the expired ones before it
    with app.extensions["kyphofhir"].store.engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(search_snapshot_row)).scalar_one()
    assert rows == 12


def _token(scheme_payload: str) -> str:
    return base64.urlsafe_b64encode(scheme_payload.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("token", "status"),
    [
        (_token("s1:" + "0" * 32 + ":5"), 410),  # unknown (or long removed) snapshot
        (_token("s1:abc"), 400),
        (_token("s1:abc:x"), 400),
        (_token("z9:whatever"), 400),
        ("%%%", 400),
        ("", 200),
    ],
)
def test_bad_page_tokens(api, subject, token, status) -> None:
    r = api.get("/Observation", params={"_page": token})
    assert r.status_code == status, r.content
    if status != 200:
        assert r.json()["resourceType"] == "OperationOutcome"


def test_page_link_of_another_search_is_400(api, subject) -> None:
    pid, _ = subject
    page = api.get("/Observation", params={"subject": f"Patient/{pid}", "_count": "5"}).json()
    token = _next(page).split("_page=")[1].split("&")[0]
    r = api.get("/Observation", params={"_page": token, "_count": "5", "date": "2024"})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["_page"]
