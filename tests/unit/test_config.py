"""Settings: defaults, environment overrides, explicit overrides, errors."""

from __future__ import annotations

import pytest

from kyphofhir.config import Settings


def test_defaults() -> None:
    s = Settings.load(environ={})
    assert (s.host, s.port, s.data_dir) == ("127.0.0.1", 8080, "./kyphofhir-data")
    assert s.database_url.startswith("sqlite:///") and s.database_url.endswith(
        "kyphofhir-data/kyphofhir.sqlite3"
    )


def test_env_then_overrides() -> None:
    env = {
        "KYPHOFHIR_PORT": "9000",
        "KYPHOFHIR_AUTO_MIGRATE": "false",
        "KYPHOFHIR_DB": "sqlite:///x",
    }
    s = Settings.load({"port": 9100, "host": None}, environ=env)
    assert s.port == 9100
    assert s.auto_migrate is False
    assert s.database_url == "sqlite:///x"


@pytest.mark.parametrize("env", [{"KYPHOFHIR_PORT": "x"}, {"KYPHOFHIR_AUTO_MIGRATE": "maybe"}])
def test_bad_env_values(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Settings.load(environ=env)


def test_unknown_override() -> None:
    with pytest.raises(ValueError):
        Settings.load({"nope": 1}, environ={})


def test_every_setting_is_documented() -> None:
    for name, env, _default, doc, example in Settings.describe():
        assert env == "KYPHOFHIR_" + name.upper()
        assert doc and example
