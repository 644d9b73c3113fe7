"""The synthetic study data of the search benchmark, its loader and its on-disk cache.

Deterministic: patient ``i`` (0-based) and everything about it follows from
``random.Random(SEED + i)`` and ids hashed from ``(kind, numbers)``, so the same
``--patients`` always gives the same resources, whichever process generates them.

Per patient: one Patient (study identifier ``BKP-<i>``, general practitioner), 10
Encounters (the study visits: pre-op, post-op, 2 and 6 weeks, 3, 6, 9, 12, 18 and 24
months after the index date) and 100 Observations, 10 per visit:

* VAS back pain 38214-3 (mm, 0-100; high before the intervention) and ODI 97909-6 (%),
  so each of them is exactly 10 % of all Observations (100,000 at 10,000 patients);
* seven vital signs: heart rate, systolic and diastolic blood pressure, temperature,
  body weight, SpO2, respiratory rate;
* one slot by visit: body height 8302-2, vertebral body height and kyphosis angle (the
  study's own code system), haemoglobin 718-7, creatinine 2160-0; at the 3-month visit of
  every fifth patient calcium 17861-6 instead of creatinine (so 20 % of the patients have
  a calcium value: the ``_has`` search).

Every Observation has ``subject``, ``encounter``, ``performer`` (the patient's
practitioner), ``effectiveDateTime``, ``valueQuantity`` (UCUM), ``category`` and an
identifier. There are ``patients / 100`` Practitioners (at least one), each treating
100 consecutive patients, so ``Observation?performer=Practitioner/<id>`` has exactly
10,000 hits at both sizes (the paging download).

Loading goes through the server's own write path, ``crud._write`` (stamp
``meta.versionId``/``lastUpdated``, ``Extractor.extract``, ``SqlUnit.write``) in units of
work of ``--load-batch`` patients, so the ``resource``, ``resource_version`` and
``spidx_*`` rows are exactly what the server would write for the same documents; only
the per-request JSON validation is skipped (the first documents of each kind are
validated, see :func:`validate_samples`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

JsonObject = dict[str, Any]

# Bump when the generated documents change: the cached databases are then reloaded.
DATASET_VERSION = 1
SEED = 4_2024
OBSERVATIONS_PER_VISIT = 10
VISITS = 10
PATIENTS_PER_PRACTITIONER = 100
CACHE = Path(__file__).resolve().parent / ".cache"
MARKER_TABLE = "kf_bench_search_marker"

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SPINE = "https://kyphofhir.org/fhir/CodeSystem/spine-measure"
STUDY_SUBJECT = "https://kyphofhir.org/fhir/sid/study-subject"
OBS_IDENTIFIER = "https://kyphofhir.org/fhir/sid/observation"
PRACTITIONER_ID = "https://kyphofhir.org/fhir/sid/practitioner"
VISIT_TYPE = "https://kyphofhir.org/fhir/CodeSystem/study-visit"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

VAS = (LOINC, "38214-3")
ODI = (LOINC, "97909-6")
CALCIUM = (LOINC, "17861-6")

# Days after the index date (kyphoplasty or start of conservative treatment).
VISIT_DAYS = (-7, 1, 14, 42, 90, 180, 270, 365, 540, 730)
VISIT_CODES = (
    "pre-op",
    "post-op",
    "2w",
    "6w",
    "3m",
    "6m",
    "9m",
    "12m",
    "18m",
    "24m",
)
VAS_MEAN = (78, 42, 36, 31, 28, 27, 27, 26, 26, 26)
ODI_MEAN = (62, 48, 40, 34, 31, 29, 28, 28, 27, 27)
FIRST_DAY = datetime(2019, 1, 7, tzinfo=UTC)
INDEX_DAYS = 6 * 365  # index dates spread over six years
CET = timezone(timedelta(hours=1))

# (system, code, display, category, unit (UCUM), mean, sd, decimals, low, high)
Measure = tuple[str, str, str, str, str, float, float, int, float, float]
VITALS: tuple[Measure, ...] = (
    (LOINC, "8867-4", "Heart rate", "vital-signs", "/min", 76, 10, 0, 35, 180),
    (LOINC, "8480-6", "Systolic blood pressure", "vital-signs", "mm[Hg]", 135, 15, 0, 80, 230),
    (LOINC, "8462-4", "Diastolic blood pressure", "vital-signs", "mm[Hg]", 80, 10, 0, 40, 130),
    (LOINC, "8310-5", "Body temperature", "vital-signs", "Cel", 36.8, 0.3, 1, 35, 41),
    (LOINC, "29463-7", "Body weight", "vital-signs", "kg", 72, 12, 1, 35, 160),
    (
        LOINC,
        "59408-5",
        "Oxygen saturation by pulse oximetry",
        "vital-signs",
        "%",
        96,
        1.5,
        0,
        80,
        100,
    ),
    (LOINC, "9279-1", "Respiratory rate", "vital-signs", "/min", 16, 2, 0, 8, 40),
)
BY_VISIT: tuple[Measure, ...] = (
    (LOINC, "8302-2", "Body height", "vital-signs", "cm", 165, 9, 0, 130, 200),
    (SPINE, "vertebral-body-height", "Vertebral body height", "imaging", "mm", 22, 4, 1, 5, 35),
    (SPINE, "kyphosis-angle", "Kyphosis angle", "imaging", "deg", 18, 7, 1, 0, 60),
    (LOINC, "718-7", "Hemoglobin", "laboratory", "g/dL", 11, 1.5, 1, 5, 18),
    (LOINC, "2160-0", "Creatinine", "laboratory", "mg/dL", 1.1, 0.3, 2, 0.3, 6),
)
CALCIUM_MEASURE: Measure = (*CALCIUM, "Calcium", "laboratory", "mg/dL", 10.5, 1.2, 1, 6, 16)
_FAMILY = ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker")
_GIVEN = ("Anna", "Berta", "Clara", "Dora", "Emil", "Franz", "Greta", "Hans", "Ida", "Karl")


def make_id(kind: str, *numbers: int) -> str:
    """A deterministic version-4 UUID, like the ids the server assigns."""
    digest = hashlib.blake2b(f"{SEED}:{kind}:{numbers}".encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))


def practitioners(patients: int) -> int:
    return max(1, patients // PATIENTS_PER_PRACTITIONER)


def practitioner_of(patient: int, patients: int) -> int:
    return min(patient // PATIENTS_PER_PRACTITIONER, practitioners(patients) - 1)


def practitioner(index: int) -> JsonObject:
    rng = random.Random(SEED * 7 + index)
    return {
        "resourceType": "Practitioner",
        "identifier": [{"system": PRACTITIONER_ID, "value": f"DR-{index:04d}"}],
        "active": True,
        "name": [{"family": rng.choice(_FAMILY), "given": [rng.choice(_GIVEN)], "prefix": ["Dr."]}],
    }


def _fmt(when: datetime) -> str:
    return when.astimezone(CET).isoformat(timespec="seconds")


def _value(rng: random.Random, m: Measure, mean: float | None = None) -> float | int:
    _, _, _, _, _, mu, sd, decimals, low, high = m
    value = min(high, max(low, rng.gauss(mean if mean is not None else mu, sd)))
    return round(value) if decimals == 0 else round(value, decimals)


def observation(
    rng: random.Random,
    m: Measure,
    pid: str,
    eid: str,
    prid: str,
    when: datetime,
    ident: str,
    mean: float | None = None,
) -> JsonObject:
    system, code, display, category, unit = m[:5]
    return {
        "resourceType": "Observation",
        "identifier": [{"system": OBS_IDENTIFIER, "value": ident}],
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"reference": f"Encounter/{eid}"},
        "effectiveDateTime": _fmt(when),
        "performer": [{"reference": f"Practitioner/{prid}"}],
        "valueQuantity": {
            "value": _value(rng, m, mean),
            "unit": unit,
            "system": UCUM,
            "code": unit,
        },
    }


_VAS_MEASURE: Measure = (
    *VAS,
    "Pain severity Visual analog score",
    "survey",
    "mm",
    0,
    15,
    0,
    0,
    100,
)
_ODI_MEASURE: Measure = (*ODI, "Oswestry Disability Index", "survey", "%", 0, 12, 0, 0, 100)


def patient_resources(i: int, patients: int) -> list[tuple[str, str, JsonObject]]:
    """(type, id, body) of patient ``i``: the Patient, its Encounters and Observations."""
    rng = random.Random(SEED + i)
    pid = make_id("Patient", i)
    prid = make_id("Practitioner", practitioner_of(i, patients))
    out: list[tuple[str, str, JsonObject]] = [
        (
            "Patient",
            pid,
            {
                "resourceType": "Patient",
                "identifier": [{"system": STUDY_SUBJECT, "value": subject_label(i)}],
                "active": True,
                "name": [{"family": rng.choice(_FAMILY), "given": [rng.choice(_GIVEN)]}],
                "gender": rng.choice(("female", "male")),
                "birthDate": f"{rng.randint(1930, 1965)}-{rng.randint(1, 12):02d}-"
                f"{rng.randint(1, 28):02d}",
                "generalPractitioner": [{"reference": f"Practitioner/{prid}"}],
            },
        )
    ]
    index_day = FIRST_DAY + timedelta(days=rng.randint(0, INDEX_DAYS))
    for visit, days in enumerate(VISIT_DAYS):
        eid = make_id("Encounter", i, visit)
        start = index_day + timedelta(days=days, minutes=rng.randint(7 * 60, 16 * 60))
        out.append(
            (
                "Encounter",
                eid,
                {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"system": ACT_CODE, "code": "IMP" if visit == 1 else "AMB"},
                    "type": [{"coding": [{"system": VISIT_TYPE, "code": VISIT_CODES[visit]}]}],
                    "subject": {"reference": f"Patient/{pid}"},
                    "participant": [{"individual": {"reference": f"Practitioner/{prid}"}}],
                    "period": {"start": _fmt(start), "end": _fmt(start + timedelta(minutes=45))},
                },
            )
        )
        slot = BY_VISIT[visit % len(BY_VISIT)]
        if visit == 4 and i % 5 == 0:
            slot = CALCIUM_MEASURE
        measures: list[tuple[Measure, float | None]] = [
            (_VAS_MEASURE, VAS_MEAN[visit]),
            (_ODI_MEASURE, ODI_MEAN[visit]),
            *((m, None) for m in VITALS),
            (slot, None),
        ]
        for k, (m, mean) in enumerate(measures):
            oid = make_id("Observation", i, visit, k)
            when = start + timedelta(minutes=2 * k)
            ident = f"BKP-{i:05d}-{visit}-{k}"
            out.append(("Observation", oid, observation(rng, m, pid, eid, prid, when, ident, mean)))
    return out


def subject_label(i: int) -> str:
    return f"BKP-{i:05d}"


def all_resources(patients: int) -> Iterator[tuple[str, str, JsonObject]]:
    for p in range(practitioners(patients)):
        yield "Practitioner", make_id("Practitioner", p), practitioner(p)
    for i in range(patients):
        yield from patient_resources(i, patients)


def expected_counts(patients: int) -> dict[str, int]:
    return {
        "Practitioner": practitioners(patients),
        "Patient": patients,
        "Encounter": patients * VISITS,
        "Observation": patients * VISITS * OBSERVATIONS_PER_VISIT,
    }


# --------------------------------------------------------------------------- databases


@dataclass(frozen=True)
class Target:
    """Where the cached dataset of one backend and size lives."""

    backend: str  # "sqlite" | "postgres"
    patients: int
    server_url: str  # SQLAlchemy URL (``kyphofhir serve --db``)
    dbapi: str  # sqlite file path or libpq URL
    admin_url: str = ""  # PostgreSQL: where CREATE/DROP DATABASE run

    @property
    def name(self) -> str:
        return f"kf_bench_search_{self.patients}"


def target(backend: str, patients: int, pg_admin_url: str) -> Target:
    if backend == "sqlite":
        path = CACHE / f"search-{patients}.sqlite3"
        return Target(backend, patients, f"sqlite:///{path}", str(path))
    base, _, _ = pg_admin_url.rpartition("/")
    name = f"kf_bench_search_{patients}"
    url = f"{base}/{name}"
    return Target(
        backend,
        patients,
        url.replace("postgresql://", "postgresql+psycopg://"),
        url,
        pg_admin_url,
    )


def connect(t: Target, *, autocommit: bool = True, prepare: bool = False) -> Any:
    """A plain DBAPI connection (no SQLAlchemy), with the server's SQLite pragmas.

    PostgreSQL: without ``prepare`` psycopg never turns a statement into a server-side
    prepared statement (``prepare_threshold=None``), so every execution gets a plan for
    its actual values; with it, psycopg's default (prepared after 5 executions, which is
    what the server's SQLAlchemy connections do).
    """
    if t.backend == "sqlite":
        lite = sqlite3.connect(t.dbapi, isolation_level=None, check_same_thread=False, timeout=30)
        lite.execute("PRAGMA journal_mode=WAL")
        lite.execute("PRAGMA synchronous=NORMAL")
        lite.execute("PRAGMA foreign_keys=ON")
        return lite
    import psycopg

    conn: Any = psycopg.connect(t.dbapi, autocommit=autocommit)
    if not prepare:
        conn.prepare_threshold = None
    return conn


def exists(t: Target) -> bool:
    if t.backend == "sqlite":
        return Path(t.dbapi).exists()
    import psycopg

    with psycopg.connect(t.admin_url, autocommit=True) as admin:
        row = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (t.name,)).fetchone()
    return row is not None


def drop(t: Target) -> None:
    if t.backend == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(t.dbapi + suffix).unlink(missing_ok=True)
        return
    import psycopg

    with psycopg.connect(t.admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{t.name}" WITH (FORCE)')


def create(t: Target) -> None:
    if t.backend == "sqlite":
        Path(t.dbapi).parent.mkdir(parents=True, exist_ok=True)
        return
    import psycopg

    with psycopg.connect(t.admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{t.name}"')


def read_marker(t: Target) -> JsonObject | None:
    if not exists(t):
        return None
    conn = connect(t)
    try:
        row = conn.execute(f"SELECT value FROM {MARKER_TABLE} WHERE key = 'dataset'").fetchone()
    except Exception:  # no marker table: never finished loading
        return None
    finally:
        conn.close()
    return json.loads(row[0]) if row else None


def write_marker(t: Target, marker: JsonObject) -> None:
    conn = connect(t)
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {MARKER_TABLE} (key VARCHAR(50) PRIMARY KEY, value TEXT)"
        )
        conn.execute(f"DELETE FROM {MARKER_TABLE} WHERE key = 'dataset'")
        p = "?" if t.backend == "sqlite" else "%s"
        conn.execute(
            f"INSERT INTO {MARKER_TABLE} (key, value) VALUES ('dataset', {p})",
            (json.dumps(marker),),
        )
    finally:
        conn.close()


def fingerprint() -> JsonObject:
    """What the cached rows depend on: dataset version, schema head, extraction output.

    The extraction hash covers one document of each kind, so a change in ``search/``
    that indexes the benchmark documents differently invalidates the cache as well.
    """
    from kyphofhir.config import Settings
    from kyphofhir.search.extract import Extractor
    from kyphofhir.search.profiles import load_search_parameters
    from kyphofhir.search.registry import SearchRegistry
    from kyphofhir.store.sql.migrate import head_revision

    settings = Settings.load({})
    extractor = Extractor(SearchRegistry.default(load_search_parameters(settings.profiles_path)))
    samples = list(all_resources(1))[:13]  # Practitioner, Patient, Encounter, Observations
    digest = hashlib.sha256()
    for rtype, rid, body in samples:
        rows = extractor.extract({**body, "id": rid, "resourceType": rtype})
        digest.update(orjson.dumps(rows, option=orjson.OPT_SORT_KEYS))
    return {
        "dataset_version": DATASET_VERSION,
        "schema_revision": head_revision(),
        "extraction_sha256": digest.hexdigest()[:16],
    }


def validate_samples() -> None:
    """The first documents of each kind pass the server's R4 validation."""
    from kyphofhir.services.crud import prepare

    seen: set[str] = set()
    for rtype, _, body in all_resources(10):
        if rtype in seen and rtype != "Observation":
            continue
        seen.add(rtype)
        prepare(rtype, body)
        if len(seen) == 4 and rtype == "Observation":
            break


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class LoadStats:
    resources: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.resources / self.seconds if self.seconds else 0.0


