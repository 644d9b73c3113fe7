"""Custom SearchParameters from a profiles folder, and `kyphofhir reindex`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kyphofhir.app import create_app
from kyphofhir.cli import main
from kyphofhir.search.profiles import ProfileError

ARM = {
    "resourceType": "SearchParameter",
    "id": "researchsubject-arm",
    "url": "https://kyphofhir.org/fhir/SearchParameter/researchsubject-arm-test",
    "name": "arm",
    "status": "active",
    "description": "Arm a subject is assigned to (test copy).",
    "code": "arm",
    "base": ["ResearchSubject"],
    "type": "token",
    "expression": "ResearchSubject.assignedArm",
}
SUBJECT = {
    "resourceType": "ResearchSubject",
    "status": "on-study",
    "study": {"reference": "ResearchStudy/kyphoplasty"},
    "individual": {"reference": "Patient/p1"},
    "assignedArm": "bkp",
}


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "arm.json").write_text(json.dumps(ARM))
    return folder


def _arm_hits(app) -> int:
    r = app.test_client().get("/fhir/ResearchSubject", query_string={"arm": "bkp"})
    assert r.status_code == 200, r.get_data(as_text=True)
    outcome = [e for e in r.json.get("entry", []) if e["search"]["mode"] == "outcome"]
    assert not outcome, outcome
    return int(r.json["total"])


def test_custom_parameter_is_indexed_and_advertised(db_url: str, profiles: Path) -> None:
    app = create_app({"db": db_url, "profiles_dir": str(profiles)})
    try:
        assert app.test_client().post("/fhir/ResearchSubject", json=SUBJECT).status_code == 201
        assert _arm_hits(app) == 1
        cs = app.test_client().get("/fhir/metadata").json
        rs = next(r for r in cs["rest"][0]["resource"] if r["type"] == "ResearchSubject")
        assert any(p["name"] == "arm" and p["definition"] == ARM["url"] for p in rs["searchParam"])
    finally:
        app.extensions["kyphofhir"].store.dispose()


def test_reindex_indexes_existing_resources(db_url: str, profiles: Path, tmp_path: Path) -> None:
    before = create_app({"db": db_url, "profiles_dir": str(tmp_path / "none")})
    try:
        assert before.test_client().post("/fhir/ResearchSubject", json=SUBJECT).status_code == 201
    finally:
        before.extensions["kyphofhir"].store.dispose()
    after = create_app({"db": db_url, "profiles_dir": str(profiles)})
    try:
        assert _arm_hits(after) == 0  # written before the parameter existed
        result = CliRunner().invoke(
            main,
            ["reindex", "--type", "ResearchSubject", "--db", db_url],
            env={"KYPHOFHIR_PROFILES_DIR": str(profiles)},
        )
        assert result.exit_code == 0, result.output
        assert "ResearchSubject: 1 reindexed" in result.output
        assert _arm_hits(after) == 1
        bad = CliRunner().invoke(main, ["reindex", "--type", "Unicorn", "--db", db_url])
        assert bad.exit_code != 0
    finally:
        after.extensions["kyphofhir"].store.dispose()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"expression": None}, "no expression"),
        ({"type": "special"}, "type 'special'"),
        ({"base": ["Medication"]}, "no served base"),
        ({"expression": "ResearchSubject.(("}, "bad expression"),
        ({"expression": "ResearchSubject.nosuchfunction()"}, "bad expression"),
        ({"expression": "ResearchSubject.where("}, "bad expression"),
    ],
)
def test_unusable_definitions_stop_the_start(tmp_path: Path, change, message) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "broken.json").write_text(json.dumps({**ARM, **change}))
    with pytest.raises(ProfileError) as exc:
        create_app({"data_dir": str(tmp_path), "profiles_dir": str(folder)})
    assert "broken.json" in str(exc.value) and message in str(exc.value)
