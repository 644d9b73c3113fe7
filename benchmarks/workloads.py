"""The measured workloads against one running server, plus their raw-database baselines.

Order per backend: seed Patients, warm up (first requests pay for pool connections and
SQLAlchemy's statement cache, which no steady-state client sees), single creates,
transaction Bundles, reads of the Observations just created, peak RSS, then the raw
baselines into the same database while the server sits idle.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from benchmarks import baseline, payloads
from benchmarks.cpu import Parties
from benchmarks.load import Call, PhaseResult, Reply, run_phase
from benchmarks.profiling import Recorder, Summary, summarise_recording
from benchmarks.server import Database, Server

SINGLE, BUNDLE, READ = "single_create", "transaction", "read"


@dataclass(frozen=True)
class Plan:
    """How much work each phase does."""

    patients: int
    creates: int
    bundle_size: int
    bundles: int
    reads: int
    clients: int
    warmup: int
    seed: int = 20240108


@dataclass
class Measured:
    """Server phases, baselines, memory and (optional) profiles of one backend."""

    phases: dict[str, PhaseResult] = field(default_factory=dict)
    raw: dict[str, PhaseResult] = field(default_factory=dict)
    one_client: dict[str, PhaseResult] = field(default_factory=dict)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    profiles: dict[str, tuple[Path, Summary]] = field(default_factory=dict)


def _created_id(reply: Reply | None) -> str | None:
    """``.../Observation/<id>/_history/1`` → ``<id>``."""
    if reply is None or reply.location is None:
        return None
    return reply.location.rstrip("/").split("/")[-3]


def _bundle_ids(reply: Reply | None) -> list[str]:
    if reply is None or reply.body is None or reply.status != 200:
        return []
    entries = orjson.loads(reply.body).get("entry") or []
    locations = (e.get("response", {}).get("location", "") for e in entries)
    return [loc.split("/")[1] for loc in locations if loc.startswith("Observation/")]


class Workloads:
    """Builds request bodies and runs the phases against one server."""

    def __init__(self, server: Server, db: Database, plan: Plan) -> None:
        self.server = server
        self.db = db
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.worker = server.worker()
        database_name = db.dbapi_target.rsplit("/", 1)[-1] if db.backend == "postgres" else None
        self.parties = Parties(frozenset([server.master, *server.workers()]), database_name)
        self.patient_ids: list[str] = []
        self.observation_ids: list[str] = []
        self.clients = plan.clients  # concurrent connections of the next phases
        self._serial = 0

    def _phase(self, name: str, calls: Sequence[Call], keep_bodies: bool = False) -> PhaseResult:
        return run_phase(
            name,
            self.server.port,
            calls,
            clients=self.clients,
            parties=self.parties,
            keep_bodies=keep_bodies,
        )

    def observations(self, count: int) -> list[bytes]:
        """``count`` fresh VAS Observations for random study Patients, as JSON bytes."""
        docs = []
        for _ in range(count):
            self._serial += 1
            subject = self.rng.choice(self.patient_ids)
            docs.append(payloads.encode(payloads.observation(self.rng, subject, self._serial)))
        return docs

    def bundles(self, count: int) -> list[bytes]:
        size = self.plan.bundle_size
        bodies = []
        for _ in range(count):
            docs = [orjson.loads(d) for d in self.observations(size)]
            bodies.append(payloads.encode(payloads.transaction(docs)))
        return bodies

    def seed_patients(self) -> None:
        docs = [payloads.encode(payloads.patient(self.rng, i)) for i in range(self.plan.patients)]
        result = self._phase("seed patients", [Call("POST", "/fhir/Patient", d) for d in docs])
        _require_clean(result)
        self.patient_ids = [i for i in map(_created_id, result.replies) if i]

    def warm_up(self) -> None:
        """A few of each request type, not measured."""
        n = self.plan.warmup
        created = self._phase("warm-up", _create_calls(self.observations(n)))
        _require_clean(created)
        _require_clean(self._phase("warm-up", _bundle_calls(self.bundles(1), self.plan)))
        ids = [i for i in map(_created_id, created.replies) if i]
        _require_clean(self._phase("warm-up", _read_calls(ids, n, self.rng)))

    def single_creates(self, count: int) -> tuple[PhaseResult, list[bytes]]:
        docs = self.observations(count)
        result = self._phase(SINGLE, _create_calls(docs))
        self.observation_ids += [i for i in map(_created_id, result.replies) if i]
        return result, docs

    def transactions(self, count: int) -> tuple[PhaseResult, list[bytes]]:
        bodies = self.bundles(count)
        result = self._phase(BUNDLE, _bundle_calls(bodies, self.plan), keep_bodies=True)
        for reply in result.replies:
            self.observation_ids += _bundle_ids(reply)
        result.replies = []  # the response bodies were only needed for the ids
        docs = [payloads.encode(e["resource"]) for b in bodies for e in orjson.loads(b)["entry"]]
        return result, docs

    def reads(self, count: int) -> PhaseResult:
        return self._phase(READ, _read_calls(self.observation_ids, count, self.rng))

    def run(self, phase: str, resources: int) -> PhaseResult:
        """About ``resources`` more of one workload, with fresh documents."""
        if phase == SINGLE:
            return self.single_creates(resources)[0]
        if phase == BUNDLE:
            return self.transactions(max(1, -(-resources // self.plan.bundle_size)))[0]
        return self.reads(resources)


def _create_calls(docs: Sequence[bytes]) -> list[Call]:
    return [Call("POST", "/fhir/Observation", d) for d in docs]


def _bundle_calls(bodies: Sequence[bytes], plan: Plan) -> list[Call]:
    return [Call("POST", "/fhir", b, resources=plan.bundle_size) for b in bodies]


def _read_calls(ids: Sequence[str], count: int, rng: random.Random) -> list[Call]:
    if not ids:
        raise RuntimeError("nothing to read: no Observation was created")
    return [Call("GET", f"/fhir/Observation/{rng.choice(ids)}") for _ in range(count)]


def _require_clean(result: PhaseResult) -> None:
    """Set-up phases must succeed completely, or every later figure is meaningless."""
    if result.errors:
        raise RuntimeError(f"{result.name} failed: {result.error_samples}")


def measure(server: Server, db: Database, plan: Plan) -> tuple[Measured, Workloads]:
    """All server phases, then peak RSS, then the raw baselines."""
    work = Workloads(server, db, plan)
    work.seed_patients()
    work.warm_up()
    out = Measured()
    out.phases[SINGLE], single_docs = work.single_creates(plan.creates)
    out.phases[BUNDLE], bundle_docs = work.transactions(plan.bundles)
    out.phases[READ] = work.reads(plan.reads)
    if plan.clients > 1:
        out.one_client = one_client(work, max(plan.bundle_size, plan.creates // 3))
    out.peak_rss_mib = server.peak_rss_mib()
    out.raw = raw_baselines(db, single_docs, bundle_docs, plan)
    return out, work


def one_client(work: Workloads, resources: int) -> dict[str, PhaseResult]:
    """Each workload again from a single connection: the cost of one request when the
    worker's threads do not compete for the GIL, SQLite's write lock or the pool."""
    work.clients = 1
    try:
        return {phase: work.run(phase, resources) for phase in (SINGLE, BUNDLE, READ)}
    finally:
        work.clients = work.plan.clients


def raw_baselines(
    db: Database, single_docs: list[bytes], bundle_docs: list[bytes], plan: Plan
) -> dict[str, PhaseResult]:
    """The same documents, same database, plain DBAPI (see ``baseline`` for the rules)."""
    baseline.create_table(db)
    writers = baseline.writers(db, plan.clients)
    single_rows = baseline.rows_for(single_docs)
    bundle_rows = baseline.rows_for(bundle_docs)
    size = plan.bundle_size
    batches = [bundle_rows[i : i + size] for i in range(0, len(bundle_rows), size)]
    run = baseline.run_local
    raw = {
        SINGLE: run(SINGLE, db, single_rows, baseline.insert_one, connections=writers),
        BUNDLE: run(
            BUNDLE,
            db,
            batches,
            baseline.insert_batch,
            connections=writers,
            resources_per_item=size,
        ),
    }
    ids = [row[0] for row in single_rows + bundle_rows]
    rng = random.Random(plan.seed)
    picks = [rng.choice(ids) for _ in range(plan.reads)]
    raw[READ] = run(READ, db, picks, baseline.read_one, connections=plan.clients)
    return raw


def profile_phase(
    work: Workloads, phase: str, resources: int, output: Path, *, gil: bool = True
) -> tuple[PhaseResult, Summary]:
    """Run ``resources`` more of one workload under py-spy attached to the worker."""
    recorder = Recorder(work.worker, output, gil=gil)
    try:
        result = work.run(phase, resources)
    finally:
        recorder.stop()
    return result, summarise_recording(recorder, gil=gil)
