"""Alembic environment: always driven in code with a live connection (no alembic.ini)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("plastron migrations run only through plastron.server.datastore.migrate")

context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
