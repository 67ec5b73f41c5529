"""Many instances on one database: owners and attempts on tasks, the instances table, uploaded files
in the database, an idempotency key for clients, and (PostgreSQL) a NOTIFY on every state change.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CHANNEL = "memvisor"


def upgrade(schema: str | None = None) -> None:
    op.add_column("tasks", sa.Column("owner_id", sa.String()), schema=schema)
    op.add_column("tasks", sa.Column("idempotency_key", sa.String()), schema=schema)
    for flag in ("cancel_requested", "has_files"):
        column: sa.Column[bool] = sa.Column(flag, sa.Boolean(), nullable=False, server_default=sa.false())
        op.add_column("tasks", column, schema=schema)
    op.create_index("ix_tasks_owner_id", "tasks", ["owner_id"], schema=schema)
    op.create_index("ix_tasks_idempotency_key", "tasks", ["idempotency_key"], unique=True, schema=schema)
    # The claim reads the oldest queued tasks: one index serves its filter and its order.
    op.create_index("ix_tasks_state_created_at", "tasks", ["state", "created_at"], schema=schema)
    stamp = sa.DateTime(timezone=True)
    op.create_table(
        "instances",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("machine", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("pid_start", sa.BigInteger(), nullable=False),
        sa.Column("started_at", stamp, nullable=False),
        sa.Column("heartbeat_at", stamp, nullable=False),
        sa.Column("limit_mb", sa.Float(), nullable=False),
        sa.Column("budget_mb", sa.Float(), nullable=False),
        sa.Column("enforcement", sa.String(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False),
        sa.Column("listening", sa.Boolean(), nullable=False),
        schema=schema,
    )
    op.create_index("ix_instances_heartbeat_at", "instances", ["heartbeat_at"], schema=schema)
    op.create_table(
        "task_files",
        sa.Column("task_id", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        schema=schema,
    )
    if op.get_bind().dialect.name == "postgresql":
        _notify_trigger(schema or "public")


def _notify_trigger(schema: str) -> None:
    """Every insert and state change (and cancel request) is announced at commit, whoever wrote it:
    waiters and claimers on every instance wake at once, where their connection can LISTEN."""
    op.execute(
        sa.text(f"""
        CREATE FUNCTION "{schema}".notify_task() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state
               OR NEW.cancel_requested IS DISTINCT FROM OLD.cancel_requested THEN
                PERFORM pg_notify('{CHANNEL}', NEW.id || ' ' || NEW.state || ' ' || NEW.attempts
                    || CASE WHEN NEW.cancel_requested THEN ' cancel' ELSE '' END);
            END IF;
            RETURN NULL;
        END $$
        """)
    )
    op.execute(
        sa.text(f"""
        CREATE TRIGGER tasks_notify AFTER INSERT OR UPDATE ON "{schema}".tasks
        FOR EACH ROW EXECUTE FUNCTION "{schema}".notify_task()
        """)
    )


def downgrade(schema: str | None = None) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.text(f'DROP TRIGGER tasks_notify ON "{schema or "public"}".tasks'))
        op.execute(sa.text(f'DROP FUNCTION "{schema or "public"}".notify_task()'))
    op.drop_table("task_files", schema=schema)
    op.drop_table("instances", schema=schema)
    for index in ("ix_tasks_state_created_at", "ix_tasks_idempotency_key", "ix_tasks_owner_id"):
        op.drop_index(index, "tasks", schema=schema)
    for column in ("has_files", "cancel_requested", "idempotency_key", "owner_id"):
        op.drop_column("tasks", column, schema=schema)
