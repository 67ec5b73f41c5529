"""Alembic's environment: the runner (supervisor/migrate.py) hands over an open connection, already
inside the transaction that holds the migration lock, and the schema the tables live in."""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes["connection"]
schema = config.attributes.get("schema")

context.configure(
    connection=connection,
    target_metadata=None,
    version_table_schema=schema,
    transactional_ddl=True,
)
# The connection is in a transaction already: this joins it rather than opening another.
with context.begin_transaction():
    context.run_migrations(schema=schema)
