"""In-process cost breakdown: what each layer below the HTTP server costs per resource.

``python -m benchmarks.breakdown [--backend sqlite|postgres] [--pyinstrument DIR]``

``run.py`` measures the deployed server; this runs the layers under it one at a time,
single-threaded, in this process: FHIR validation, search index extraction, the store's
write and read (SQLAlchemy Core), the same rows written with the plain DBAPI driver, and
the whole Flask app called as a WSGI function without gunicorn. Subtracting neighbours
tells what a layer costs: WSGI app vs. served figure = HTTP server and threads;
``SqlUnit.write`` vs. raw DBAPI of the same rows = SQLAlchemy overhead; raw DBAPI of the
same rows vs. ``run.py``'s one-table baseline = what the schema's index rows cost.
With ``--pyinstrument DIR`` the three WSGI workloads are also profiled (HTML per workload).

Unlike ``run.py`` this imports kyphofhir internals (``create_app``, the store, the
extractor, the schema), so it has to follow changes to them.
"""

from __future__ import annotations

import argparse
import copy
import io
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402

from benchmarks import payloads  # noqa: E402
from benchmarks.baseline import connect  # noqa: E402
from benchmarks.server import (  # noqa: E402
    DEFAULT_PG_ADMIN_URL,
    Database,
    postgres_database,
    sqlite_database,
)

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Cost:
    layer: str
    cpu_us: float  # CPU microseconds per resource
    wall_us: float


@contextmanager
def timed(layer: str, resources: int, out: list[Cost]) -> Iterator[None]:
    """Append the CPU and wall time per resource of the block to ``out``."""
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    out.append(Cost(layer, 1e6 * cpu / resources, 1e6 * wall / resources))


