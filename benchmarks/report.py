"""Turning measurements into the terminal table and the JSON results file.

Targets (from the performance issue) are defined for SQLite with one worker process;
other configurations are reported without a verdict rather than with a misleading one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from benchmarks.load import PhaseResult
from benchmarks.profiling import format_summary
from benchmarks.workloads import BUNDLE, READ, SINGLE, Measured

# Minimum resources per second, SQLite, one worker process.
TARGETS: dict[str, float] = {SINGLE: 300.0, BUNDLE: 1000.0, READ: 1000.0}
# CPU share of one core used by unrelated processes above which a phase is flagged.
NOISY_SHARE = 0.25


@dataclass(frozen=True)
class Row:
    metric: str
    value: str
    target: str = ""
    vs_raw: str = ""
    status: str = ""


def labels(bundle_size: int) -> dict[str, str]:
    return {
        SINGLE: "creates/s, REST (1 Observation/request)",
        BUNDLE: f"creates/s, transaction Bundles of {bundle_size}",
        READ: "reads/s (GET Observation/<id>)",
    }


def targets_apply(backend: str, workers: int) -> bool:
    return backend == "sqlite" and workers == 1


def verdict(phase: str, rate: float, errors: int, applies: bool) -> str:
    if errors:
        return "ERRORS"
    if not applies:
        return "-"
    return "PASS" if rate >= TARGETS[phase] else "MISS"


def _rate(value: float) -> str:
    return f"{value:,.0f} /s" if value >= 10 else f"{value:,.1f} /s"


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def ratio(server: PhaseResult, raw: PhaseResult | None) -> float | None:
    if raw is None or not raw.rate:
        return None
    return server.rate / raw.rate


def phase_rows(
    phase: str,
    label: str,
    server: PhaseResult,
    raw: PhaseResult | None,
    applies: bool,
    alone: PhaseResult | None = None,
) -> list[Row]:
    """The headline rate plus latency and CPU sub-rows of one workload."""
    r = ratio(server, raw)
    vs_raw = f"{r:.3f} of raw {_rate(raw.rate)}" if r is not None and raw else ""
    rows = [
        Row(
            label,
            _rate(server.rate),
            f">= {TARGETS[phase]:,.0f} /s" if applies else "",
            vs_raw,
            verdict(phase, server.rate, server.errors, applies),
        )
    ]
    latency = f"{_ms(server.percentile_ms(50))} / {_ms(server.percentile_ms(95))} ms"
    raw_latency = ""
    if raw is not None:
        raw_latency = f"raw {_ms(raw.percentile_ms(50))} / {_ms(raw.percentile_ms(95))} ms"
    rows.append(Row("  latency p50 / p95 (per request)", latency, vs_raw=raw_latency))
    if server.wall_s:
        rows.append(cpu_row(server))
    if len(server.slice_rates) > 1:
        spread = ", ".join(f"{r:,.0f}" for r in server.slice_rates)
        rows.append(Row("  rate of each third of the run", f"{spread} /s"))
    if alone is not None and alone.wall_s:
        rows.append(
            Row(
                "  same from 1 client (no concurrency)",
                _rate(alone.rate),
                vs_raw=f"server CPU {_ms(alone.server_cpu_ms_per_resource)} ms per resource; "
                f"p50 {_ms(alone.percentile_ms(50))} ms",
            )
        )
    if server.errors:
        rows.append(Row("  FAILED requests", str(server.errors), vs_raw=server.error_samples[0]))
    return rows


def cpu_row(server: PhaseResult) -> Row:
    """Who used the CPU during the phase; a busy "rest" means the machine was not quiet."""
    cpu = server.cpu
    shares = (cpu.server, cpu.database, cpu.client, cpu.other)
    value = " / ".join(f"{100 * s / server.wall_s:.0f}%" for s in shares)
    note = f"server CPU {_ms(server.server_cpu_ms_per_resource)} ms per resource"
    if cpu.other / server.wall_s > NOISY_SHARE:
        note += f"; WARNING machine busy, figures pessimistic: {cpu.busiest_other}"
    return Row("  CPU: server / PostgreSQL / client / rest", value, "100% = 1 core", note)


def backend_rows(backend: str, measured: Measured, workers: int, bundle_size: int) -> list[Row]:
    applies = targets_apply(backend, workers)
    rows: list[Row] = []
    for phase, label in labels(bundle_size).items():
        server = measured.phases[phase]
        raw, alone = measured.raw.get(phase), measured.one_client.get(phase)
        rows += phase_rows(phase, label, server, raw, applies, alone)
    rss = measured.peak_rss_mib
    workers_peak = sum(v for k, v in rss.items() if k.startswith("worker"))
    rows.append(
        Row(
            "server peak RSS (VmHWM)",
            f"{rss.get('total', 0):.0f} MiB",
            vs_raw=f"workers {workers_peak:.0f} MiB + master {rss.get('master', 0):.0f} MiB",
        )
    )
    return rows


def format_table(rows: list[Row]) -> str:
    header = Row("metric", "value", "target", "vs raw DB (same docs, same DB) / notes", "status")
    table = [header, *rows]
    widths = [max(len(getattr(r, f)) for r in table) for f in ("metric", "value", "target")]
    lines = []
    for r in table:
        lines.append(
            f"{r.metric:<{widths[0]}}  {r.value:>{widths[1]}}  {r.target:<{widths[2]}}  "
            f"{r.status:<6}  {r.vs_raw}".rstrip()
        )
        if r is header:
            lines.append("-" * max(len(line) for line in lines))
    return "\n".join(lines)


def format_profiles(measured: Measured) -> str:
    blocks = []
    for phase, (path, summary) in measured.profiles.items():
        blocks.append(format_summary(f"profile of {phase} ({path})", summary))
    return "\n\n".join(blocks)


def phase_json(result: PhaseResult, *, server: bool = True) -> dict[str, Any]:
    out = {
        "requests": result.requests,
        "resources": result.resources,
        "errors": result.errors,
        "error_samples": result.error_samples,
        "wall_s": round(result.wall_s, 3),
        "slice_resources_per_s": [round(r, 1) for r in result.slice_rates],
        "resources_per_s": round(result.rate, 1),
        "requests_per_s": round(result.request_rate, 1),
        "latency_ms": {
            q: round(result.percentile_ms(p), 3)
            for q, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))
        },
    }
    if server:
        out["cpu_s"] = {
            "server": round(result.cpu.server, 3),
            "postgres_backends": round(result.cpu.database, 3),
            "client": round(result.cpu.client, 3),
            "rest_of_machine": round(result.cpu.other, 3),
            "busiest_other_process": result.cpu.busiest_other,
        }
        out["server_cpu_ms_per_resource"] = round(result.server_cpu_ms_per_resource, 3)
    return out


def backend_json(backend: str, measured: Measured, workers: int) -> dict[str, Any]:
    applies = targets_apply(backend, workers)
    phases = {}
    for phase, server in measured.phases.items():
        raw = measured.raw.get(phase)
        r = ratio(server, raw)
        phases[phase] = {
            "server": phase_json(server),
            "raw": phase_json(raw, server=False) if raw else None,
            "ratio_to_raw": round(r, 4) if r is not None else None,
            "one_client": phase_json(alone) if (alone := measured.one_client.get(phase)) else None,
            "target_per_s": TARGETS[phase] if applies else None,
            "status": verdict(phase, server.rate, server.errors, applies),
        }
    return {
        "phases": phases,
        "peak_rss_mib": {k: round(v, 1) for k, v in measured.peak_rss_mib.items()},
        "profiles": {
            phase: {"file": str(path), **summary.as_dict()}
            for phase, (path, summary) in measured.profiles.items()
        },
    }
