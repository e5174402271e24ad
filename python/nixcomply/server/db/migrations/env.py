"""alembic's environment: the server always hands it an open connection
(``nixcomply.server.db.migrate``), so migrations run in that connection's transaction."""

from __future__ import annotations

from alembic import context

from nixcomply.server.db.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
