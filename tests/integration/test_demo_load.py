"""Loading the demo cohort: `kyphofhir demo load` into a fresh SQLite store, then FHIR
searches over HTTP count what the published shape says; only into an empty store unless
``--force``; `kyphofhir serve --demo` (gunicorn, a real process) serves it.

The cohort is loaded once per module (about 10 s on SQLite) and only read afterwards;
tests that need a store of their own copy the database file.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from kyphofhir.cli import main
from kyphofhir.study import codes, demo
from kyphofhir.study.builders import DEFAULT_STUDY_ID

KYPHOFHIR = str(Path(sys.executable).with_name("kyphofhir"))
TIMEPOINT = codes.CS_TIMEPOINT
FRACTURE = f"{codes.SNOMED}|{codes.PATHOLOGICAL_FRACTURE['code']}"
VAS = f"{codes.LOINC}|{codes.VAS['code']}"
ODI = f"{codes.LOINC}|{codes.ODI_SCORE['code']}"
L1 = f"{codes.SNOMED}|{codes.VERTEBRAE['L1']}"


def _sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'kyphofhir.sqlite3'}"


def _copy_store(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for f in src.glob("kyphofhir.sqlite3*"):  # the database and any WAL/SHM files
        shutil.copy(f, dst / f.name)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder whose SQLite store holds the default demo cohort."""
    folder = tmp_path_factory.mktemp("demo") / "data"
    result = CliRunner().invoke(
        main, ["demo", "load", "--db", _sqlite_url(folder), "--data-dir", str(folder)]
    )
    assert result.exit_code == 0, result.output
    assert "2068 rows read, 2068 imported, 0 failed" in result.output
    return folder


@pytest.fixture
def app_config(demo_dir: Path, tmp_path: Path) -> dict[str, Any]:
    """The ``app``/``api`` fixtures of conftest, on the demo store (read only)."""
    return {"db": _sqlite_url(demo_dir), "data_dir": str(tmp_path / "unused")}


def _count(api: Any, query: str) -> int:
    sep = "&" if "?" in query else "?"
    r = api.get(f"/{query}{sep}_summary=count")
    assert r.status_code == 200, r.content
    total = r.json()["total"]
    assert isinstance(total, int)
    return total


def test_search_counts_match_the_published_shape(http: Any) -> None:
    """ResearchSubject per arm, patients per sex, fractures, kyphoplasties and month-6
    visits, through the FHIR REST API over HTTP."""
    assert _count(http, "ResearchStudy") == 1
    assert http.get(f"/ResearchStudy/{DEFAULT_STUDY_ID}").status_code == 200
    assert _count(http, "ResearchSubject?arm=bkp") == 85
    assert _count(http, "ResearchSubject?arm=conservative") == 48
    assert _count(http, "Patient?gender=male") == 52 + 29
    assert _count(http, "Patient?gender=female") == 33 + 19
    assert _count(http, f"Condition?code={FRACTURE}") == 206 + 80
    assert _count(http, "Procedure") == 206
    assert _count(http, f"Encounter?type={TIMEPOINT}|month-6") == 82 + 43
    assert _count(http, "QuestionnaireResponse") == 524  # every visit, item by item


@pytest.mark.slow  # Observation?code=system|code takes seconds on an un-ANALYZEd SQLite
def test_outcome_observations_by_arm_and_timepoint(http: Any) -> None:
    """The researcher's query: VAS at month 6 in the BKP arm (82 patients seen); one
    scored ODI Observation per questionnaire."""
    bkp_month6 = (
        f"Observation?code={VAS}&encounter.type={TIMEPOINT}|month-6"
        "&subject:Patient._has:ResearchSubject:individual:arm=bkp"
    )
    assert _count(http, bkp_month6) == 82
    assert _count(http, f"Observation?code={ODI}") == 524


def test_fractures_at_l1_have_their_level(http: Any) -> None:
    r = http.get(f"/Condition?code={FRACTURE}&body-site={L1}&_count=100")
    assert r.status_code == 200
    entries = r.json().get("entry", [])
    assert entries
    for e in entries:
        sites = [c["code"] for bs in e["resource"]["bodySite"] for c in bs["coding"]]
        assert codes.VERTEBRAE["L1"] in sites


def test_load_refuses_a_store_that_holds_a_study(demo_dir: Path) -> None:
    """Without --force nothing is written (exit 1, the reason on stderr)."""
    result = CliRunner().invoke(
        main, ["demo", "load", "--db", _sqlite_url(demo_dir), "--data-dir", str(demo_dir)]
    )
    assert result.exit_code == 1
    assert "not loaded" in result.output
    assert "133 ResearchSubject" in result.output


@pytest.mark.slow
def test_forced_reload_of_the_same_seed_changes_nothing(demo_dir: Path, tmp_path: Path) -> None:
    """--force re-imports; the identifiers make it idempotent (no new versions)."""
    copy = tmp_path / "copy"
    _copy_store(demo_dir, copy)
    result = CliRunner().invoke(
        main, ["demo", "load", "--force", "--db", _sqlite_url(copy), "--data-dir", str(copy)]
    )
    assert result.exit_code == 0, result.output
    assert "0 created, 0 updated" in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"server exited early: {err}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.05)  # the port is not open until the demo is loaded
    raise AssertionError("server did not become ready")


@contextmanager
def _serve_demo(data_dir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYPHOFHIR_")}
    args = [KYPHOFHIR, "serve", "--demo", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(
        [*args, "--data-dir", str(data_dir)],
        cwd=data_dir.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}/fhir"
        _wait_ready(f"{base}/metadata", proc, deadline_s=120)
        yield base, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def _arm_count(base: str, arm: str) -> int:
    r = requests.get(f"{base}/ResearchSubject?arm={arm}&_summary=count", timeout=30)
    assert r.status_code == 200
    return int(r.json()["total"])


def test_serve_demo_keeps_an_existing_study(demo_dir: Path, tmp_path: Path) -> None:
    """`serve --demo` on a store that has a study starts at once and loads nothing more."""
    copy = tmp_path / "data"
    _copy_store(demo_dir, copy)
    with _serve_demo(copy) as (base, _proc):
        assert _arm_count(base, "bkp") == 85
        r = requests.get(f"{base}/ResearchSubject/_history?_summary=count", timeout=30)
        assert r.status_code == 200 and r.json()["total"] == 133  # one version each


@pytest.mark.slow
def test_serve_demo_loads_an_empty_store(tmp_path: Path) -> None:
    """`serve --demo` on a fresh data folder: the README's run command, populated."""
    with _serve_demo(tmp_path / "data") as (base, proc):
        assert _arm_count(base, "bkp") == 85
        assert _arm_count(base, "conservative") == 48
        assert proc.poll() is None


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_generate_writes_the_table_and_a_readme(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "cohort"
    result = CliRunner().invoke(
        main, ["demo", "generate", "--seed", "7", "--out", str(out), "--format", fmt]
    )
    assert result.exit_code == 0, result.output
    table = out / f"study-table.{fmt}"
    assert table.read_text("utf-8") == (
        demo.to_csv(demo.generate(7)) if fmt == "csv" else demo.to_ndjson(demo.generate(7))
    )
    readme = (out / "README.txt").read_text("utf-8")
    assert "SYNTHETIC" in readme and "--seed 7" in readme
    assert "85 patients (52 male, 33 female), 206 fractures" in readme
