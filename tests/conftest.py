"""Fixtures: backends (SQLite file, PostgreSQL database), app, live HTTP server, clients.

PostgreSQL: the server at ``KYPHOFHIR_TEST_PG`` (default
``postgresql+psycopg://root@127.0.0.1:5432/test``) is used to create a database of the
test session's own, dropped at the end. Where it cannot be reached the PostgreSQL tests
skip with the reason, unless ``KYPHOFHIR_REQUIRE_POSTGRES=1`` (set by ``.ci/run``), which
makes them fail instead.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from werkzeug.serving import BaseWSGIServer, make_server

from kyphofhir.app import create_app
from kyphofhir.store.sql.engine import make_engine
from kyphofhir.store.sql.migrate import upgrade
from kyphofhir.store.sql.schema import metadata

PG_ADMIN_URL = os.environ.get("KYPHOFHIR_TEST_PG", "postgresql+psycopg://root@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("KYPHOFHIR_REQUIRE_POSTGRES") == "1"

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


# --------------------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; each test copies it instead of migrating again."""
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of this test session's own, migrated to head."""
    name = f"kf_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure means "not available here"
        reason = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc.__class__.__name__}: {exc}"
        if REQUIRE_PG:
            pytest.fail(reason + " (KYPHOFHIR_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def _truncate(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(t.name for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty, migrated database for one test."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "kyphofhir.sqlite3"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    _truncate(url)
    return url


# --------------------------------------------------------------------------- app + servers


@pytest.fixture
def app_config(db_url: str, tmp_path: Path) -> dict[str, Any]:
    # Storing the profiles/ artefacts costs 0.07 s (SQLite) to 0.3 s (PostgreSQL) per
    # app; tests that need them served override this fixture with load_profiles=True.
    return {"db": db_url, "data_dir": str(tmp_path / "data"), "load_profiles": False}


@pytest.fixture
def app(app_config: dict[str, Any]) -> Iterator[Flask]:
    application = create_app(test_config=app_config)
    application.config["TESTING"] = True
    yield application
    application.extensions["kyphofhir"].store.dispose()


class _Server:
    def __init__(self, app: Flask) -> None:
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/fhir"

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The app on a real socket (127.0.0.1, a free port); yields the FHIR base URL."""
    with _Server(app) as server:
        yield server.base


@dataclass
class Reply:
    """What both transports return: status, headers, body."""

    status_code: int
    headers: Any
    content: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.content)


class HttpClient:
    """Real HTTP over loopback with a keep-alive session."""

    kind = "http"

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()

    def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        url = path if path.startswith("http") else self.base + path
        r = self.session.request(method, url, timeout=30, **kwargs)
        return Reply(r.status_code, r.headers, r.content)


class WsgiClient:
    """Flask's test client behind the same interface."""

    kind = "wsgi"

    def __init__(self, app: Flask) -> None:
        self.client = app.test_client()
        self.base = "http://localhost/fhir"

    def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        if path.startswith("http"):
            path = path.split("://", 1)[1].split("/", 1)[1]
            path = "/" + path
        else:
            path = "/fhir" + path
        if "params" in kwargs:
            kwargs["query_string"] = kwargs.pop("params")
        kwargs.pop("timeout", None)
        r = self.client.open(path, method=method, **kwargs)
        return Reply(r.status_code, r.headers, r.get_data())


class Api:
    def __init__(self, impl: HttpClient | WsgiClient) -> None:
        self.impl = impl
        self.base = impl.base
        self.kind = impl.kind

    def get(self, path: str, **kw: Any) -> Reply:
        return self.impl.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Reply:
        return self.impl.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Reply:
        return self.impl.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.impl.request("DELETE", path, **kw)

    def request(self, method: str, path: str, **kw: Any) -> Reply:
        return self.impl.request(method, path, **kw)


@pytest.fixture(params=["http", "wsgi"])
def api(request: pytest.FixtureRequest, app: Flask) -> Iterator[Api]:
    """The REST API over real HTTP (live server) and through the Flask test client."""
    if request.param == "http":
        with _Server(app) as server:
            yield Api(HttpClient(server.base))
    else:
        yield Api(WsgiClient(app))


@pytest.fixture
def http(live_server: str) -> Api:
    """Real HTTP only (for concurrency and third-party clients)."""
    return Api(HttpClient(live_server))
