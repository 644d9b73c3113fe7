"""Sampling profiles of the server worker with py-spy, and a text summary of them.

py-spy attaches to the running gunicorn worker from outside, so the profile shows the
deployed process under the benchmark's load without changing its code. Samples are
collected only for threads that are running (not idle), i.e. where CPU time goes; with
one worker process the GIL makes that the throughput limit. The raw output is the
"collapsed stacks" format (one ``frame;frame;... count`` line per stack), which
speedscope (https://www.speedscope.app) and flamegraph.pl load directly.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# (substring of "function (file)" frame, layer). The first match from the leaf upwards
# names the layer a sample is charged to; standard-library frames match nothing and are
# charged to their caller's layer (``copy.deepcopy`` called by the transaction service
# counts as kyphofhir service code, not as "stdlib").
_DB_CALLS = ("do_execute ", "do_executemany ", "do_execute_no_params ", "do_commit ")
LAYERS: tuple[tuple[str, str], ...] = (
    *((call + "(sqlalchemy/engine/default.py)", "database driver + SQL execution") for call in _DB_CALLS),
    ("(psycopg/", "database driver + SQL execution"),
    ("(sqlite3/", "database driver + SQL execution"),
    ("(sqlalchemy/", "SQLAlchemy Core (build, compile, results)"),
    ("(pydantic", "FHIR model validation (fhir.resources/pydantic)"),
    ("(fhir/resources/", "FHIR model validation (fhir.resources/pydantic)"),
    ("(fhir_core/", "FHIR model validation (fhir.resources/pydantic)"),
    ("(kyphofhir/fhir/models.py)", "kyphofhir JSON-kind/binding walk (models.py)"),
    ("(fhirpathpy/", "FHIRPath evaluation (search index extraction)"),
    ("(antlr4/", "FHIRPath evaluation (search index extraction)"),
    ("(kyphofhir/search/", "kyphofhir search index extraction"),
    ("(kyphofhir/services/transaction.py)", "kyphofhir transaction service"),
    ("(kyphofhir/", "kyphofhir other (api, crud, store)"),
    ("(werkzeug/", "Flask/Werkzeug request handling"),
    ("(flask/", "Flask/Werkzeug request handling"),
    ("(gunicorn/", "gunicorn HTTP I/O"),
    ("(logging/", "logging"),
)
# Frames every request passes through; left out of the inclusive list, which would
# otherwise start with a dozen 100 % entries that say nothing.
_PLUMBING = (
    "(threading.py)",
    "(concurrent/futures/",
    "(gunicorn/",
    "(flask/",
    "(click/",
    "(contextlib.py)",
    "(kyphofhir/cli.py)",
    "(kyphofhir/wsgi_server.py)",
)
# Leaf frames of threads that wait (for a connection, a task, the next event) but that
# py-spy's idle heuristic still reports; they are not work and are left out.
WAITING_LEAVES = frozenset(
    {
        "EpollSelector.select (selectors.py)",
        "_worker (concurrent/futures/thread.py)",
        "Condition.wait (threading.py)",
        "Thread._wait_for_tstate_lock (threading.py)",
    }
)


def py_spy_path() -> str | None:
    """The py-spy binary next to the interpreter, or on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Recorder:
    """``py-spy record`` attached to one process, stopped with SIGINT when the phase ends."""

    def __init__(self, pid: int, output: Path, *, rate: int = 100) -> None:
        binary = py_spy_path()
        if binary is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.output = output
        command = [binary, "record", "--pid", str(pid), "--format", "raw", "--nolineno"]
        command += ["--rate", str(rate), "--output", str(output)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    def stop(self) -> Path:
        """Stop sampling; py-spy writes its output file on SIGINT."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            _, stderr = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
        if not self.output.exists():
            raise RuntimeError(f"py-spy wrote no profile: {stderr.strip()[-500:]}")
        return self.output


@dataclass(frozen=True)
class Summary:
    """Where the sampled time went: by layer, by function (inclusive and self)."""

    samples: int
    waiting: int
    layers: list[tuple[str, float]]
    inclusive: list[tuple[str, float]]
    self_time: list[tuple[str, float]]

    def as_dict(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "waiting_samples_dropped": self.waiting,
            "layers_pct": dict(self.layers),
            "inclusive_pct": dict(self.inclusive),
            "self_pct": dict(self.self_time),
        }


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    """Parse py-spy's collapsed-stack lines into (frames root..leaf, sample count)."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def layer_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for needle, layer in LAYERS:
            if needle in frame:
                return layer
    return "other (stdlib / C)"


def summarise(stacks: Iterable[tuple[list[str], int]], top: int = 15) -> Summary:
    """Percentages of all samples per layer and per function."""
    layers: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total = 0
    waiting = 0
    for frames, count in stacks:
        if frames[-1] in WAITING_LEAVES:
            waiting += count
            continue
        total += count
        layers[layer_of(frames)] += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            if not any(p in frame for p in _PLUMBING):
                inclusive[frame] += count

    def pct(counter: Counter[str], limit: int) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in counter.most_common(limit)]

    if total == 0:
        return Summary(0, waiting, [], [], [])
    return Summary(total, waiting, pct(layers, len(layers)), pct(inclusive, top), pct(self_time, top))


def format_summary(title: str, summary: Summary) -> str:
    """A plain-text block for the terminal report."""
    lines = [
        f"{title}: {summary.samples} busy samples of the worker's threads "
        f"({summary.waiting} waiting samples left out); % of busy samples"
    ]
    for heading, rows in (
        ("by layer", summary.layers),
        ("top functions, inclusive", summary.inclusive),
        ("top functions, self", summary.self_time),
    ):
        lines.append(f"  {heading}:")
        lines += [f"    {value:5.1f}%  {name}" for name, value in rows]
    return "\n".join(lines)
