"""The system under test: a scratch database and a real ``kyphofhir serve`` process.

The server runs exactly as deployed (gunicorn master + gthread worker processes), so the
numbers include HTTP parsing, WSGI and process boundaries. Process inspection reads
``/proc`` directly (Linux) so the suite needs no extra dependency such as psutil.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PG_ADMIN_URL = "postgresql://root@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Database:
    """Where one backend's run stores data: the server's URL and the raw DBAPI target."""

    backend: str  # "sqlite" | "postgres"
    server_url: str  # SQLAlchemy URL handed to ``kyphofhir serve --db``
    dbapi_target: str  # sqlite file path or libpq conninfo URL for the raw baseline


@contextmanager
def sqlite_database() -> Iterator[Database]:
    """A fresh SQLite file in a temporary folder, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="kf_bench_"))
    path = folder / "bench.sqlite3"
    try:
        yield Database("sqlite", f"sqlite:///{path}", str(path))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def postgres_database(admin_url: str = DEFAULT_PG_ADMIN_URL) -> Iterator[Database]:
    """A fresh ``kf_bench_<random>`` database, dropped afterwards (even after a failure)."""
    import psycopg

    name = f"kf_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    target = f"{base}/{name}"
    try:
        yield Database("postgres", target.replace("postgresql://", "postgresql+psycopg://"), target)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve_command() -> list[str]:
    """``kyphofhir serve`` from the running interpreter's environment."""
    script = Path(sys.executable).with_name("kyphofhir")
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-m", "kyphofhir", "serve"]


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (gunicorn workers of a master)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except (FileNotFoundError, PermissionError):
        pass
    if found:
        return sorted(set(found))
    # Kernels without CONFIG_PROC_CHILDREN: scan every process's parent pid.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, PermissionError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` value in KiB, e.g. ``VmHWM`` (peak resident set size)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class Server:
    """A running ``kyphofhir serve``: where it listens and which processes it is."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def master(self) -> int:
        return self.process.pid

    def workers(self) -> list[int]:
        return children(self.master)

    def worker(self) -> int:
        """The (first) worker process, the one serving requests with ``--workers 1``."""
        found = self.workers()
        if not found:
            raise RuntimeError("gunicorn has no worker process")
        return found[0]

    def peak_rss_mib(self) -> dict[str, float]:
        """Peak RSS (VmHWM) of the master, each worker and all of them together."""
        peaks = {"master": status_kib(self.master, "VmHWM") / 1024}
        for i, pid in enumerate(self.workers()):
            peaks[f"worker{i}"] = status_kib(pid, "VmHWM") / 1024
        peaks["total"] = sum(peaks.values())
        return peaks

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def _wait_ready(server: Server, deadline_s: float) -> None:
    """Poll GET /fhir/metadata until it answers 200 (no fixed sleeps)."""
    deadline = time.monotonic() + deadline_s
    delay = 0.02
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited during start-up:\n{server.log_tail()}")
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            conn.request("GET", "/fhir/metadata")
            if conn.getresponse().status == 200 and server.workers():
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    raise RuntimeError(f"server did not answer within {deadline_s:.0f}s:\n{server.log_tail()}")


@contextmanager
def running_server(
    db_url: str, *, workers: int, threads: int, log_dir: Path, ready_timeout_s: float = 60
) -> Iterator[Server]:
    """Start ``kyphofhir serve`` on a free loopback port; stop it (and only it) afterwards."""
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    command = [
        *_serve_command(),
        *("--host", "127.0.0.1", "--port", str(port), "--db", db_url),
        *("--workers", str(workers), "--threads", str(threads), "--log-level", "WARNING"),
    ]
    with log_path.open("wb") as log:
        # no DICOM listener: the HTTP benchmarks measure the FHIR server alone
        env = {**os.environ, "KYPHOFHIR_DICOM_PORT": "0"}
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = Server(process, port, log_path)
    try:
        _wait_ready(server, ready_timeout_s)
        yield server
    finally:
        _stop(server)


def _stop(server: Server) -> None:
    """SIGTERM the master (gunicorn stops its workers); SIGKILL what is left after 30 s."""
    workers = server.workers()
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)
    for pid in workers:
        if _is_our_worker(pid, server.port):
            os.kill(pid, signal.SIGKILL)


def _is_our_worker(pid: int, port: int) -> bool:
    """Still alive and still our server's process (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    return b"serve" in cmdline and str(port).encode() in cmdline
