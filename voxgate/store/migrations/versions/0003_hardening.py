"""Hardening (issue 13). Errors repeat: one row per burst of the same error from the same device,
with how many times and when last (a device refused a thousand turns is one row, not a thousand).
Devices pair: an ElatoAI device gets its token only while its pairing window is open
(``pair_until``), and tokens of an earlier ``token_generation`` are refused.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("errors") as batch:
        batch.add_column(sa.Column("count", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("last_at", sa.Float(), nullable=True))
    op.execute("UPDATE errors SET last_at = created_at")
    op.create_index("ix_errors_last_at", "errors", ["last_at"])
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("pair_until", sa.Float(), nullable=True))
        batch.add_column(
            sa.Column("token_generation", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("token_generation")
        batch.drop_column("pair_until")
    op.drop_index("ix_errors_last_at", "errors")
    with op.batch_alter_table("errors") as batch:
        batch.drop_column("last_at")
        batch.drop_column("count")
