"""Sampling profiles of the server worker (py-spy, and perf where installed), summarised.

Both tools attach to the running gunicorn worker from outside, so the profile shows the
deployed process under the benchmark's load without changing its code.

* py-spy gives Python stacks. It samples with ``--gil`` by default: only the thread
  holding the GIL. One worker process runs Python on one core at a time, so GIL-held
  time is what limits its throughput, and these samples say exactly which Python code
  runs. (Without ``--gil``, py-spy's idle detection lets threads sleeping in SQLite's
  busy handler or descheduled inside a system call through, which inflates BEGIN, COMMIT
  and socket writes several-fold on a 2-core machine.) It runs ``--nonblocking`` so that
  it does not stop the worker 100 times a second while perf is watching too.
* perf (Linux ``perf record`` without call graphs) splits the worker's CPU time by
  native library: the Python interpreter, pydantic-core, SQLite's C library, the kernel
  (system calls, thread wake-ups). That is the part a Python profiler cannot see.

py-spy's raw output is the "collapsed stacks" format (one ``frame;frame;... count``
line per stack), which speedscope (https://www.speedscope.app) and flamegraph.pl load.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Stacks that pass through one of these frames are charged to its layer whatever runs
# below it: kyphofhir issues BEGIN [IMMEDIATE] from an engine event through a full
# SQLAlchemy execution, and (without --gil) the waits for SQLite's write lock land here.
STACK_LAYERS: tuple[tuple[str, str], ...] = (
    (
        "_on_begin (kyphofhir/store/sql/engine.py)",
        "BEGIN [IMMEDIATE] from the engine event (+ lock waits without --gil)",
    ),
)
# (substring of a "function (file)" frame, layer). The first match from the leaf upwards
# names the layer a sample is charged to; standard-library frames match nothing and are
# charged to their caller's layer (``copy.deepcopy`` called by the transaction service
# counts as transaction service time, not as "stdlib").
_SQL = "database: SQL statements in the driver"
_VALIDATION = "FHIR validation (fhir.resources/pydantic)"
_EXTRACTION = "search index extraction (kyphofhir.search + fhirpathpy)"
_WEB = "Flask/Werkzeug request handling"
LAYERS: tuple[tuple[str, str], ...] = (
    ("do_commit (sqlalchemy/engine/default.py)", "database: COMMIT"),
    ("do_execute (sqlalchemy/engine/default.py)", _SQL),
    ("do_executemany (sqlalchemy/engine/default.py)", _SQL),
    ("do_execute_no_params (sqlalchemy/engine/default.py)", _SQL),
    ("(psycopg/", _SQL),
    ("(sqlite3/", _SQL),
    ("(sqlalchemy/", "SQLAlchemy Core (statement building, compiling, results)"),
    ("(pydantic", _VALIDATION),
    ("(fhir/resources/", _VALIDATION),
    ("(fhir_core/", _VALIDATION),
    ("(kyphofhir/fhir/models.py)", "kyphofhir JSON-kind/binding walk (fhir/models.py)"),
    ("(fhirpathpy/", _EXTRACTION),
    ("(antlr4/", _EXTRACTION),
    ("(kyphofhir/search/", _EXTRACTION),
    ("(kyphofhir/services/transaction.py)", "kyphofhir transaction service (incl. deepcopy)"),
    ("(kyphofhir/", "kyphofhir other (api, crud, store, datetimes)"),
    ("(werkzeug/", _WEB),
    ("(flask/", _WEB),
    ("(gunicorn/", "gunicorn: HTTP parsing and socket I/O"),
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


def _stop(process: subprocess.Popen[str], output: Path, tool: str) -> Path:
    """SIGINT makes both py-spy and perf write their output and exit."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    if not output.exists():
        raise RuntimeError(f"{tool} wrote no profile: {stderr.strip()[-500:]}")
    return output


