"""profiles/ is what scripts/build_profiles.py generates, complete and documented."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kyphofhir.search.profiles import load_search_parameters
from kyphofhir.study import codes

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "profiles"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_profiles", ROOT / "scripts/build_profiles.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PROFILES / name).read_text(encoding="utf-8"))
    return data


def test_committed_json_is_what_the_generator_writes(generator: ModuleType) -> None:
    assert generator.stale(PROFILES) == [], "run: .venv/bin/python scripts/build_profiles.py"


def test_the_check_notices_a_stale_file(generator: ModuleType, tmp_path: Path) -> None:
    for name, resource in generator.artefacts().items():
        (tmp_path / name).write_text(generator.render(resource), encoding="utf-8")
    assert generator.stale(tmp_path) == []
    (tmp_path / "ValueSet-arm.json").write_text("{}", encoding="utf-8")
    (tmp_path / "CodeSystem-old.json").write_text("{}", encoding="utf-8")
    assert generator.stale(tmp_path) == ["CodeSystem-old.json", "ValueSet-arm.json"]


def test_snapshots_hold_the_base_and_every_differential_element() -> None:
    for path in sorted(PROFILES.glob("StructureDefinition-*.json")):
        sd = _load(path.name)
        snapshot = {e["id"]: e for e in sd["snapshot"]["element"]}
        assert len(snapshot) == len(sd["snapshot"]["element"]), path.name
        for diff in sd["differential"]["element"]:
            merged = snapshot[diff["id"]]
            for key, value in diff.items():
                if key == "constraint":
                    keys = [c["key"] for c in merged["constraint"]]
                    assert all(c["key"] in keys for c in value)
                else:
                    assert merged[key] == value, (path.name, diff["id"], key)
        assert sd["snapshot"]["element"][0]["id"] == sd["type"]
        assert all(e["path"].split(".")[0] == sd["type"] for e in snapshot.values())
        assert sd["url"] == codes.structure_definition(sd["id"])
        assert sd["derivation"] == "constraint" and sd["fhirVersion"] == "4.0.1"


def test_the_search_parameter_loader_accepts_ours() -> None:
    found = {p["code"]: p for p in load_search_parameters(PROFILES)}
    assert found["arm"]["expression"] == "ResearchSubject.assignedArm"
    assert found["body-site"]["expression"] == "Observation.bodySite"


def test_odi_artefacts_carry_no_statement_text() -> None:
    cs = _load("CodeSystem-odi.json")
    questionnaire = _load("Questionnaire-odi.json")
    sections = {c["code"]: c for c in cs["concept"]}
    assert {k: v["display"] for k, v in sections.items()} == codes.ODI_SECTIONS
    for section, concept in sections.items():
        answers = concept["concept"]
        assert [a["display"] for a in answers] == [
            codes.odi_answer_display(section, n) for n in codes.ODI_LEVELS
        ]
        assert [a["property"] for a in answers] == [
            [{"code": "ordinal", "valueDecimal": n}] for n in codes.ODI_LEVELS
        ]
    assert questionnaire["copyright"] == codes.ODI_COPYRIGHT
    assert questionnaire["code"] == [codes.ODI_PANEL]
    items = questionnaire["item"]
    assert [i["linkId"] for i in items] == [*codes.ODI_SECTIONS, "odi-score"]
    for item in items[:-1]:
        assert (
            item["code"][0]["system"] == codes.CS_ODI and item["text"] == item["code"][0]["display"]
        )
        options = [o["valueCoding"] for o in item["answerOption"]]
        assert [o["extension"] for o in options] == [
            [{"url": codes.EXT_ORDINAL_VALUE, "valueDecimal": n}] for n in codes.ODI_LEVELS
        ]
        assert [o["display"] for o in options] == [
            codes.odi_answer_display(item["linkId"], n) for n in codes.ODI_LEVELS
        ]
    assert items[-1]["code"] == [codes.ODI_SCORE]


def test_every_artefact_is_documented() -> None:
    readme = (PROFILES / "README.md").read_text(encoding="utf-8")
    guide = (ROOT / "docs/ig.md").read_text(encoding="utf-8")
    for path in sorted(PROFILES.glob("*.json")):
        data = _load(path.name)
        assert f"`{path.name}`" in readme, path.name
        assert f"`{data['id']}`" in guide, path.name
