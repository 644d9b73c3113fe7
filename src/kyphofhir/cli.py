"""The ``kyphofhir`` command: serve, db upgrade, config."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from kyphofhir import __version__
from kyphofhir.config import Settings
from kyphofhir.logging import configure_logging


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.load(overrides)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@click.group()
@click.version_option(__version__, prog_name="kyphofhir")
def main() -> None:
    """kyphofhir: FHIR R4 server for kyphoplasty outcome studies."""


@main.command()
@click.option("--host", default=None, help="Interface to bind [KYPHOFHIR_HOST, 127.0.0.1].")
@click.option("--port", type=int, default=None, help="HTTP port [KYPHOFHIR_PORT, 8080].")
@click.option("--db", default=None, help="SQLAlchemy URL [KYPHOFHIR_DB, SQLite in the data dir].")
@click.option(
    "--data-dir", default=None, help="Data folder [KYPHOFHIR_DATA_DIR, ./kyphofhir-data]."
)
@click.option("--base-url", default=None, help="Public FHIR base URL [KYPHOFHIR_BASE_URL].")
@click.option("--workers", type=int, default=None, help="Worker processes [KYPHOFHIR_WORKERS, 1].")
@click.option(
    "--threads", type=int, default=None, help="Threads per worker [KYPHOFHIR_THREADS, 4]."
)
@click.option("--log-level", default=None, help="Log level [KYPHOFHIR_LOG_LEVEL, INFO].")
def serve(**options: Any) -> None:
    """Run the FHIR server with gunicorn (a production WSGI server)."""
    settings = _settings(**options)
    configure_logging(settings.log_level)
    from kyphofhir.store.sql.engine import make_engine
    from kyphofhir.store.sql.migrate import upgrade

    if settings.auto_migrate:
        engine = make_engine(settings.database_url)
        upgrade(engine)
        engine.dispose()
    worker_settings = dataclasses.replace(settings, auto_migrate=False)
    from kyphofhir.wsgi_server import run

    click.echo(
        f"kyphofhir {__version__}: FHIR base http://{settings.host}:{settings.port}/fhir", err=True
    )
    run(worker_settings)


@main.group()
def db() -> None:
    """Database schema management."""


@db.command("upgrade")
@click.option("--db", "db_url", default=None, help="SQLAlchemy URL [KYPHOFHIR_DB].")
@click.option("--data-dir", default=None, help="Data folder [KYPHOFHIR_DATA_DIR].")
def db_upgrade(db_url: str | None, data_dir: str | None) -> None:
    """Apply all pending migrations."""
    from kyphofhir.store.sql.engine import make_engine
    from kyphofhir.store.sql.migrate import current_revision, upgrade

    settings = _settings(db=db_url, data_dir=data_dir)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    click.echo(f"database at revision {current_revision(engine)}")
    engine.dispose()


@main.command("reindex")
@click.option("--type", "types", multiple=True, help="Resource type to reindex (repeatable).")
@click.option("--db", "db_url", default=None, help="SQLAlchemy URL [KYPHOFHIR_DB].")
@click.option("--data-dir", default=None, help="Data folder [KYPHOFHIR_DATA_DIR].")
def reindex_command(types: tuple[str, ...], db_url: str | None, data_dir: str | None) -> None:
    """Rebuild search indexes (run after adding SearchParameters to profiles/)."""
    from kyphofhir.app import build_services
    from kyphofhir.errors import FhirError
    from kyphofhir.services.reindex import reindex

    settings = _settings(db=db_url, data_dir=data_dir)
    svc = build_services(settings)
    try:
        counts = reindex(svc, types)
    except FhirError as exc:
        raise click.UsageError(exc.diagnostics) from exc
    finally:
        svc.store.dispose()
    for rtype, n in counts.items():
        if n or types:
            click.echo(f"{rtype}: {n} reindexed")


@main.command("config")
def show_config() -> None:
    """Print every setting with its environment variable, default and effective value."""
    settings = _settings()
    for name, env, default, doc, _example in Settings.describe():
        click.echo(f"{name:18} {env:28} default={default!r:22} now={getattr(settings, name)!r}")
        click.echo(f"{'':18} {doc}")