def _services(server_url: str) -> Any:
    from kyphofhir.app import build_services
    from kyphofhir.config import Settings

    return build_services(Settings.load({"db": server_url, "log_level": "WARNING"}))


_SERVICES: Any = None


def _load_init(server_url: str) -> None:
    global _SERVICES
    _SERVICES = _services(server_url)


def _write_batch(docs: list[tuple[str, str, JsonObject]]) -> int:
    from kyphofhir.services.crud import _write

    svc = _SERVICES
    with svc.store.unit(write=True) as uow:
        for rtype, rid, body in docs:
            _write(svc, uow, rtype, rid, body, None)
    return len(docs)


def _load_patients(bounds: tuple[int, int, int]) -> int:
    start, stop, patients = bounds
    docs: list[tuple[str, str, JsonObject]] = []
    for i in range(start, stop):
        docs += patient_resources(i, patients)
    return _write_batch(docs)


def load(t: Target, *, batch: int, jobs: int, progress: bool = True) -> LoadStats:
    """Create the schema and write the whole dataset; returns the load rate."""
    drop(t)
    create(t)
    _load_init(t.server_url)  # migrates the new database
    started = time.perf_counter()
    done = _write_batch([r for r in all_resources(t.patients) if r[0] == "Practitioner"])
    chunks = [(s, min(s + batch, t.patients), t.patients) for s in range(0, t.patients, batch)]
    total = sum(expected_counts(t.patients).values())
    last_report = started

    def report(force: bool = False) -> None:
        nonlocal last_report
        now = time.perf_counter()
        if progress and (force or now - last_report > 15):
            last_report = now
            rate = done / (now - started)
            eta = (total - done) / rate if rate else 0
            print(
                f"  loaded {done:,}/{total:,} resources, {rate:,.0f}/s, eta {eta / 60:.1f} min",
                flush=True,
            )

    if jobs <= 1:
        for chunk in chunks:
            done += _load_patients(chunk)
            report()
    else:
        _SERVICES.store.dispose()
        with ProcessPoolExecutor(
            max_workers=jobs, initializer=_load_init, initargs=(t.server_url,)
        ) as pool:
            for n in pool.map(_load_patients, chunks):
                done += n
                report()
    load_s = time.perf_counter() - started
    report(force=True)
    _SERVICES.store.dispose()
    return LoadStats(done, load_s)


