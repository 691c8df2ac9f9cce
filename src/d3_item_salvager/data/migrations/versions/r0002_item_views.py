"""Views for players and their tools: `item_usage` and `salvage_candidates`.

Revision ID: 0002
Revises: 0001

Both are computed from `item_usages` on every read, so they never go stale: an item whose guides
vanished is simply unused. A usage's class is its guide's class (the player's; a follower planner's
own class is not the player's), else its build's. An item counts as used when any id carrying its
name is used: players see names, and Maxroll lists some items (legacy versions, soul-shard ranks)
under several ids. The SQL is frozen here; a later change to a view is a new revision.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Class names joined by ",": the dialects spell the aggregate differently.
_CLASS_LIST = {
    "postgresql": "string_agg(DISTINCT COALESCE(g.class_name, b.class_name), ',' "
    "ORDER BY COALESCE(g.class_name, b.class_name))",
    "sqlite": "group_concat(DISTINCT COALESCE(g.class_name, b.class_name))",
}

_ITEM_USAGE = """
CREATE VIEW item_usage AS
SELECT
    i.id AS item_id,
    i.name AS name,
    i.slot AS slot,
    i.quality AS quality,
    i.set_name AS set_name,
    COUNT(DISTINCT u.build_id) AS builds,
    COUNT(DISTINCT b.guide_id) AS guides,
    COUNT(DISTINCT COALESCE(g.class_name, b.class_name)) AS classes,
    {class_list} AS class_names,
    COUNT(DISTINCT CASE WHEN u.context = 'main' THEN u.build_id END) AS main_builds,
    COUNT(DISTINCT CASE WHEN u.context = 'kanai' THEN u.build_id END) AS kanai_builds,
    COUNT(DISTINCT CASE WHEN u.context = 'follower' THEN u.build_id END) AS follower_builds
FROM items i
LEFT JOIN item_usages u ON u.item_id = i.id
LEFT JOIN builds b ON b.id = u.build_id
LEFT JOIN guides g ON g.id = b.guide_id
GROUP BY i.id, i.name, i.slot, i.quality, i.set_name
"""

_SALVAGE_CANDIDATES = """
CREATE VIEW salvage_candidates AS
SELECT i.id AS item_id, i.name AS name, i.slot AS slot, i.quality AS quality,
    i.set_name AS set_name
FROM items i
WHERE i.quality IN ('legendary', 'set')
AND lower(i.name) NOT IN (
    SELECT lower(used.name) FROM item_usages u JOIN items used ON used.id = u.item_id
)
"""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    class_list = _CLASS_LIST["postgresql" if dialect == "postgresql" else "sqlite"]
    # Views of the same name left by a development build are replaced, not refused.
    downgrade()
    op.execute(_ITEM_USAGE.format(class_list=class_list))
    op.execute(_SALVAGE_CANDIDATES)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS salvage_candidates")
    op.execute("DROP VIEW IF EXISTS item_usage")
