"""_sort with several keys, descending, ties and missing values; keyset paging that
stays exact while other clients write."""

from __future__ import annotations

import threading

import pytest
import requests

from samples import patient, vas


@pytest.fixture
def people(api):
    rows = [
        ("Adams", "1950-01-01", "female"),
        ("Baker", "1940-06-01", "male"),
        ("Adams", "1960-01-01", "male"),
        ("Clark", None, "female"),
        ("Baker", "1940-06-01", "female"),
    ]
    ids = []
    for i, (family, birth, gender) in enumerate(rows):
        body = {**patient(f"s{i}"), "name": [{"family": family}], "gender": gender}
        if birth:
            body["birthDate"] = birth
        else:
            body.pop("birthDate")
        ids.append(api.post("/Patient", json=body).json()["id"])
    return ids


def _order(api, **params: str) -> list[str]:
    out: list[str] = []
    r = api.get("/Patient", params={**params, "_count": "2"}).json()
    while True:
        out += [e["resource"]["id"] for e in r.get("entry", []) if e["search"]["mode"] == "match"]
        nxt = next((link["url"] for link in r["link"] if link["relation"] == "next"), None)
        if nxt is None:
            return out
        r = api.get(nxt).json()


def test_sort_single_key_both_directions_missing_last(api, people) -> None:
    a0, b1, a2, c3, b4 = people
    assert _order(api, _sort="birthdate") == [b1, b4, a0, a2, c3]
    assert _order(api, _sort="-birthdate") == [a2, a0, b1, b4, c3]


def test_sort_several_keys_and_ties(api, people) -> None:
    a0, b1, a2, c3, b4 = people
    assert _order(api, _sort="family,-birthdate") == [a2, a0, b1, b4, c3]
    assert _order(api, _sort="gender,family") == [a0, b4, c3, a2, b1]
    assert _order(api, _sort="-_id") == sorted(people, reverse=True)
    assert _order(api, _sort="_lastUpdated") == people


def test_sort_combines_with_filters(api, people) -> None:
    a0, _, _, c3, b4 = people
    assert _order(api, _sort="-family", gender="female") == [c3, b4, a0]


@pytest.mark.parametrize("value", ["nonsense", "-", "name:exact", "_has"])
def test_bad_sort_is_400(api, people, value) -> None:
    r = api.get("/Patient", params={"_sort": value})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["_sort"]


def test_page_token_from_another_search_is_400(api, people) -> None:
    first = api.get("/Patient", params={"_sort": "family,birthdate", "_count": "1"}).json()
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    token = nxt.split("_page=")[1].split("&")[0]
    r = api.get("/Patient", params={"_page": token})  # no _sort: the cursor does not fit
    assert r.status_code == 400


@pytest.mark.parametrize("sort", [None, "-date"])
def test_paging_while_others_write_sees_each_existing_match_once(live_server, sort) -> None:
    session = requests.Session()
    pid = session.post(f"{live_server}/Patient", json=patient("pg"), timeout=10).json()["id"]
    existing = {
        session.post(
            f"{live_server}/Observation",
            json=vas(f"Patient/{pid}", i, f"2024-01-{i % 28 + 1:02d}"),
            timeout=10,
        ).json()["id"]
        for i in range(60)
    }
    stop = threading.Event()

    def writer() -> None:
        s = requests.Session()
        n = 0
        while not stop.is_set() and n < 200:
            s.post(
                f"{live_server}/Observation",
                json=vas(f"Patient/{pid}", 99, "2023-06-01"),
                timeout=10,
            )
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        params = {"_count": "7", "subject": f"Patient/{pid}"}
        if sort:
            params["_sort"] = sort
        seen: list[str] = []
        r = session.get(f"{live_server}/Observation", params=params, timeout=30).json()
        while True:
            seen += [e["resource"]["id"] for e in r.get("entry", [])]
            nxt = next((link["url"] for link in r["link"] if link["relation"] == "next"), None)
            if nxt is None:
                break
            r = session.get(nxt, timeout=30).json()
    finally:
        stop.set()
        thread.join(60)
    assert len(seen) == len(set(seen)), "a resource was returned twice"
    assert existing <= set(seen), "a resource that existed at the start was missed"
