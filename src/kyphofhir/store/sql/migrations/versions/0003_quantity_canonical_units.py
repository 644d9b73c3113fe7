"""quantity canonical units (UCUM)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 02:30:00.000000

The new columns stay NULL for rows indexed before this revision; ``kyphofhir reindex``
fills them. Until then those rows are matched by their unit code as before (the search
falls back to the exact code where ``canon_code`` is NULL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("spidx_quantity", schema=None) as batch_op:
        batch_op.add_column(sa.Column("canon_code", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("canon_value", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("canon_lo", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("canon_hi", sa.Float(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_spidx_quantity_res_type_param_canon_code_canon_value"),
            ["res_type", "param", "canon_code", "canon_value"],
            unique=False,
        )

    with op.batch_alter_table("spidx_composite", schema=None) as batch_op:
        batch_op.add_column(sa.Column("canon_code2", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("canon_value2", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("canon_lo2", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("canon_hi2", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("spidx_composite", schema=None) as batch_op:
        batch_op.drop_column("canon_hi2")
        batch_op.drop_column("canon_lo2")
        batch_op.drop_column("canon_value2")
        batch_op.drop_column("canon_code2")

    with op.batch_alter_table("spidx_quantity", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_spidx_quantity_res_type_param_canon_code_canon_value"))
        batch_op.drop_column("canon_hi")
        batch_op.drop_column("canon_lo")
        batch_op.drop_column("canon_value")
        batch_op.drop_column("canon_code")
