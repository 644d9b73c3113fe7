"""create_app: settings objects, Flask-style test config, env-style keys."""

from __future__ import annotations

from pathlib import Path

from kyphofhir.app import create_app
from kyphofhir.config import Settings


def _close(app) -> None:
    app.extensions["kyphofhir"].store.dispose()


def test_flask_style_mapping_and_env_style_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    app = create_app({"TESTING": True, "KYPHOFHIR_DB": url, "base_url": "https://x.org/fhir"})
    try:
        assert app.config["TESTING"] is True
        settings = app.config["KYPHOFHIR_SETTINGS"]
        assert settings.database_url == url
        assert settings.base_url == "https://x.org/fhir"
        r = app.test_client().post("/fhir/Patient", json={"resourceType": "Patient"})
        assert r.headers["Location"].startswith("https://x.org/fhir/Patient/")
    finally:
        _close(app)


def test_settings_object_with_overrides(tmp_path: Path) -> None:
    base = Settings.load({"data_dir": str(tmp_path)}, environ={})
    app = create_app(base, {"max_body_bytes": 1000})
    try:
        assert app.config["MAX_CONTENT_LENGTH"] == 1000
        assert (tmp_path / "kyphofhir.sqlite3").exists()
    finally:
        _close(app)


def test_behind_proxy_uses_forwarded_host_and_scheme(tmp_path: Path) -> None:
    app = create_app({"data_dir": str(tmp_path), "behind_proxy": True})
    try:
        r = app.test_client().post(
            "/fhir/Patient",
            json={"resourceType": "Patient"},
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "fhir.hospital.example"},
        )
        assert r.headers["Location"].startswith("https://fhir.hospital.example/fhir/Patient/")
    finally:
        _close(app)
