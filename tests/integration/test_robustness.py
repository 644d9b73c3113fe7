"""Generated bad input never makes the server answer 500 (Hypothesis, Flask test client)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samples import patient, vas

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(
    [
        "id",
        "meta",
        "name",
        "gender",
        "birthDate",
        "identifier",
        "status",
        "code",
        "subject",
        "valueQuantity",
        "effectiveDateTime",
        "component",
        "extension",
        "contained",
        "resourceType",
        "_gender",
        "text",
        "active",
        "telecom",
        "category",
    ]
)


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    base=st.sampled_from(["Patient", "Observation"]),
    changes=st.dictionaries(KEYS, JSON, max_size=4),
)
def test_mutated_resources_never_500(app, base: str, changes: dict[str, Any]) -> None:
    body = {**(patient() if base == "Patient" else vas("Patient/x")), **changes}
    client = app.test_client()
    for method, path in (("POST", f"/fhir/{base}"), ("PUT", f"/fhir/{base}/fuzz-1")):
        r = client.open(
            path, method=method, data=json.dumps(body), content_type="application/fhir+json"
        )
        assert r.status_code < 500, (r.status_code, r.get_data(as_text=True)[:500])
        assert r.json is not None


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    params=st.dictionaries(
        st.sampled_from(
            [
                "name",
                "birthdate",
                "identifier",
                "_count",
                "_id",
                "_lastUpdated",
                "gender",
                "name:exact",
                "birthdate:missing",
                "general-practitioner",
                "_page",
                "_total",
            ]
        ),
        st.text(max_size=30),
        min_size=1,
        max_size=3,
    )
)
def test_generated_search_parameters_never_500(app, params: dict[str, str]) -> None:
    r = app.test_client().get("/fhir/Patient", query_string=params)
    assert r.status_code < 500, (params, r.get_data(as_text=True)[:500])


@pytest.mark.parametrize("depth", [600, 3000])
def test_deeply_nested_resource_is_400(app, depth: int) -> None:
    item = '{"linkId":"x","type":"group"'
    text = (item + ',"item":[') * depth + item + "}" + "]}" * depth
    body = '{"resourceType":"Questionnaire","status":"active","item":[' + text + "]}"
    client = app.test_client()
    r = client.post("/fhir/Questionnaire", data=body, content_type="application/fhir+json")
    assert r.status_code == 400
    bundle = (
        '{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST",'
        '"url":"Questionnaire"},"resource":' + body + "}]}"
    )
    r = client.post("/fhir", data=bundle, content_type="application/fhir+json")
    assert r.status_code == 400
