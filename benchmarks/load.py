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
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.server import cpu_seconds

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
    worker_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    error_samples: list[str] = field(default_factory=list)
    replies: list[Reply | None] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Resources per second of wall-clock time (successful requests only)."""
        return self.resources / self.wall_s if self.wall_s else 0.0

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
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
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
    worker_pid: int,
    keep_bodies: bool = False,
    timeout_s: float = 120.0,
) -> PhaseResult:
    """Send every call with ``clients`` concurrent connections; time each one."""
    result = PhaseResult(name, replies=[None] * len(calls))
    lock = threading.Lock()
    next_index = itertools.count()

    def client_loop() -> None:
        client = _Client(port, timeout_s)
        local_latencies: list[float] = []
        try:
            while (i := next(next_index)) < len(calls):
                _one(client, calls[i], i, local_latencies)
        finally:
            client.close()
            with lock:
                result.latencies_ms += local_latencies

    def _one(client: _Client, call: Call, i: int, latencies: list[float]) -> None:
        started = time.perf_counter()
        try:
            status, location, body = client.send(call)
        except (OSError, http.client.HTTPException) as exc:
            _record_error(result, lock, f"{call.method} {call.path}: {exc!r}")
            return
        latencies.append((time.perf_counter() - started) * 1000)
        result.replies[i] = Reply(status, location, body if keep_bodies else None)
        if status in OK_STATUSES:
            with lock:
                result.requests += 1
                result.resources += call.resources
        else:
            _record_error(result, lock, f"{call.method} {call.path} -> {status}: {body[:300]!r}")

    _timed(result, worker_pid, [threading.Thread(target=client_loop) for _ in range(clients)])
    return result


def _record_error(result: PhaseResult, lock: threading.Lock, message: str) -> None:
    with lock:
        result.errors += 1
        if len(result.error_samples) < _MAX_ERROR_SAMPLES:
            result.error_samples.append(message)


def _timed(result: PhaseResult, worker_pid: int, threads: list[threading.Thread]) -> None:
    """Run the client threads; record wall time, server worker CPU and client CPU."""
    worker_before = cpu_seconds(worker_pid)
    client_before = _own_cpu()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.wall_s = time.perf_counter() - started
    result.client_cpu_s = _own_cpu() - client_before
    result.worker_cpu_s = cpu_seconds(worker_pid) - worker_before


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system
