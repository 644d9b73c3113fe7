"""PostgreSQL plans: the common searches use the index tables' indexes, not sequential scans.

With ``enable_seqscan = off`` PostgreSQL still chooses a sequential scan where no index
fits, so a ``Seq Scan on spidx_*`` in the plan means an index is missing.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from kyphofhir.app import create_app
from kyphofhir.search.params import parse_query
from kyphofhir.store.sql.query import where_clauses
from kyphofhir.store.sql.schema import resource
from samples import patient, vas

pytestmark = pytest.mark.postgres


@pytest.fixture
def backend() -> str:
    return "postgres"


@pytest.mark.parametrize(
    "params",
    [
        [("code", "http://loinc.org|38214-3"), ("subject", "Patient/p-1")],
        [("code", "38214-3")],
        [("date", "ge2024-01-01"), ("date", "lt2024-02-01")],
        [("subject:Patient.identifier", "urn:kyphofhir:test:mrn|m1")],
        [("code-value-quantity", "38214-3$gt50")],
        # UCUM canonical units (migration 0003)
        [("value-quantity", "ge1|http://unitsofmeasure.org|cm")],
        [("value-quantity", "72|http://unitsofmeasure.org|mm")],
        [("code-value-quantity", "38214-3$ge5|http://unitsofmeasure.org|cm")],
    ],
)
def test_common_searches_use_indexes(db_url: str, params) -> None:
    app = create_app({"db": db_url})
    svc = app.extensions["kyphofhir"]
    try:
        client = app.test_client()
        client.put("/fhir/Patient/p-1", json={**patient("m1"), "id": "p-1"})
        for i in range(30):
            client.post(
                "/fhir/Observation", json=vas("Patient/p-1", i, f"2024-01-{i % 28 + 1:02d}")
            )
        query = parse_query(svc.registry, "Observation", params)
        stmt = select(resource.c.rid).where(*where_clauses(query))
        compiled = stmt.compile(svc.store.engine, compile_kwargs={"literal_binds": True})
        with svc.store.engine.connect() as conn:
            conn.execute(text("SET enable_seqscan = off"))
            plan = "\n".join(row[0] for row in conn.execute(text(f"EXPLAIN {compiled}")))
        assert "Seq Scan on spidx_" not in plan, plan
    finally:
        svc.store.dispose()