class Wsgi:
    """Calls the Flask app as a plain WSGI function: no HTTP server, no test client."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, method: str, path: str, body: bytes = b"") -> tuple[str, dict[str, str]]:
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8080",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1:8080",
            "HTTP_ACCEPT": "application/fhir+json",
            "CONTENT_TYPE": "application/fhir+json",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
            answer.update(status=status, headers=dict(headers))

        b"".join(self.app(environ, start_response))
        if answer["status"][:3] not in ("200", "201"):
            raise RuntimeError(f"{method} {path}: {answer['status']}")
        return answer["status"], answer["headers"]


def observations(rng: random.Random, patient: str, count: int) -> list[JsonObject]:
    return [payloads.observation(rng, patient, i) for i in range(count)]


def stored_rows(svc: Any, docs: list[JsonObject]) -> list[tuple[Any, dict[str, list[Any]]]]:
    """(StoredResource, index rows) for each document, as ``crud._write`` would build."""
    from kyphofhir.fhir.datetimes import now_instant
    from kyphofhir.store.base import StoredResource

    out = []
    for doc in docs:
        content = {**doc, "id": str(uuid.uuid4()), "meta": {"versionId": "1"}}
        text = orjson.dumps(content).decode()
        stored = StoredResource("Observation", content["id"], 1, now_instant(), False, text, "POST")
        out.append((stored, svc.extractor.extract(content)))
    return out


class RawWriter:
    """The store's rows written with the DBAPI driver directly (no SQLAlchemy)."""

    def __init__(self, db: Database) -> None:
        from kyphofhir.store.sql.schema import INDEX_TABLES

        self.conn = connect(db)
        self.p = "?" if db.backend == "sqlite" else "%s"
        self.tables = {kind: table.name for kind, table in INDEX_TABLES.items()}

    def insert(self, table: str, columns: list[str], values: list[tuple[Any, ...]]) -> Any:
        marks = ", ".join([self.p] * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        if len(values) == 1:
            return self.conn.execute(sql + " RETURNING rid" * (table == "resource"), values[0])
        self.conn.cursor().executemany(sql, values)
        return None

    def write(self, stored: Any, index: dict[str, list[Any]]) -> None:
        from kyphofhir.fhir.datetimes import instant_to_us

        when = instant_to_us(stored.last_updated)
        head = ["res_type", "res_id", "version_id", "last_updated", "deleted", "content"]
        values = (stored.type, stored.id, 1, when, False, stored.text)
        rid = self.insert("resource", head, [values]).fetchone()[0]
        self.insert("resource_version", ["rid", *head, "method"], [(rid, *values, "POST")])
        for kind, rows in index.items():
            columns = list(rows[0])
            data = [(rid, stored.type, *(row[c] for c in columns)) for row in rows]
            self.insert(self.tables[kind], ["rid", "res_type", *columns], data)

    def transaction(self, items: list[tuple[Any, dict[str, list[Any]]]]) -> None:
        self.conn.execute("BEGIN IMMEDIATE" if self.p == "?" else "BEGIN")
        for stored, index in items:
            self.write(stored, index)
        self.conn.execute("COMMIT")


def layer_costs(db: Database, n: int, profile_dir: Path | None) -> list[Cost]:
    """Every layer's cost per resource on ``db`` (see the module docstring)."""
    from kyphofhir.app import create_app
    from kyphofhir.fhir.models import validate_resource

    app = create_app(test_config={"db": db.server_url, "log_level": "WARNING"})
    svc = app.extensions["kyphofhir"]
    wsgi = Wsgi(app)
    rng = random.Random(20240108)
    _, headers = wsgi("POST", "/fhir/Patient", payloads.encode(payloads.patient(rng, 0)))
    patient = headers["Location"].split("/")[-3]
    docs = observations(rng, patient, n)
    costs: list[Cost] = []
    with timed("validate_resource (fhir.resources + kind walk)", n, costs):
        for doc in docs:
            validate_resource(doc)
    with timed("Extractor.extract (search index rows)", n, costs):
        for doc in docs:
            svc.extractor.extract(doc)
    with timed("copy.deepcopy of the resource (transaction does 3)", n, costs):
        for doc in docs:
            copy.deepcopy(doc)
    costs += store_costs(db, svc, rng, patient, n)
    costs += wsgi_costs(wsgi, rng, patient, n, profile_dir)
    return costs


def store_costs(db: Database, svc: Any, rng: random.Random, patient: str, n: int) -> list[Cost]:
    """``SqlUnit.write``/``get`` against the raw driver writing/reading the same rows."""
    costs: list[Cost] = []
    batches = [stored_rows(svc, observations(rng, patient, n)) for _ in range(4)]

    def store_write(items: list[tuple[Any, Any]], per: int) -> None:
        for i in range(0, len(items), per):
            with svc.store.unit(write=True) as uow:
                for stored, index in items[i : i + per]:
                    uow.write(stored, copy.deepcopy(index), previous_version=None)

    raw = RawWriter(db)
    for per, (ours, theirs) in ((1, batches[:2]), (100, batches[2:])):
        with timed(f"SqlUnit.write, {per} per transaction (SQLAlchemy)", n, costs):
            store_write(ours, per)
        with timed(f"  raw DBAPI writing the same rows, {per} per transaction", n, costs):
            for i in range(0, len(theirs), per):
                raw.transaction(theirs[i : i + per])
    ids = [stored.id for stored, _ in batches[0]]
    with timed("SqlUnit.get in its own unit of work (SQLAlchemy)", n, costs):
        for rid in ids:
            with svc.store.unit(write=False) as uow:
                uow.get("Observation", rid)
    select = f"SELECT content FROM resource WHERE res_type = {raw.p} AND res_id = {raw.p}"
    with timed("  raw DBAPI select of the same row", n, costs):
        for rid in ids:
            raw.conn.execute(select, ("Observation", rid)).fetchone()
    raw.conn.close()
    return costs


def wsgi_costs(
    wsgi: Wsgi, rng: random.Random, patient: str, n: int, profile_dir: Path | None
) -> list[Cost]:
    """The whole Flask app per interaction, optionally under pyinstrument."""
    creates = [payloads.encode(doc) for doc in observations(rng, patient, n)]
    bundles = [
        payloads.encode(payloads.transaction(observations(rng, patient, 100)))
        for _ in range(max(1, n // 100))
    ]
    locations: list[str] = []

    def create_all() -> None:
        locations.extend(wsgi("POST", "/fhir/Observation", b)[1]["Location"] for b in creates)

    def post_bundles() -> None:
        for body in bundles:
            wsgi("POST", "/fhir", body)

    def read_all() -> None:
        for location in locations:
            wsgi("GET", f"/fhir/Observation/{location.split('/')[-3]}")

    work: list[tuple[str, int, Callable[[], None]]] = [
        ("app via WSGI: POST Observation", len(creates), create_all),
        ("app via WSGI: transaction Bundle, per resource", 100 * len(bundles), post_bundles),
        ("app via WSGI: GET Observation/<id>", len(creates), read_all),
    ]
    costs: list[Cost] = []
    for label, resources, run in work:
        with _maybe_profiled(profile_dir, label), timed(label, resources, costs):
            run()
    return costs


def _maybe_profiled(profile_dir: Path | None, label: str) -> AbstractContextManager[None]:
    if profile_dir is None:
        return _nothing()
    return _pyinstrument(profile_dir / (label.split(": ")[1].split()[0].lower() + ".html"))


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def _pyinstrument(path: Path) -> Iterator[None]:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(profiler.output_html())
        print(f"pyinstrument profile: {path}", file=sys.stderr)


def format_costs(costs: list[Cost]) -> str:
    width = max(len(c.layer) for c in costs)
    lines = [f"{'layer (single thread, in process)':<{width}}  CPU us/res  wall us/res  max/s"]
    for c in costs:
        rate = 1e6 / c.cpu_us if c.cpu_us else float("inf")
        lines.append(f"{c.layer:<{width}}  {c.cpu_us:10.0f}  {c.wall_us:11.0f}  {rate:5,.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.breakdown", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--n", type=int, default=1000, help="resources per measurement")
    parser.add_argument("--pg-url", default=DEFAULT_PG_ADMIN_URL)
    parser.add_argument("--pyinstrument", type=Path, default=None, metavar="DIR")
    args = parser.parse_args(argv)
    database = sqlite_database() if args.backend == "sqlite" else postgres_database(args.pg_url)
    with database as db:
        costs = layer_costs(db, max(100, args.n), args.pyinstrument)
    print(f"{args.backend}: CPU and wall time per resource, {args.n} resources each")
    print(format_costs(costs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
