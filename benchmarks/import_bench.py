"""Benchmark the study table import against a transaction-Bundle upload of the same resources.

``python -m benchmarks.import_bench`` (see ``benchmarks/README.md``). For each backend and
each scale (1 = the demo cohort, about 7,500 resources; 10 = ten demo cohorts of renamed
subjects) it measures, each phase in a fresh child process so that its peak RSS is its own:

1. ``import``: ``kyphofhir.services.study_import.import_table`` of the CSV table into an
   empty database (rows/s, resources/s, peak RSS);
2. ``reimport``: the same file again (nothing changes: the idempotent path);
3. ``bundles``: the resources that import wrote, as transaction Bundles of PUT entries
   (the same ids, ``services.transaction.process`` with JSON parsing, as ``POST /fhir``
   does), into a second empty database. The server-derived ODI Observations are left out
   of the Bundles because the server derives them again from the QuestionnaireResponses,
   exactly as during the import, so both databases end with the same resources.

Both paths run in-process through the services layer with the same validation; HTTP is
left out so that the ratio shows the cost of the import itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python benchmarks/import_bench.py`` as well as ``-m``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.server import (  # noqa: E402
    DEFAULT_PG_ADMIN_URL,
    Database,
    postgres_database,
    sqlite_database,
)

RESULTS = Path(__file__).resolve().parent / "results"
STUDY_TYPES = (
    "ResearchStudy",
    "Patient",
    "ResearchSubject",
    "Condition",
    "Procedure",
    "Encounter",
    "QuestionnaireResponse",
    "Observation",
)


# --------------------------------------------------------------------------- the table


def write_table(path: Path, scale: int) -> int:
    """The demo cohort ``scale`` times (other seeds, subject ids prefixed); rows written."""
    from kyphofhir.study import demo

    n = 0
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(demo.COLUMNS) + "\n")
        for k in range(scale):
            rows = demo.generate(demo.DEFAULT_SEED + k)
            if scale > 1:
                for row in rows:
                    row["subject_id"] = f"R{k:02d}-{row['subject_id']}"
            text = demo.to_csv(rows)
            fh.write(text.split("\n", 1)[1])  # without its header
            n += len(rows)
    return n


# --------------------------------------------------------------------------- child phases


def _services(db_url: str) -> Any:
    from kyphofhir.app import build_services
    from kyphofhir.config import Settings

    return build_services(Settings.load({"db": db_url, "log_level": "WARNING"}))


def _count(svc: Any) -> int:
    from kyphofhir.services.search import search

    return int(
        svc.run(
            False,
            lambda uow: sum(
                search(svc, uow, t, [("_summary", "count")], snapshot=False).total or 0
                for t in STUDY_TYPES
            ),
        )
    )


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(phase: str, db_url: str, path: Path, bundle_size: int) -> dict[str, Any]:
    from kyphofhir.services.study_import import import_table

    svc = _services(db_url)
    before = _count(svc)
    start_rss = _rss_mib()
    out: dict[str, Any] = {"phase": phase}
    t0 = time.perf_counter()
    if phase in ("import", "reimport"):
        with path.open("rb") as fh:
            report = import_table(svc, fh, "csv")
        out["rows"] = report.rows_read
        out["failed"] = report.rows_failed
        out["written"] = sum(report.created.values()) + sum(report.updated.values())
    elif phase == "bundles":
        out["bundles"] = _upload_bundles(svc, path, bundle_size)
    elif phase == "export":
        out["exported"] = _export(svc, path)
    else:
        raise SystemExit(f"unknown phase {phase}")
    out["seconds"] = time.perf_counter() - t0
    out["resources_after"] = _count(svc)
    out["resources_new"] = out["resources_after"] - before
    out["start_rss_mib"] = start_rss
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    svc.store.dispose()
    return out


def _export(svc: Any, path: Path) -> int:
    """The study resources as NDJSON, without the ODI Observations the server derives."""
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for rtype in STUDY_TYPES:
            cursor = None
            while True:
                page = svc.run(False, lambda uow, c=cursor, t=rtype: uow.scan(t, c, 1000))
                for stored in page.items:
                    body = stored.json()
                    if rtype == "Observation" and any(
                        r.get("reference", "").startswith("QuestionnaireResponse/")
                        for r in body.get("derivedFrom", [])
                    ):
                        continue
                    meta = body.pop("meta", {})
                    if meta.get("profile"):
                        body["meta"] = {"profile": meta["profile"]}
                    fh.write(json.dumps(body) + "\n")
                    n += 1
                cursor = page.next_cursor
                if cursor is None:
                    break
    return n


def _upload_bundles(svc: Any, path: Path, size: int) -> int:
    """PUT every resource of the NDJSON file, ``size`` entries per transaction Bundle."""
    import orjson

    from kyphofhir.services.transaction import Prefer, process

    def send(entries: list[dict[str, Any]]) -> None:
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        payload = orjson.dumps(bundle)  # what a client sends, parsed as POST /fhir does
        process(svc, orjson.loads(payload), base="http://bench/fhir", prefer=Prefer("minimal"))

    n = 0
    entries: list[dict[str, Any]] = []
    with path.open("rb") as fh:
        for line in fh:
            res = orjson.loads(line)
            url = f"{res['resourceType']}/{res['id']}"
            entries.append({"resource": res, "request": {"method": "PUT", "url": url}})
            if len(entries) == size:
                send(entries)
                n += 1
                entries = []
    if entries:
        send(entries)
        n += 1
    return n


def run_child(phase: str, db_url: str, path: Path, bundle_size: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.import_bench",
        "--child",
        phase,
        "--db",
        db_url,
        "--file",
        str(path),
        "--bundle-size",
        str(bundle_size),
    ]
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{phase} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- the run


@contextlib.contextmanager
def database(backend: str, pg_url: str) -> Iterator[Database]:
    if backend == "sqlite":
        with sqlite_database() as db:
            yield db
    else:
        with postgres_database(pg_url) as db:
            yield db


def _migrate(url: str) -> None:
    from kyphofhir.store.sql.engine import make_engine
    from kyphofhir.store.sql.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()


def measure(backend: str, scale: int, pg_url: str, bundle_size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kf_import_bench_") as tmp:
        table = Path(tmp) / "table.csv"
        rows = write_table(table, scale)
        dump = Path(tmp) / "resources.ndjson"
        out: dict[str, Any] = {
            "backend": backend,
            "scale": scale,
            "rows": rows,
            "table_mib": table.stat().st_size / 2**20,
        }
        with database(backend, pg_url) as a:
            _migrate(a.server_url)
            out["import"] = run_child("import", a.server_url, table, bundle_size)
            out["reimport"] = run_child("reimport", a.server_url, table, bundle_size)
            out["export"] = run_child("export", a.server_url, dump, bundle_size)
        with database(backend, pg_url) as b:
            _migrate(b.server_url)
            out["bundles"] = run_child("bundles", b.server_url, dump, bundle_size)
        imp, bun = out["import"], out["bundles"]
        out["import_rows_per_s"] = rows / imp["seconds"]
        out["import_resources_per_s"] = imp["resources_new"] / imp["seconds"]
        out["reimport_rows_per_s"] = rows / out["reimport"]["seconds"]
        out["bundle_resources_per_s"] = bun["resources_new"] / bun["seconds"]
        out["ratio_import_to_bundles"] = (
            out["import_resources_per_s"] / out["bundle_resources_per_s"]
        )
        out["same_resources"] = imp["resources_new"] == bun["resources_new"]
        return out


def print_head() -> None:
    head = (
        f"{'backend':9}{'scale':>6}{'rows':>8}{'resources':>10}{'import s':>10}{'rows/s':>8}"
        f"{'res/s':>8}{'peak MiB':>9}{'re-imp rows/s':>14}{'bundle res/s':>13}"
        f"{'peak MiB':>9}{'ratio':>7}"
    )
    print(head)
    print("-" * len(head), flush=True)


def print_row(r: dict[str, Any]) -> None:
    imp, bun = r["import"], r["bundles"]
    print(
        f"{r['backend']:9}{r['scale']:>6}{r['rows']:>8}{imp['resources_new']:>10}"
        f"{imp['seconds']:>10.1f}{r['import_rows_per_s']:>8.0f}"
        f"{r['import_resources_per_s']:>8.0f}{imp['peak_rss_mib']:>9.0f}"
        f"{r['reimport_rows_per_s']:>14.0f}{r['bundle_resources_per_s']:>13.0f}"
        f"{bun['peak_rss_mib']:>9.0f}{r['ratio_import_to_bundles']:>7.2f}"
    )
    if not r["same_resources"] or imp["failed"]:
        print(f"  WARNING: {imp['failed']} rows failed or the two databases differ")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.import_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--backend", choices=("sqlite", "postgres", "all"), default="all")
    parser.add_argument("--scales", default="1,10", help="cohort multiples, e.g. 1,10")
    parser.add_argument("--bundle-size", type=int, default=500)
    parser.add_argument("--pg-url", default=DEFAULT_PG_ADMIN_URL)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.db, args.file, args.bundle_size)))
        return 0
    backends = ("sqlite", "postgres") if args.backend == "all" else (args.backend,)
    scales = [int(s) for s in args.scales.split(",")]
    results = []
    print_head()
    for backend in backends:
        for scale in scales:
            try:
                results.append(measure(backend, scale, args.pg_url, args.bundle_size))
            except Exception as exc:  # noqa: BLE001 - report and go on with the next
                print(f"{backend} x{scale} skipped: {exc}", file=sys.stderr)
                continue
            print_row(results[-1])
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"import-{time.strftime('%Y%m%dT%H%M%S')}.json"
    meta = {"python": platform.python_version(), "machine": platform.machine()}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
