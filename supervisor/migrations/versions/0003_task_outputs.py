"""Task outputs in the database where it is shared: the instance that ran a task need not be the one
a client asks for its files.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade(schema: str | None = None) -> None:
    op.create_table(
        "task_outputs",
        sa.Column("task_id", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        schema=schema,
    )


def downgrade(schema: str | None = None) -> None:
    op.drop_table("task_outputs", schema=schema)
