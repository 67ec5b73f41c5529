"""The tables of the first release (tasks, kind_stats), created, or adopted where they exist.

That release made them with ``SQLModel.metadata.create_all`` in PostgreSQL's ``public`` schema; they
move to the service's own schema with their rows and indexes.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

LEGACY_TABLES = ("tasks", "kind_stats")


def upgrade(schema: str | None = None) -> None:
    bind = op.get_bind()
    if schema is not None:
        found = sa.inspect(bind)
        for table in LEGACY_TABLES:
            if found.has_table(table, schema="public") and not found.has_table(table, schema=schema):
                op.execute(sa.text(f'ALTER TABLE public."{table}" SET SCHEMA "{schema}"'))
    found = sa.inspect(bind)  # afresh: an inspector caches what it has seen
    if not found.has_table("tasks", schema=schema):
        _create_tasks(schema)
    if not found.has_table("kind_stats", schema=schema):
        op.create_table(
            "kind_stats",
            sa.Column("kind", sa.String(), primary_key=True),
            sa.Column("peaks_mb", sa.JSON(), nullable=False),
            schema=schema,
        )


def _create_tasks(schema: str | None) -> None:
    stamp = sa.DateTime(timezone=True)
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON()),
        sa.Column("error_type", sa.String()),
        sa.Column("error_message", sa.String()),
        sa.Column("reason", sa.String()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("retriable", sa.Boolean(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("ceiling_mb", sa.Float(), nullable=False),
        sa.Column("estimate_mb", sa.Float(), nullable=False),
        sa.Column("worker_pid", sa.Integer()),
        sa.Column("exit_code", sa.Integer()),
        sa.Column("signal", sa.Integer()),
        sa.Column("peak_rss_mb", sa.Float()),
        sa.Column("created_at", stamp, nullable=False),
        sa.Column("started_at", stamp),
        sa.Column("finished_at", stamp),
        sa.Column("queue_wait_s", sa.Float()),
        sa.Column("run_s", sa.Float()),
        schema=schema,
    )
    for column in ("created_at", "kind", "state"):
        op.create_index(f"ix_tasks_{column}", "tasks", [column], schema=schema)


def downgrade(schema: str | None = None) -> None:
    op.drop_table("kind_stats", schema=schema)
    op.drop_table("tasks", schema=schema)
