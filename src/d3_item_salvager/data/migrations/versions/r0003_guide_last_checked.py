"""guides.last_checked_at: when a guide's documents were last confirmed with Maxroll.

Revision ID: 0003
Revises: 0002

A guide whose modified time is unchanged is still rechecked once this is older than
`cache.revalidate_after_minutes`. Existing guides were fully read at their last sync, so the
column starts as `last_synced_at`. schema_meta's version becomes 2, so release 0.1.0 (which knows
only version 1) refuses the upgraded file instead of writing rows without the new column.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("guides")}
    if "last_checked_at" not in columns:  # a development build may have added it already
        op.add_column("guides", sa.Column("last_checked_at", sa.Text, nullable=True))
        op.execute("UPDATE guides SET last_checked_at = last_synced_at")
    op.execute("UPDATE schema_meta SET value = '2' WHERE key = 'schema_version'")
