"""Benchmark kyphofhir on SQLite and PostgreSQL in one run: ``python -m benchmarks.run``.

Prints, per backend: creates/s via REST and via transaction Bundles, reads/s, p50/p95
latency, each rate as a ratio to raw inserts/reads of the same JSON into the same
database, and the server's peak RSS; writes everything to ``benchmarks/results/``.
Workloads that miss a target are run once more under py-spy and the profile summary is
printed (``--profile``). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python benchmarks/run.py`` as well as ``-m benchmarks.run``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report  # noqa: E402
from benchmarks.profiling import py_spy_path  # noqa: E402
from benchmarks.server import (  # noqa: E402
    DEFAULT_PG_ADMIN_URL,
    Database,
    postgres_database,
    running_server,
    sqlite_database,
)
from benchmarks.workloads import Measured, Plan, measure, profile_phase  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BACKENDS = ("sqlite", "postgres")
PROFILE_SECONDS = 8


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--backend", choices=(*BACKENDS, "all"), default="all")
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help="resources per workload: N single creates, N resources in Bundles, N reads "
        "(default 3000; 300 with --quick)",
    )
    parser.add_argument("--bundle-size", type=int, default=100)
    parser.add_argument("--patients", type=int, default=None, help="Patients the data refers to")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn worker processes")
    parser.add_argument(
        "--threads", type=int, default=1, help="threads per worker (the service default)"
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive clients")
    parser.add_argument("--quick", action="store_true", help="small smoke run (< 30 s)")
    parser.add_argument(
        "--profile",
        choices=("missed", "all", "none"),
        default="missed",
        help="re-run workloads under py-spy: those missing a target (default), all, none",
    )
    parser.add_argument(
        "--profile-threads",
        choices=("gil", "running"),
        default="gil",
        help="py-spy samples the GIL holder (default, see profiling.py) or all running threads",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("KF_BENCH_PG_URL", DEFAULT_PG_ADMIN_URL),
        help="PostgreSQL database to connect to for CREATE/DROP DATABASE kf_bench_* "
        "[KF_BENCH_PG_URL]",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for JSON results")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 2 when a target is missed"
    )
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    n = args.n or (300 if args.quick else 3000)
    size = args.bundle_size
    return Plan(
        patients=args.patients or (10 if args.quick else 50),
        creates=n,
        bundle_size=size,
        bundles=max(1, round(n / size)),
        reads=n,
        clients=args.clients,
        warmup=20 if args.quick else 50,
    )


def database(backend: str, args: argparse.Namespace) -> AbstractContextManager[Database]:
    if backend == "sqlite":
        return sqlite_database()
    return postgres_database(args.pg_url)


def postgres_problem(url: str) -> str | None:
    """Why PostgreSQL cannot be benchmarked, or None when it can."""
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=5):
            return None
    except Exception as exc:  # any failure means "skip this backend", reported as such
        return f"{type(exc).__name__}: {exc}".strip()


def missed(backend: str, measured: Measured, args: argparse.Namespace) -> list[str]:
    applies = report.targets_apply(backend, args.workers)
    return [
        phase
        for phase, result in measured.phases.items()
        if report.verdict(phase, result.rate, result.errors, applies) == "MISS"
    ]


def run_backend(backend: str, plan: Plan, args: argparse.Namespace, stamp: str) -> Measured:
    """Fresh database, fresh server, all phases, baselines, and the requested profiles."""
    with tempfile.TemporaryDirectory(prefix="kf_bench_logs_") as logs:
        with (
            database(backend, args) as db,
            running_server(
                db.server_url, workers=args.workers, threads=args.threads, log_dir=Path(logs)
            ) as server,
        ):
            measured, work = measure(server, db, plan)
            to_profile = list(measured.phases) if args.profile == "all" else []
            if args.profile == "missed":
                to_profile = missed(backend, measured, args)
            for phase in to_profile:
                if py_spy_path() is None:
                    print(f"  (py-spy not installed: cannot profile {phase})", file=sys.stderr)
                    break
                output = args.results / f"{stamp}-{backend}-{phase}.collapsed.txt"
                # About PROFILE_SECONDS of load: enough samples, bounded run time.
                rate = measured.phases[phase].rate
                resources = max(plan.bundle_size, min(plan.creates, int(rate * PROFILE_SECONDS)))
                print(f"  profiling {phase} ({resources} resources) with py-spy", file=sys.stderr)
                gil = args.profile_threads == "gil"
                _, summary = profile_phase(work, phase, resources, output, gil=gil)
                measured.profiles[phase] = (output, summary)
    return measured


def environment() -> dict[str, Any]:
    """What the figures depend on, so results files can be compared honestly."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "git_commit": commit,
    }


@contextlib.contextmanager
def _announce(title: str) -> Iterator[None]:
    print(f"running {title} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    yield
    print(f"  {title} done in {time.perf_counter() - started:.1f}s", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    args.results.mkdir(parents=True, exist_ok=True)
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    out: dict[str, Any] = {
        "timestamp": stamp,
        "plan": plan.__dict__,
        "server": {"workers": args.workers, "threads": args.threads},
        "environment": environment(),
        "backends": {},
    }
    failed = any_missed = False
    for backend in backends:
        problem = postgres_problem(args.pg_url) if backend == "postgres" else None
        if problem:
            print(f"\n== {backend}: SKIPPED ({problem})")
            out["backends"][backend] = {"skipped": problem}
            failed = failed or args.backend == "postgres"
            continue
        with _announce(backend):
            measured = run_backend(backend, plan, args, stamp)
        print_backend(backend, measured, args, plan)
        out["backends"][backend] = report.backend_json(backend, measured, args.workers)
        failed = failed or any(p.errors for p in measured.phases.values())
        any_missed = any_missed or bool(missed(backend, measured, args))
    path = args.results / f"{stamp}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nresults: {path}")
    if failed:
        return 1
    return 2 if args.strict and any_missed else 0


def print_backend(backend: str, measured: Measured, args: argparse.Namespace, plan: Plan) -> None:
    config = (
        f"{args.workers} worker x {args.threads} threads, {plan.clients} keep-alive clients, "
        f"{plan.creates} creates, {plan.bundles} Bundles, {plan.reads} reads"
    )
    print(f"\n== {backend} ({config})")
    print(
        report.format_table(report.backend_rows(backend, measured, args.workers, plan.bundle_size))
    )
    if measured.profiles:
        print()
        print(report.format_profiles(measured))


if __name__ == "__main__":
    sys.exit(main())
