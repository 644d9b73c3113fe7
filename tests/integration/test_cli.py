"""The command line: `kyphofhir serve` (gunicorn, real process), `db upgrade`, `config`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import inspect

from kyphofhir.cli import main
from kyphofhir.store.sql.engine import make_engine
from kyphofhir.store.sql.migrate import current_revision, head_revision

KYPHOFHIR = str(Path(sys.executable).with_name("kyphofhir"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(
                f"server exited early: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            # gunicorn accepts on its socket before a worker has booted
            time.sleep(0.05)
    raise AssertionError("server did not become ready")


def test_serve_runs_gunicorn_with_sqlite_default_and_migrates(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYPHOFHIR_")}
    proc = subprocess.Popen(
        [
            KYPHOFHIR,
            "serve",
            "--port",
            str(port),
            "--workers",
            "2",
            "--data-dir",
            str(tmp_path / "d"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}/fhir"
        _wait_ready(f"{base}/metadata", proc)
        r = requests.post(
            f"{base}/Patient", json={"resourceType": "Patient", "gender": "female"}, timeout=10
        )
        assert r.status_code == 201
        assert r.headers["Location"].startswith(base + "/Patient/")
        assert "gunicorn" in r.headers.get("Server", "").lower()
        assert (tmp_path / "d" / "kyphofhir.sqlite3").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    # one access log line per request, no request body / patient data in it
    log = err.decode()
    assert "POST /fhir/Patient 201" in log
    assert "female" not in log


def test_serve_base_url_setting_is_used_in_location(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYPHOFHIR_")}
    env["KYPHOFHIR_BASE_URL"] = "https://fhir.example.org/fhir"
    env["KYPHOFHIR_PORT"] = str(port)
    env["KYPHOFHIR_DATA_DIR"] = str(tmp_path)
    proc = subprocess.Popen(
        [KYPHOFHIR, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}/fhir/metadata", proc)
        r = requests.post(
            f"http://127.0.0.1:{port}/fhir/Patient", json={"resourceType": "Patient"}, timeout=10
        )
        assert r.headers["Location"].startswith("https://fhir.example.org/fhir/Patient/")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_db_upgrade_creates_schema_at_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    result = CliRunner().invoke(main, ["db", "upgrade", "--db", url])
    assert result.exit_code == 0, result.output
    assert head_revision() in result.output
    engine = make_engine(url)
    assert current_revision(engine) == head_revision()
    assert {"resource", "resource_version", "spidx_token"} <= set(inspect(engine).get_table_names())
    engine.dispose()
    again = CliRunner().invoke(main, ["db", "upgrade", "--db", url])
    assert again.exit_code == 0


def test_config_lists_settings_and_rejects_bad_env() -> None:
    result = CliRunner().invoke(main, ["config"], env={"KYPHOFHIR_PORT": "9999"})
    assert result.exit_code == 0
    assert "KYPHOFHIR_PORT" in result.output and "9999" in result.output
    bad = CliRunner().invoke(main, ["config"], env={"KYPHOFHIR_PORT": "eighty"})
    assert bad.exit_code != 0
    assert "KYPHOFHIR_PORT must be an integer" in bad.output


@pytest.mark.postgres
def test_db_upgrade_on_postgres(pg_database: str) -> None:
    result = CliRunner().invoke(main, ["db", "upgrade", "--db", pg_database])
    assert result.exit_code == 0, result.output
    assert head_revision() in result.output
