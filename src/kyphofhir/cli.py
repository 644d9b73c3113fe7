"""The ``kyphofhir`` command: serve, db upgrade, config."""

from __future__ import annotations

import dataclasses
import io
import sys
from pathlib import Path
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
@click.option(
    "--demo", is_flag=True, help="Load the demo cohort first if the store has no study yet."
)
def serve(demo: bool, **options: Any) -> None:
    """Run the FHIR server with gunicorn (a production WSGI server)."""
    settings = _settings(**options)
    configure_logging(settings.log_level)
    from kyphofhir.store.sql.engine import make_engine
    from kyphofhir.store.sql.migrate import upgrade

    if settings.auto_migrate:
        engine = make_engine(settings.database_url)
        upgrade(engine)
        engine.dispose()
    if demo:  # before the workers start, so the first request sees it
        _load_demo(settings, None, force=False)
    worker_settings = dataclasses.replace(settings, auto_migrate=False)
    from kyphofhir.wsgi_server import run

    click.echo(
        f"kyphofhir {__version__}: FHIR base http://{settings.host}:{settings.port}/fhir", err=True
    )
    dicom_child = None
    if settings.dicom_port:  # the DICOM listener in a child process (docs/dicom.md)
        from kyphofhir.dicom.process import start_child, stop_child

        dicom_child = start_child(settings)
    try:
        run(worker_settings)
    finally:
        if dicom_child is not None:
            stop_child(dicom_child, settings.dicom_shutdown_timeout)


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


@main.group("demo")
def demo_group() -> None:
    """The synthetic demo cohort (the published shape of the kyphoplasty myeloma study)."""


@demo_group.command("generate")
@click.option("--seed", type=int, default=None, help="Random seed [2009].")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-cohort"),
    show_default=True,
    help="Folder for the table and its README.txt.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "ndjson"]),
    default="csv",
    show_default=True,
    help="Table format (both are read by `kyphofhir import`).",
)
@click.option(
    "--dicom",
    is_flag=True,
    help="Also write a DX radiograph and a TID 1500 SR per subject and timepoint to "
    "OUT/dicom (docs/dicom.md, demo DICOM).",
)
@click.option(
    "--dicom-subjects", type=int, default=None, help="Only the first N subjects' DICOM [all]."
)
def demo_generate(
    seed: int | None, out: Path, fmt: str, dicom: bool, dicom_subjects: int | None
) -> None:
    """Write the demo cohort as a study table (the format `kyphofhir import` reads)."""
    from kyphofhir.study import demo

    seed = demo.DEFAULT_SEED if seed is None else seed
    rows = demo.generate(seed)
    out.mkdir(parents=True, exist_ok=True)
    table = out / f"study-table.{fmt}"
    table.write_text(demo.to_csv(rows) if fmt == "csv" else demo.to_ndjson(rows), "utf-8")
    (out / "README.txt").write_text(demo.readme(seed, table.name, rows), "utf-8")
    click.echo(f"{len(rows)} rows (seed {seed}) written to {table}")
    if dicom:
        _write_demo_dicom(rows, seed, out, fmt, dicom_subjects)


def _write_demo_dicom(
    rows: list[Any], seed: int, out: Path, fmt: str, subjects: int | None
) -> None:
    """DX + SR files per subject × timepoint (#6), and the table without the radiographic
    rows, to import when the measurements are to arrive by DICOM (no duplicates)."""
    from kyphofhir.imaging import demo_dicom
    from kyphofhir.study import demo

    folder = out / "dicom"
    total = demo_dicom.count(rows, subjects)
    written = 0
    with click.progressbar(length=total, label="DICOM studies", file=sys.stderr) as bar:
        for study in demo_dicom.studies(rows, seed, subjects):
            for name, ds in study.files():
                path = folder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(path, enforce_file_format=True)
                written += 1
            bar.update(1)
    clinical = demo_dicom.without_radiographs(rows)
    table = out / f"study-table-no-radiographs.{fmt}"
    table.write_text(demo.to_csv(clinical) if fmt == "csv" else demo.to_ndjson(clinical), "utf-8")
    with (out / "README.txt").open("a", encoding="utf-8") as fh:
        fh.write(demo_dicom.README.format(table=table.name))
    click.echo(f"{written} DICOM files written to {folder}; import {table} to go with them")