def finish_load(t: Target) -> float:
    """What a database reaches by itself after a bulk load; seconds spent.

    PostgreSQL: ``VACUUM (ANALYZE)``, which autovacuum would do on its own after this many
    inserts (visibility map for index-only scans, planner statistics). SQLite: a WAL
    checkpoint only; no ``ANALYZE``, because the server never runs it (see README).
    """
    started = time.perf_counter()
    conn = connect(t)
    try:
        if t.backend == "postgres":
            conn.execute("VACUUM (ANALYZE)")
            conn.execute("CHECKPOINT")
        else:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - started


def counts(t: Target) -> dict[str, int]:
    """Live resources of the dataset's types (the server may add others of its own at
    start-up, e.g. the definitions of the profiles folder)."""
    conn = connect(t)
    try:
        rows = conn.execute(
            "SELECT res_type, count(*) FROM resource WHERE NOT deleted GROUP BY res_type"
        ).fetchall()
    finally:
        conn.close()
    wanted = expected_counts(t.patients)
    return {str(k): int(v) for k, v in rows if k in wanted}


def ensure(
    t: Target, *, reload: bool, batch: int, jobs: int, accept_stale: bool = False
) -> tuple[JsonObject, LoadStats | None]:
    """The cached dataset, loading it first when it is missing, stale or ``reload``.

    ``accept_stale`` keeps a complete dataset of the right size and dataset version even
    when the schema revision or the index extraction changed since it was loaded (the
    server migrates it on start; rows of new columns stay as they were loaded).
    """
    wanted = {**fingerprint(), "patients": t.patients}
    marker = read_marker(t)
    if not reload and marker is not None and all(marker.get(k) == v for k, v in wanted.items()):
        return marker, None
    same_data = ("patients", "dataset_version")
    if (
        accept_stale
        and not reload
        and marker is not None
        and all(marker.get(k) == wanted[k] for k in same_data)
    ):
        stale = {k: (marker.get(k), v) for k, v in wanted.items() if marker.get(k) != v}
        print(f"WARNING using a stale cached dataset (--accept-stale): {stale}", flush=True)
        return {**marker, "stale": stale}, None
    why = "--reload" if reload else ("no cached dataset" if marker is None else "stale cache")
    if marker is not None and not reload:
        stale = {k: (marker.get(k), v) for k, v in wanted.items() if marker.get(k) != v}
        why += f" {stale}"
    print(f"loading {t.backend} dataset of {t.patients:,} patients ({why}) ...", flush=True)
    validate_samples()
    stats = load(t, batch=batch, jobs=jobs)
    finish_s = finish_load(t)
    found = counts(t)
    if found != expected_counts(t.patients):
        raise RuntimeError(f"load incomplete: {found} != {expected_counts(t.patients)}")
    marker = {
        **wanted,
        "loaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "resources": stats.resources,
        "load_s": round(stats.seconds, 1),
        "load_per_s": round(stats.rate, 1),
        "load_jobs": jobs,
        "load_batch_patients": batch,
        "finish_s": round(finish_s, 1),
        "counts": found,
        "host_cpus": os.cpu_count(),
    }
    write_marker(t, marker)
    return marker, stats


