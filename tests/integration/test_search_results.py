"""Result parameters: _include / _revinclude (with :iterate and the cap), _summary, _elements."""

from __future__ import annotations

import pytest

from samples import create, patient, vas


@pytest.fixture
def data(api):
    def post(body):
        return create(api, body)

    doc = post({"resourceType": "Practitioner", "name": [{"family": "Doktor"}]})
    p1 = post(
        {
            **patient("r1"),
            "generalPractitioner": [{"reference": f"Practitioner/{doc}"}],
            "text": {
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml">P</div>',
            },
        }
    )
    p2 = post(patient("r2"))
    obs = [post(vas(f"Patient/{p1}", v)) for v in (10, 20)] + [post(vas(f"Patient/{p2}", 30))]
    return {"doc": doc, "p1": p1, "p2": p2, "obs": obs}


def _entries(api, path: str, params: list[tuple[str, str]] | dict[str, str]):
    r = api.get(path, params=params)
    assert r.status_code == 200, r.content
    return r.json()["entry"]


def _by_mode(entries, mode: str) -> set[tuple[str, str]]:
    return {
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in entries
        if e["search"]["mode"] == mode
    }


def test_include(api, data) -> None:
    entries = _entries(api, "/Observation", {"_include": "Observation:subject"})
    assert len(_by_mode(entries, "match")) == 3
    assert _by_mode(entries, "include") == {("Patient", data["p1"]), ("Patient", data["p2"])}
    typed = _entries(api, "/Observation", {"_include": "Observation:subject:Group"})
    assert _by_mode(typed, "include") == set()
    star = _entries(api, "/Observation", {"_include": "Observation:*"})
    assert _by_mode(star, "include") == {("Patient", data["p1"]), ("Patient", data["p2"])}


def test_include_iterate(api, data) -> None:
    params = [
        ("_include", "Observation:subject"),
        ("_include:iterate", "Patient:general-practitioner"),
    ]
    entries = _entries(api, "/Observation", params)
    assert ("Practitioner", data["doc"]) in _by_mode(entries, "include")
    without = _entries(
        api,
        "/Observation",
        [("_include", "Observation:subject"), ("_include", "Observation:performer")],
    )
    assert ("Practitioner", data["doc"]) not in _by_mode(without, "include")


def test_revinclude(api, data) -> None:
    entries = _entries(api, "/Patient", {"_id": data["p1"], "_revinclude": "Observation:subject"})
    assert _by_mode(entries, "match") == {("Patient", data["p1"])}
    assert _by_mode(entries, "include") == {("Observation", o) for o in data["obs"][:2]}


def test_revinclude_iterate_from_practitioner(api, data) -> None:
    params = [
        ("_id", data["doc"]),
        ("_revinclude", "Patient:general-practitioner"),
        ("_revinclude:iterate", "Observation:subject"),
    ]
    entries = _entries(api, "/Practitioner", params)
    included = _by_mode(entries, "include")
    assert ("Patient", data["p1"]) in included
    assert {("Observation", o) for o in data["obs"][:2]} <= included


def test_include_cap_is_400_not_a_short_page(api, app, data) -> None:
    settings = app.extensions["kyphofhir"].settings
    object.__setattr__(settings, "max_include", 1)
    r = api.get("/Observation", params={"_include": "Observation:subject"})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["_include"]


@pytest.mark.parametrize(
    "value",
    [
        "Observation",
        "Observation:code",
        "Unicorn:subject",
        "Patient:general-practitioner",
        "Observation:subject:Medication",
    ],
)
def test_bad_includes_are_400(api, data, value) -> None:
    assert api.get("/Observation", params={"_include": value}).status_code == 400


def test_summary_and_elements(api, data) -> None:
    full = _entries(api, "/Patient", {"_id": data["p1"]})[0]["resource"]
    assert "text" in full
    summary = _entries(api, "/Patient", {"_id": data["p1"], "_summary": "true"})[0]["resource"]
    assert "text" not in summary
    assert summary["name"] == full["name"] and summary["gender"] == "female"
    assert any(t["code"] == "SUBSETTED" for t in summary["meta"]["tag"])
    text = _entries(api, "/Patient", {"_id": data["p1"], "_summary": "text"})[0]["resource"]
    assert set(text) == {"resourceType", "id", "meta", "text"}
    data_only = _entries(api, "/Patient", {"_id": data["p1"], "_summary": "data"})[0]["resource"]
    assert "text" not in data_only and "generalPractitioner" in data_only
    elements = _entries(api, "/Observation", {"_elements": "value,subject"})[0]["resource"]
    assert {"valueQuantity", "subject", "status", "code"} <= set(elements)  # + mandatory
    assert "effectiveDateTime" not in elements and "category" not in elements
    assert api.get("/Patient", params={"_summary": "everything"}).status_code == 400