@demo_group.command("load")
@click.option("--seed", type=int, default=None, help="Random seed [2009].")
@click.option("--force", is_flag=True, help="Load even if the store holds study resources.")
@click.option("--db", "db_url", default=None, help="SQLAlchemy URL [KYPHOFHIR_DB].")
@click.option("--data-dir", default=None, help="Data folder [KYPHOFHIR_DATA_DIR].")
def demo_load(seed: int | None, force: bool, db_url: str | None, data_dir: str | None) -> None:
    """Load the demo cohort through the study import, only into an empty store."""
    settings = _settings(db=db_url, data_dir=data_dir)
    configure_logging(settings.log_level)
    if not _load_demo(settings, seed, force=force):
        raise SystemExit(1)


def _load_demo(settings: Settings, seed: int | None, *, force: bool) -> bool:
    """Import the demo cohort unless the store already has a ResearchStudy or
    ResearchSubject (a real study must never be mixed with invented patients by
    accident); ``force`` imports anyway. True if it was imported."""
    from kyphofhir.app import build_services
    from kyphofhir.services import study_import
    from kyphofhir.services.search import search
    from kyphofhir.study import demo

    seed = demo.DEFAULT_SEED if seed is None else seed
    svc = build_services(settings)
    try:
        present = svc.run(
            False,
            lambda uow: {
                rtype: search(svc, uow, rtype, [("_summary", "count")], snapshot=False).total or 0
                for rtype in ("ResearchStudy", "ResearchSubject")
            },
        )
        if any(present.values()) and not force:
            found = ", ".join(f"{n} {rtype}" for rtype, n in present.items() if n)
            click.echo(
                f"demo cohort not loaded: the store already holds {found} "
                "(use `kyphofhir demo load --force` to add it anyway)",
                err=True,
            )
            return False
        click.echo(f"loading the synthetic demo cohort (seed {seed}) ...", err=True)
        rows = demo.generate(seed)
        report = study_import.import_table(
            svc, io.BytesIO(demo.to_csv(rows).encode("utf-8")), "csv"
        )
    finally:
        svc.store.dispose()
    click.echo(f"demo cohort (seed {seed}) loaded: {report.summary()}", err=True)
    if not report.ok:  # the generator and the import disagree: a bug, say where
        for issue in report.issues[:10]:
            click.echo(f"  {issue.diagnostics}", err=True)
        raise click.ClickException("the demo cohort did not import cleanly")
    return True


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "ndjson"]),
    default=None,
    help="Table format (json = NDJSON) [from the file name: .csv, else NDJSON].",
)
@click.option(
    "--study", default=None, help="ResearchStudy id, created when missing [kyphoplasty-myeloma]."
)
@click.option("--db", "db_url", default=None, help="SQLAlchemy URL [KYPHOFHIR_DB].")
@click.option("--data-dir", default=None, help="Data folder [KYPHOFHIR_DATA_DIR].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as FHIR Parameters.")
def import_command(
    file: Path,
    fmt: str | None,
    study: str | None,
    db_url: str | None,
    data_dir: str | None,
    as_json: bool,
) -> None:
    """Import a study table (columns: mappings/study-table.json) into the store.

    Bad rows are reported with their line numbers and the others kept; re-importing the
    same file changes nothing. Exit status 1 if any row failed.
    """
    import json
    import sys

    from kyphofhir.app import build_services
    from kyphofhir.errors import FhirError
    from kyphofhir.services.study_import import import_table
    from kyphofhir.study.builders import DEFAULT_STUDY_ID

    settings = _settings(db=db_url, data_dir=data_dir)
    configure_logging(settings.log_level)
    fmt = fmt or ("csv" if file.suffix.lower() == ".csv" else "ndjson")
    svc = build_services(settings)
    try:
        with (
            file.open("rb") as fh,
            click.progressbar(
                length=file.stat().st_size, label=f"importing {file.name}", file=sys.stderr
            ) as bar,
        ):
            report = import_table(
                svc, fh, fmt, study=study or DEFAULT_STUDY_ID, progress=bar.update
            )
    except FhirError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    finally:
        svc.store.dispose()
    if as_json:
        click.echo(json.dumps(report.parameters(), indent=2))
    else:
        for issue in report.issues:
            click.echo(f"{issue.severity}: {issue.diagnostics}")
        click.echo(report.summary())
    if not report.ok:
        raise SystemExit(1)


