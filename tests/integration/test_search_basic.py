"""The basic search of the server core: _id, _lastUpdated, token, string, reference, date."""

from __future__ import annotations

import pytest

from samples import all_pages, details_code, patient, vas


@pytest.fixture
def data(api):
    p1 = api.post("/Patient", json=patient("s1")).json()
    p2 = api.post(
        "/Patient",
        json={
            **patient("s2"),
            "name": [{"family": "Ørsted", "given": ["Hans"]}],
            "gender": "male",
            "birthDate": "1960",
        },
    ).json()
    o1 = api.post(
        "/Observation", json=vas(f"Patient/{p1['id']}", 40, "2024-03-05T10:00:00Z")
    ).json()
    o2 = api.post(
        "/Observation", json=vas(f"Patient/{p1['id']}", 20, "2024-06-05T10:00:00+02:00")
    ).json()
    o3 = api.post("/Observation", json=vas(f"Patient/{p2['id']}", 60, "2024-09-01")).json()
    return {"p1": p1, "p2": p2, "o1": o1, "o2": o2, "o3": o3}


def _ids(api, path: str, **params: str) -> set[str]:
    r = api.get(path, params=params)
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["type"] == "searchset"
    return {e["resource"]["id"] for e in body.get("entry", []) if e["search"]["mode"] == "match"}


def test_id(api, data) -> None:
    assert _ids(api, "/Patient", _id=data["p1"]["id"]) == {data["p1"]["id"]}
    assert _ids(api, "/Patient", _id=f"{data['p1']['id']},{data['p2']['id']}") == {
        data["p1"]["id"],
        data["p2"]["id"],
    }


def test_token_forms(api, data) -> None:
    sys_ = "urn:kyphofhir:test:mrn"
    assert _ids(api, "/Patient", identifier=f"{sys_}|s1") == {data["p1"]["id"]}
    assert _ids(api, "/Patient", identifier="s2") == {data["p2"]["id"]}
    assert _ids(api, "/Patient", identifier=f"{sys_}|") == {data["p1"]["id"], data["p2"]["id"]}
    assert _ids(api, "/Patient", identifier="|s1") == set()  # s1 has a system
    assert _ids(api, "/Patient", gender="male") == {data["p2"]["id"]}
    obs = _ids(api, "/Observation", code="http://loinc.org|38214-3")
    assert obs == {data["o1"]["id"], data["o2"]["id"], data["o3"]["id"]}
    assert _ids(api, "/Observation", code="http://snomed.info/sct|38214-3") == set()


def test_string_is_accent_and_case_insensitive_prefix(api, data) -> None:
    assert _ids(api, "/Patient", name="MÜLL") == {data["p1"]["id"]}
    assert _ids(api, "/Patient", name="muller") == {data["p1"]["id"]}
    assert _ids(api, "/Patient", family="orsted") == {data["p2"]["id"]}
    assert _ids(api, "/Patient", given="han") == {data["p2"]["id"]}
    assert _ids(api, "/Patient", name="ller") == set()  # starts-with, not contains
    assert _ids(api, "/Patient", **{"name:contains": "ller"}) == {data["p1"]["id"]}
    assert _ids(api, "/Patient", **{"family:exact": "Müller"}) == {data["p1"]["id"]}
    assert _ids(api, "/Patient", **{"family:exact": "müller"}) == set()


def test_reference(api, data) -> None:
    pid = data["p1"]["id"]
    expected = {data["o1"]["id"], data["o2"]["id"]}
    assert _ids(api, "/Observation", subject=f"Patient/{pid}") == expected
    assert _ids(api, "/Observation", subject=pid) == expected
    assert _ids(api, "/Observation", patient=pid) == expected
    assert _ids(api, "/Observation", subject=f"Group/{pid}") == set()


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("2024", {"o1", "o2", "o3"}),
        ("2024-03", {"o1"}),
        ("2024-03-05", {"o1"}),
        ("eq2024-06-05", {"o2"}),
        ("2024-06-05T08:00:00Z", {"o2"}),  # 10:00+02:00 is 08:00Z
        ("2024-06-05T10:00:00Z", set()),
        ("lt2024-06", {"o1"}),
        ("le2024-06-05", {"o1", "o2"}),
        ("gt2024-06-05", {"o3"}),
        ("ge2024-06-05", {"o2", "o3"}),
    ],
)
def test_date_prefixes_with_precision(api, data, expr, expected) -> None:
    got = _ids(api, "/Observation", date=expr)
    assert got == {data[k]["id"] for k in expected}


def test_date_ranges_combine_with_and(api, data) -> None:
    r = api.get("/Observation", params=[("date", "ge2024-03-01"), ("date", "lt2024-07-01")])
    ids = {e["resource"]["id"] for e in r.json()["entry"]}
    assert ids == {data["o1"]["id"], data["o2"]["id"]}


def test_birthdate_with_year_precision(api, data) -> None:
    assert _ids(api, "/Patient", birthdate="1960-05-01") == set()  # stored 1960 is wider
    assert _ids(api, "/Patient", birthdate="1960") == {data["p2"]["id"]}
    assert _ids(api, "/Patient", birthdate="ge1955") == {data["p2"]["id"]}


def test_last_updated(api, data) -> None:
    assert len(_ids(api, "/Patient", _lastUpdated="gt2000-01-01")) == 2
    assert _ids(api, "/Patient", _lastUpdated="lt2000-01-01") == set()


