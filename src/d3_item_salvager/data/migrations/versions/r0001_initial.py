"""The index schema of release 0.1.0 (schema_meta version 1), frozen.

Revision ID: 0001
Revises: (none)

Tables are created only where missing, exactly as 0.1.0 created them, so a half-created file
left by 0.1.0 is completed rather than refused. An index written by 0.1.0 (schema_meta version 1
and no alembic_version table) is stamped with this revision without running it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# A private copy: later changes to data/schema.py must never change what this step creates.
_frozen = sa.MetaData()

sa.Table(
    "schema_meta",
    _frozen,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
sa.Table(
    "guides",
    _frozen,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("url", sa.Text, nullable=False, unique=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("class_name", sa.Text),
    sa.Column("modified_unix", sa.Integer, nullable=False),
    sa.Column("last_synced_at", sa.Text, nullable=False),
)
_builds = sa.Table(
    "builds",
    _frozen,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "guide_id", sa.Integer, sa.ForeignKey("guides.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("planner_id", sa.Text, nullable=False),
    sa.Column("profile_index", sa.Integer, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("class_name", sa.Text),
    sa.UniqueConstraint("guide_id", "planner_id", "profile_index"),
)
sa.Table(
    "items",
    _frozen,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("slot", sa.Text),
    sa.Column("quality", sa.Text, nullable=False),
    sa.Column("set_name", sa.Text),
)
_usages = sa.Table(
    "item_usages",
    _frozen,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "build_id", sa.Integer, sa.ForeignKey("builds.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("item_id", sa.Text, sa.ForeignKey("items.id"), nullable=False),
    sa.Column("slot", sa.Text, nullable=False),
    sa.Column("context", sa.Text, nullable=False),
    sa.UniqueConstraint("build_id", "item_id", "slot", "context"),
    sa.CheckConstraint("context IN ('main', 'kanai', 'follower')", name="usage_context"),
)
sa.Index("ix_item_usages_item_id", _usages.c.item_id)
sa.Index("ix_builds_guide_id", _builds.c.guide_id)


def upgrade() -> None:
    bind = op.get_bind()
    _frozen.create_all(bind, checkfirst=True)
    meta = _frozen.tables["schema_meta"]
    stored = bind.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).first()
    if stored is None:
        bind.execute(meta.insert().values(key="schema_version", value="1"))