class Recorder:
    """``py-spy record`` (and ``perf record`` if present) attached to one process."""

    def __init__(self, pid: int, output: Path, *, rate: int = 200, gil: bool = True) -> None:
        binary = py_spy_path()
        if binary is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.output = output
        command = [binary, "record", "--pid", str(pid), "--format", "raw", "--nolineno"]
        command += ["--rate", str(rate), "--nonblocking", "--output", str(output)]
        command += ["--gil"] if gil else []
        self.py_spy = _start(command)
        self.perf_output: Path | None = None
        self.perf: subprocess.Popen[str] | None = None
        perf = shutil.which("perf")
        if perf is not None:
            self.perf_output = output.with_suffix(".perf.data")
            self.perf = _start(
                [perf, "record", "-F", "499", "-p", str(pid)] + ["-o", str(self.perf_output)]
            )

    def stop(self) -> None:
        _stop(self.py_spy, self.output, "py-spy")
        if self.perf is not None and self.perf_output is not None:
            try:
                _stop(self.perf, self.perf_output, "perf")
            except RuntimeError as exc:  # perf is optional: e.g. no permission to trace
                print(f"  ({exc})", file=sys.stderr)
                self.perf_output = None


def _start(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def native_split(perf_data: Path, top: int = 8) -> list[tuple[str, float]]:
    """(library, % of the worker's CPU samples) from ``perf report --sort dso``."""
    perf = shutil.which("perf")
    if perf is None:
        return []
    report = subprocess.run(
        [perf, "report", "-i", str(perf_data), "--sort", "dso", "--stdio", "--no-children"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    split = []
    for line in report.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].endswith("%") and not line.startswith("#"):
            split.append((_library_name(parts[1]), float(parts[0].rstrip("%"))))
    return split[:top]


def _library_name(dso: str) -> str:
    """``_pydantic_core.cpython-311-x86_64-linux-gnu.so`` → ``_pydantic_core``."""
    if dso.startswith("["):
        return "kernel" if "kernel" in dso else dso
    return dso.split(".cpython-")[0].split(".so")[0]


@dataclass(frozen=True)
class Summary:
    """Where the sampled time went: by layer, by function (inclusive and self)."""

    samples: int
    waiting: int
    layers: list[tuple[str, float]]
    inclusive: list[tuple[str, float]]
    self_time: list[tuple[str, float]]
    gil: bool = True  # samples of the GIL holder only
    native: list[tuple[str, float]] = dataclasses.field(default_factory=list)  # perf

    def as_dict(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "waiting_samples_dropped": self.waiting,
            "gil_holder_only": self.gil,
            "native_split_pct": dict(self.native),
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
    """The layer one sample is charged to (see ``STACK_LAYERS`` and ``LAYERS``)."""
    for needle, layer in STACK_LAYERS:
        if any(needle in frame for frame in frames):
            return layer
    for frame in reversed(frames):
        for needle, layer in LAYERS:
            if needle in frame:
                return layer
    return "other (stdlib / C)"


def summarise_recording(recorder: Recorder, *, gil: bool = True, top: int = 15) -> Summary:
    """Summary of a stopped recorder: py-spy's stacks plus perf's native split."""
    summary = summarise(read_stacks(recorder.output), top)
    native = native_split(recorder.perf_output) if recorder.perf_output else []
    return dataclasses.replace(summary, gil=gil, native=native)


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
    return Summary(
        total, waiting, pct(layers, len(layers)), pct(inclusive, top), pct(self_time, top)
    )


def format_summary(title: str, summary: Summary) -> str:
    """A plain-text block for the terminal report."""
    if summary.gil:
        what = f"{summary.samples} py-spy samples of the thread holding the GIL"
    else:
        what = f"{summary.samples} py-spy samples of running threads"
    lines = [f"{title}: {what} ({summary.waiting} waiting samples left out)"]
    if summary.native:
        lines.append(
            "  worker CPU by native library (perf; the Python share is broken down below):"
        )
        lines += [f"    {value:5.1f}%  {name}" for name, value in summary.native]
    for heading, rows in (
        ("Python samples by layer", summary.layers),
        ("top functions, inclusive", summary.inclusive),
        ("top functions, self", summary.self_time),
    ):
        lines.append(f"  {heading}:")
        lines += [f"    {value:5.1f}%  {name}" for name, value in rows]
    return "\n".join(lines)