def test_count_and_next_links_visit_every_match_once(api, data) -> None:
    for i in range(7):
        api.post("/Patient", json=patient(f"page-{i}"))
    r = api.get("/Patient", params={"_count": "3"}).json()
    assert r["total"] == 9
    seen = []
    while True:
        seen += [e["resource"]["id"] for e in r["entry"]]
        nxt = next((link["url"] for link in r["link"] if link["relation"] == "next"), None)
        if nxt is None:
            break
        assert "_count=3" in nxt
        r = api.get(nxt).json()
    assert len(seen) == 9 == len(set(seen))


def test_summary_count_and_total_none(api, data) -> None:
    r = api.get("/Observation", params={"_summary": "count"}).json()
    assert r["total"] == 3
    assert "entry" not in r or r["entry"] == []
    r = api.get("/Observation", params={"_total": "none", "_count": "1"}).json()
    assert "total" not in r


def test_post_search_form(api, data) -> None:
    r = api.post(
        "/Patient/_search",
        data={"identifier": "urn:kyphofhir:test:mrn|s1"},
    )
    assert r.status_code == 200
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [data["p1"]["id"]]


def test_unknown_parameter_lenient_and_strict(api, data) -> None:
    r = api.get("/Patient", params={"unknown-param": "x", "gender": "male"})
    assert r.status_code == 200
    body = r.json()
    outcome = [e for e in body["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcome) == 1
    assert outcome[0]["resource"]["issue"][0]["expression"] == ["unknown-param"]
    assert body["total"] == 1
    strict = api.get(
        "/Patient", params={"unknown-param": "x"}, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400
    assert details_code(strict) == "MSG_PARAM_UNKNOWN"


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"birthdate": "not-a-date"}, "birthdate"),
        ({"birthdate": "2024-13"}, "birthdate"),
        ({"_count": "many"}, "_count"),
        ({"gender:fuzzy": "male"}, "gender:fuzzy"),
        ({"_page": "!!!"}, "_page"),
        ({"name:missing": "maybe"}, "name:missing"),
    ],
)
def test_malformed_search_values_are_400_naming_the_parameter(api, params, name) -> None:
    r = api.get("/Patient", params=params)
    assert r.status_code == 400
    issue = r.json()["issue"][0]
    assert issue["code"] == "invalid"
    assert name in issue.get("expression", []) or name in issue["diagnostics"]


def test_missing_modifier(api, data) -> None:
    api.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "NoBirth"}]})
    assert len(_ids(api, "/Patient", **{"birthdate:missing": "true"})) == 1
    assert len(_ids(api, "/Patient", **{"birthdate:missing": "false"})) == 2


def test_escaped_comma_in_value(api, data) -> None:
    api.post("/Patient", json=patient("a,b"))
    assert len(_ids(api, "/Patient", identifier="urn:kyphofhir:test:mrn|a\\,b")) == 1


def test_missing_on_column_parameters(api, data) -> None:
    assert _ids(api, "/Patient", **{"_lastUpdated:missing": "true"}) == set()
    assert len(_ids(api, "/Patient", **{"_id:missing": "false"})) == 2


def test_not_yet_supported_result_parameters_are_reported(api, data) -> None:
    for name, value in (
        ("_contained", "true"),
        ("_containedType", "contained"),
    ):
        r = api.get("/Patient", params={name: value})
        assert r.status_code == 200
        outcome = [e for e in r.json()["entry"] if e["search"]["mode"] == "outcome"]
        assert outcome, name
        strict = api.get("/Patient", params={name: value}, headers={"Prefer": "handling=strict"})
        assert strict.status_code == 400


def test_absolute_reference_search_matches_the_url(api, data) -> None:
    obs = vas("https://other.example.org/fhir/Patient/ext-1")
    oid = api.post("/Observation", json=obs).json()["id"]
    assert _ids(api, "/Observation", subject="https://other.example.org/fhir/Patient/ext-1") == {
        oid
    }
    assert (
        _ids(api, "/Observation", subject="https://third.example.org/fhir/Patient/ext-1") == set()
    )


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_long_values_are_indexed_on_postgres(api) -> None:
    long_system = "urn:x:" + "s" * 400
    pid = api.post(
        "/Patient",
        json={"resourceType": "Patient", "identifier": [{"system": long_system, "value": "1"}]},
    ).json()["id"]
    assert pid
    obs = vas(f"Patient/{pid}")
    obs["valueQuantity"]["code"] = "c" * 300
    obs["subject"] = {"reference": "https://x.org/" + "p" * 700}
    assert api.post("/Observation", json=obs).status_code == 201


def test_system_level_search(api, data) -> None:
    r = api.get("", params={"_type": "Patient,Observation", "_lastUpdated": "gt2000-01-01"})
    assert r.status_code == 200, r.content
    body = r.json()
    kinds = sorted(e["resource"]["resourceType"] for e in body["entry"])
    assert kinds == ["Observation"] * 3 + ["Patient"] * 2
    assert body["total"] == 5
    one = api.get("", params={"_id": data["p1"]["id"]}).json()
    assert [e["resource"]["id"] for e in one["entry"]] == [data["p1"]["id"]]
    both = api.get("", params={"_type": "Observation", "patient": data["p1"]["id"]}).json()
    assert both["total"] == 2


def test_system_level_search_errors(api, data) -> None:
    assert api.get("", params={"_type": "Unicorn"}).status_code == 400
    # 'patient' is not a parameter of Patient: it cannot be applied to every type
    r = api.get("", params={"_type": "Patient,Observation", "patient": data["p1"]["id"]})
    assert r.status_code == 400
    assert api.get("", params={"_sort": "birthdate"}).status_code == 400


def test_system_level_paging(api, data) -> None:
    first = api.get("", params={"_count": "2", "_sort": "_lastUpdated"}).json()
    seen = [e["resource"]["id"] for e in all_pages(api, first)]
    assert len(seen) == len(set(seen)) == 5
