"""search snapshots (stable paging)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 03:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "search_snapshot",
        sa.Column("sid", sa.String(length=32), nullable=False),
        sa.Column("query_key", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("tail", sa.Text(), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("sid", name=op.f("pk_search_snapshot")),
    )
    op.create_index(
        op.f("ix_search_snapshot_expires"), "search_snapshot", ["expires"], unique=False
    )
    op.create_table(
        "search_snapshot_row",
        sa.Column("sid", sa.String(length=32), nullable=False),
        sa.Column("pos", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["sid"],
            ["search_snapshot.sid"],
            name=op.f("fk_search_snapshot_row_sid_search_snapshot"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sid", "pos", name=op.f("pk_search_snapshot_row")),
    )


def downgrade() -> None:
    op.drop_table("search_snapshot_row")
    op.drop_index(op.f("ix_search_snapshot_expires"), table_name="search_snapshot")
    op.drop_table("search_snapshot")
