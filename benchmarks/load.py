"""A small closed-loop HTTP load generator over keep-alive connections.

``http.client`` rather than ``requests``: on a 2-core machine the client shares the CPU
with the server, and ``requests`` costs several times more client CPU per call, which
would cap the measured rate below what the server can do. Each client thread owns one
persistent connection and sends its next request as soon as the previous answer is read,
so the server always sees exactly ``clients`` requests in flight.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.cpu import CpuUse, Parties, account, snapshot

HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
OK_STATUSES = frozenset({200, 201})
_MAX_ERROR_SAMPLES = 5


@dataclass(frozen=True)
class Call:
    """One HTTP request; ``resources`` is how many resources it creates or reads."""

    method: str
    path: str
    body: bytes | None = None
    resources: int = 1


@dataclass(frozen=True)
class Reply:
    status: int
    location: str | None
    body: bytes | None  # kept only when the phase asks for bodies


@dataclass
class PhaseResult:
    """What one measured phase did, and how fast."""

    name: str
    requests: int = 0
    resources: int = 0
    errors: int = 0
    wall_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    cpu: CpuUse = field(default_factory=CpuUse)
    slice_rates: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    replies: list[Reply | None] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Resources per second of wall-clock time (successful requests only)."""
        return self.resources / self.wall_s if self.wall_s else 0.0

    @property
    def server_cpu_ms_per_resource(self) -> float:
        return 1000 * self.cpu.server / self.resources if self.resources else float("nan")

    @property
    def request_rate(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0

    def percentile_ms(self, q: float) -> float:
        return percentile(sorted(self.latencies_ms), q)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an already sorted sequence."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


class _Client:
    """One keep-alive connection; reconnects once if the server closed it."""

    def __init__(self, port: int, timeout_s: float) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)

    def send(self, call: Call) -> tuple[int, str | None, bytes]:
        for attempt in (1, 2):
            try:
                self.conn.request(call.method, call.path, body=call.body, headers=HEADERS)
                response = self.conn.getresponse()
                return response.status, response.getheader("Location"), response.read()
            except (http.client.RemoteDisconnected, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=self.timeout_s
                )
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def run_phase(
    name: str,
    port: int,
    calls: Sequence[Call],
    *,
    clients: int,
    parties: Parties,
    keep_bodies: bool = False,
    slices: int = 3,
    timeout_s: float = 120.0,
) -> PhaseResult:
    """Send every call with ``clients`` concurrent keep-alive connections; time each one.

    The calls go out in ``slices`` consecutive slices timed separately: their spread
    shows how noisy the machine was, which one overall figure would hide.
    """
    runner = _Runner(PhaseResult(name, replies=[None] * len(calls)), calls, keep_bodies)
    connections = [_Client(port, timeout_s) for _ in range(clients)]
    before = snapshot()
    try:
        for bounds in _slices(len(calls), slices):
            runner.run_slice(bounds, connections)
    finally:
        for conn in connections:
            conn.close()
    runner.result.cpu = account(before, snapshot(), parties)
    return runner.result


def _slices(total: int, slices: int) -> list[range]:
    edges = [round(i * total / slices) for i in range(slices + 1)]
    return [range(a, b) for a, b in itertools.pairwise(edges) if b > a]


class _Runner:
    """Shared state of one phase's client threads."""

    def __init__(self, result: PhaseResult, calls: Sequence[Call], keep_bodies: bool) -> None:
        self.result = result
        self.calls = calls
        self.keep_bodies = keep_bodies
        self.lock = threading.Lock()

    def run_slice(self, bounds: range, connections: list[_Client]) -> None:
        indexes = iter(bounds)  # next() on a shared iterator is atomic under the GIL
        done_before = self.result.resources

        def loop(client: _Client) -> None:
            latencies: list[float] = []
            for i in indexes:
                self.one(client, i, latencies)
            with self.lock:
                self.result.latencies_ms += latencies

        threads = [threading.Thread(target=loop, args=(c,)) for c in connections]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        self.result.wall_s += wall
        self.result.slice_rates.append((self.result.resources - done_before) / wall)

    def one(self, client: _Client, i: int, latencies: list[float]) -> None:
        call = self.calls[i]
        started = time.perf_counter()
        try:
            status, location, body = client.send(call)
        except (OSError, http.client.HTTPException) as exc:
            self.error(f"{call.method} {call.path}: {exc!r}")
            return
        latencies.append((time.perf_counter() - started) * 1000)
        self.result.replies[i] = Reply(status, location, body if self.keep_bodies else None)
        if status in OK_STATUSES:
            with self.lock:
                self.result.requests += 1
                self.result.resources += call.resources
        else:
            self.error(f"{call.method} {call.path} -> {status}: {body[:300]!r}")

    def error(self, message: str) -> None:
        with self.lock:
            self.result.errors += 1
            if len(self.result.error_samples) < _MAX_ERROR_SAMPLES:
                self.result.error_samples.append(message)
