"""Alembic environment: runs on the connection kyphofhir hands over (see migrate.py)."""

from __future__ import annotations

from alembic import context

from kyphofhir.store.sql.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via kyphofhir.store.sql.migrate
    raise RuntimeError("run migrations through `kyphofhir db upgrade`")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