@main.group("dicom", invoke_without_command=True)
@click.option("--port", type=int, default=None, help="DICOM port [KYPHOFHIR_DICOM_PORT, 11112].")
@click.option("--host", default=None, help="Interface [KYPHOFHIR_DICOM_HOST, the HTTP host].")
@click.option("--ae-title", default=None, help="AE title [KYPHOFHIR_DICOM_AE_TITLE, KYPHOFHIR].")
@click.option(
    "--allowed-aes",
    default=None,
    help="Allowed calling AEs, `AE[@host[:port]]`, comma-separated "
    "[KYPHOFHIR_DICOM_ALLOWED_AES, empty: loopback peers only].",
)
@click.option("--db", default=None, help="SQLAlchemy URL [KYPHOFHIR_DB].")
@click.option("--data-dir", default=None, help="Data folder [KYPHOFHIR_DATA_DIR].")
@click.option("--log-level", default=None, help="Log level [KYPHOFHIR_LOG_LEVEL, INFO].")
@click.option("--parent-pid", type=int, default=None, hidden=True)
@click.pass_context
def dicom_group(ctx: click.Context, /, parent_pid: int | None, **options: Any) -> None:
    """Run the DICOM listener alone (C-ECHO, C-STORE, Storage Commitment; docs/dicom.md)."""
    if ctx.invoked_subcommand is not None:
        return
    names = {"port": "dicom_port", "host": "dicom_host", "ae_title": "dicom_ae_title"}
    names["allowed_aes"] = "dicom_allowed_aes"
    settings = _settings(**{names.get(k, k): v for k, v in options.items()})
    configure_logging(settings.log_level)
    if not settings.dicom_port:
        raise click.UsageError("the DICOM port is 0 (disabled); give --port")
    from kyphofhir.app import build_services
    from kyphofhir.dicom.listener import Listener

    # one pooled connection per association that may be storing at the same time
    svc = build_services(dataclasses.replace(settings, threads=settings.dicom_max_associations))
    try:
        try:
            listener = Listener(settings, svc)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        try:
            listener.serve(parent_pid)
        except OSError as exc:  # the port is taken, or not ours to bind
            raise click.ClickException(f"DICOM listener: {exc}") from exc
    finally:
        svc.store.dispose()


@dicom_group.command("reconcile")
@click.option("--from", "source", required=True, help="Patient created from DICOM: Patient/<id>.")
@click.option("--into", "target", required=True, help="The right Patient: Patient/<id>.")
@click.option("--db", "db_url", default=None, help="SQLAlchemy URL [KYPHOFHIR_DB].")
@click.option("--data-dir", default=None, help="Data folder [KYPHOFHIR_DATA_DIR].")
def dicom_reconcile(source: str, target: str, db_url: str | None, data_dir: str | None) -> None:
    """Merge a Patient created from DICOM into the right one (docs/dicom.md, #6)."""
    from kyphofhir.app import build_services
    from kyphofhir.errors import FhirError
    from kyphofhir.services.imaging import reconcile

    source_id, target_id = (p.strip().removeprefix("Patient/") for p in (source, target))
    svc = build_services(_settings(db=db_url, data_dir=data_dir))
    try:
        result = reconcile(svc, source_id, target_id)
    except FhirError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    finally:
        svc.store.dispose()
    studies = "study" if result.imaging_studies == 1 else "studies"
    click.echo(
        f"Patient/{source_id} merged into Patient/{target_id}: {result.imaging_studies} "
        f"imaging {studies} and {result.observations} observations moved"
    )


@main.command("config")
def show_config() -> None:
    """Print every setting with its environment variable, default and effective value."""
    settings = _settings()
    for name, env, default, doc, _example in Settings.describe():
        click.echo(f"{name:18} {env:28} default={default!r:22} now={getattr(settings, name)!r}")
        click.echo(f"{'':18} {doc}")
