"""The profiles/ artefacts are stored at start-up, idempotently, and served."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from kyphofhir.app import create_app
from kyphofhir.services import conformance
from kyphofhir.study import codes
from profile_samples import good
from samples import create

PROFILES = Path(__file__).resolve().parents[2] / "profiles"
ARTEFACTS = sorted(p.name for p in PROFILES.glob("*.json"))


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "load_profiles": True}


def test_every_artefact_is_served(http) -> None:
    for name in ARTEFACTS:
        data = json.loads((PROFILES / name).read_text(encoding="utf-8"))
        r = http.get(f"/{data['resourceType']}/{data['id']}")
        assert r.status_code == 200, name
        served = r.json()
        assert served["meta"]["versionId"] == "1"
        assert {k: v for k, v in served.items() if k != "meta"} == data
    r = http.get("/StructureDefinition", params={"url": codes.structure_definition("study")})
    assert r.json()["total"] == 1
    r = http.get("/Questionnaire", params={"url": codes.QUESTIONNAIRE_ODI, "version": "0.1.0"})
    assert r.json()["total"] == 1
    # stored ValueSets answer the :in modifier
    create(http, good("vertebral-fracture-condition"))
    r = http.get("/Condition", params={"body-site:in": codes.value_set("vertebra")})
    assert r.json()["total"] == 1


def test_loading_is_idempotent_and_follows_changes(db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    shutil.copytree(PROFILES, folder)
    config = {"db": db_url, "data_dir": str(tmp_path / "d"), "profiles_dir": str(folder)}
    apps = []
    try:
        apps.append(create_app({**config, "load_profiles": False}))
        svc = apps[0].extensions["kyphofhir"]
        client = apps[0].test_client()
        # a client's CodeSystem holds the id one of the artefacts wants
        squatter = {"resourceType": "CodeSystem", "url": "urn:test:other", "status": "draft",
                    "content": "not-present"}  # fmt: skip
        assert client.put("/fhir/CodeSystem/arm", json={**squatter, "id": "arm"}).status_code == 201
        first = conformance.load(svc)
        assert (first.created, first.updated, first.unchanged) == (len(ARTEFACTS), 0, 0)
        again = conformance.load(svc)
        assert (again.created, again.updated, again.unchanged) == (0, 0, len(ARTEFACTS))
        arm = client.get("/fhir/CodeSystem", query_string={"url": codes.CS_ARM}).json["entry"]
        assert arm[0]["resource"]["id"] != "arm"  # a fresh id instead
        # a changed artefact (same url and version) becomes a new version
        path = folder / "ValueSet-arm.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps({**data, "description": "changed"}), encoding="utf-8")
        conformance.read_artefacts.cache_clear()
        conformance._checked.cache_clear()
        apps.append(create_app(config))  # start-up loads
        r = client.get("/fhir/ValueSet/arm")
        assert r.json["meta"]["versionId"] == "2" and r.json["description"] == "changed"
        assert client.get("/fhir/ValueSet/vertebra").json["meta"]["versionId"] == "1"
        # a new version of an artefact is a new version of the same resource
        path.write_text(json.dumps({**data, "version": "0.2.0"}), encoding="utf-8")
        conformance.read_artefacts.cache_clear()
        conformance._checked.cache_clear()
        report = conformance.load(svc)
        assert (report.created, report.updated) == (0, 1)
        r = client.get("/fhir/ValueSet/arm/_history")
        assert r.json["total"] == 3
    finally:
        conformance.read_artefacts.cache_clear()
        conformance._checked.cache_clear()
        for app in apps:
            app.extensions["kyphofhir"].store.dispose()
