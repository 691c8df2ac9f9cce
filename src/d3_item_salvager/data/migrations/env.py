"""Alembic environment: runs on the connection the program hands over (see runner.py).

The program holds the schema lock and the transaction; this only runs the steps inside them.
"""

from __future__ import annotations

from alembic import context

from d3_item_salvager.data.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - a developer running the alembic command line
    raise RuntimeError(
        "the index migrations run when the program opens the index "
        "(d3_item_salvager.data.migrations.runner), not from the alembic command line"
    )
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
