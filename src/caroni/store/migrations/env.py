"""Alembic environment: runs on the connection the node hands over (see db.migrate)."""

from alembic import context

from caroni.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
