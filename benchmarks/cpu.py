"""Who used the CPU during a phase: the server, PostgreSQL, the client, everyone else.

On a small machine the benchmark client and the database share cores with the server,
and other jobs (a test run in another terminal) silently lower every figure. Snapshots
of every process's CPU time (``/proc/<pid>/stat``) before and after a phase make both
visible: throughput can be read as "CPU per resource", and a busy "rest" is flagged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")

Snapshot = dict[int, tuple[str, float]]  # pid -> (title, CPU seconds so far)


def snapshot() -> Snapshot:
    """CPU seconds used so far by every process, with a title to report it by."""
    snap: Snapshot = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:  # the process ended while we looked
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        snap[int(proc.name)] = (
            title.strip() or comm,
            (int(fields[11]) + int(fields[12])) / _CLK_TCK,
        )
    return snap


@dataclass(frozen=True)
class Parties:
    """Which processes are which: the server's, and the database name PostgreSQL
    backends carry in their title (``postgres: <cluster>: <user> <database> ...``)."""

    server_pids: frozenset[int]
    database_name: str | None = None

    def of(self, pid: int, title: str) -> str:
        if pid in self.server_pids:
            return "server"
        if pid == os.getpid():
            return "client"
        if self.database_name and title.startswith("postgres: "):
            if self.database_name in title.split():
                return "database"
        return "other"


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds per party during one phase, and the busiest unrelated process."""

    server: float = 0.0
    database: float = 0.0
    client: float = 0.0
    other: float = 0.0
    busiest_other: str = ""


def account(before: Snapshot, after: Snapshot, parties: Parties) -> CpuUse:
    """Split the CPU used between two snapshots among the parties."""
    totals = {"server": 0.0, "database": 0.0, "client": 0.0, "other": 0.0}
    busiest = ("", 0.0)
    for pid, (title, cpu) in after.items():
        used = cpu - before.get(pid, (title, 0.0))[1]
        party = parties.of(pid, title)
        totals[party] += used
        if party == "other" and used > busiest[1]:
            busiest = (title[:60], used)
    label = f"{busiest[0]} ({busiest[1]:.1f} s)" if busiest[1] else ""
    return CpuUse(busiest_other=label, **totals)