# --------------------------------------------------------------------------- sizes

_PG_SIZES = """
SELECT t.relname, pg_relation_size(t.oid), pg_total_relation_size(t.oid)
       - pg_relation_size(t.oid) - pg_indexes_size(t.oid), i.relname, pg_relation_size(i.oid)
FROM pg_class t
JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public'
LEFT JOIN pg_index x ON x.indrelid = t.oid
LEFT JOIN pg_class i ON i.oid = x.indexrelid
WHERE t.relkind = 'r'
ORDER BY t.relname, i.relname
"""


def sizes(t: Target) -> list[JsonObject]:
    """Rows, table bytes (PostgreSQL: heap + TOAST) and bytes per index, per table.

    PostgreSQL: ``pg_relation_size``; SQLite: the ``dbstat`` virtual table (page bytes of
    each b-tree), else nothing.
    """
    conn = connect(t)
    try:
        tables: dict[str, JsonObject] = {}
        if t.backend == "postgres":
            for table, heap, toast, index, size in conn.execute(_PG_SIZES).fetchall():
                entry = tables.setdefault(
                    table, {"table": table, "table_bytes": heap + toast, "indexes": {}}
                )
                if index:
                    entry["indexes"][index] = size
        else:
            try:
                pages = dict(
                    conn.execute(
                        "SELECT name, pgsize FROM dbstat WHERE aggregate = TRUE"
                    ).fetchall()
                )
            except sqlite3.DatabaseError:
                pages = {}
            objects = conn.execute(
                "SELECT type, name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index') "
                "ORDER BY tbl_name, name"
            ).fetchall()
            for kind, name, table in objects:
                entry = tables.setdefault(table, {"table": table, "table_bytes": 0, "indexes": {}})
                if kind == "table":
                    entry["table_bytes"] = pages.get(name, 0)
                else:
                    entry["indexes"][name] = pages.get(name, 0)
        for table, entry in tables.items():
            entry["rows"] = int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
            entry["indexes_bytes"] = sum(entry["indexes"].values())
    finally:
        conn.close()
    return sorted(tables.values(), key=lambda e: -(e["table_bytes"] + e["indexes_bytes"]))
