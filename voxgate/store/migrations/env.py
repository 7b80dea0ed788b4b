"""Alembic's entry point. voxgate runs migrations itself (``voxgate db upgrade``, and the server
at start), handing over an open connection in ``config.attributes["connection"]``."""

from __future__ import annotations

from alembic import context

from voxgate.store.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run voxgate's migrations with `voxgate db upgrade`, not the alembic command"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
