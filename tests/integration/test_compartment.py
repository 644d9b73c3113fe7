"""Patient compartment searches and Patient/$everything."""

from __future__ import annotations

import time

import pytest

from samples import all_pages, create, patient, vas


@pytest.fixture
def chart(api):
    def post(body):
        return create(api, body)

    p1, p2 = post(patient("e1")), post(patient("e2"))
    o1, o2 = post(vas(f"Patient/{p1}", 10)), post(vas(f"Patient/{p1}", 20))
    o3 = post(vas(f"Patient/{p2}", 30))
    cond = post(
        {
            "resourceType": "Condition",
            "subject": {"reference": f"Patient/{p1}"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "109989006"}]},
        }
    )
    doc = post({"resourceType": "Practitioner", "name": [{"family": "Doktor"}]})
    return {"p1": p1, "p2": p2, "o1": o1, "o2": o2, "o3": o3, "cond": cond, "doc": doc}


def _ids(reply) -> set[tuple[str, str]]:
    assert reply.status_code == 200, reply.content
    return {
        (e["resource"]["resourceType"], e["resource"]["id"]) for e in reply.json().get("entry", [])
    }


def test_compartment_search(api, chart) -> None:
    got = _ids(api.get(f"/Patient/{chart['p1']}/Observation"))
    assert got == {("Observation", chart["o1"]), ("Observation", chart["o2"])}
    filtered = _ids(
        api.get(f"/Patient/{chart['p1']}/Observation", params={"value-quantity": "gt15"})
    )
    assert filtered == {("Observation", chart["o2"])}
    assert _ids(api.get(f"/Patient/{chart['p2']}/Condition")) == set()


def test_compartment_errors(api, chart) -> None:
    assert api.get("/Patient/nobody/Observation").status_code == 404
    assert api.get(f"/Patient/{chart['p1']}/Practitioner").status_code == 400
    assert api.get(f"/Practitioner/{chart['doc']}/Observation").status_code == 404


def test_everything(api, chart) -> None:
    got = _ids(api.get(f"/Patient/{chart['p1']}/$everything"))
    assert got == {
        ("Patient", chart["p1"]),
        ("Observation", chart["o1"]),
        ("Observation", chart["o2"]),
        ("Condition", chart["cond"]),
    }
    only = _ids(api.get(f"/Patient/{chart['p1']}/$everything", params={"_type": "Condition"}))
    assert only == {("Condition", chart["cond"])}
    assert (
        api.get(f"/Patient/{chart['p1']}/$everything", params={"_type": "Unicorn"}).status_code
        == 400
    )


def test_everything_since_and_paging(api, chart) -> None:
    time.sleep(0.01)
    marker = api.post("/Observation", json=vas(f"Patient/{chart['p1']}", 55)).json()
    since = marker["meta"]["lastUpdated"]
    recent = _ids(api.get(f"/Patient/{chart['p1']}/$everything", params={"_since": since}))
    assert recent == {("Observation", marker["id"])}
    first = api.get(f"/Patient/{chart['p1']}/$everything", params={"_count": "2"}).json()
    assert "$everything" in next(x["url"] for x in first["link"] if x["relation"] == "next")
    seen = [e["resource"]["id"] for e in all_pages(api, first)]
    assert len(seen) == len(set(seen)) == 5
