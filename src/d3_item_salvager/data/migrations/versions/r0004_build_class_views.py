"""item_usage counts the classes of the builds using an item, not of their guides.

Revision ID: 0004
Revises: 0003

A build's class is its planner profile's (`builds.class_name`); a guide's class is only the class
it is filed under on Maxroll, and a Barbarian-tagged guide may hold Necromancer builds. So
`item_usage.classes` and `class_names` now mean the builds' classes, as `items --class` does.
Only the view changes: no row is written, and `salvage_candidates` stays as 0002 made it.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Class names joined by ",": the dialects spell the aggregate differently.
_CLASS_LIST = {
    "postgresql": "string_agg(DISTINCT b.class_name, ',' ORDER BY b.class_name)",
    "sqlite": "group_concat(DISTINCT b.class_name)",
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
    COUNT(DISTINCT b.class_name) AS classes,
    {class_list} AS class_names,
    COUNT(DISTINCT CASE WHEN u.context = 'main' THEN u.build_id END) AS main_builds,
    COUNT(DISTINCT CASE WHEN u.context = 'kanai' THEN u.build_id END) AS kanai_builds,
    COUNT(DISTINCT CASE WHEN u.context = 'follower' THEN u.build_id END) AS follower_builds
FROM items i
LEFT JOIN item_usages u ON u.item_id = i.id
LEFT JOIN builds b ON b.id = u.build_id
GROUP BY i.id, i.name, i.slot, i.quality, i.set_name
"""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    class_list = _CLASS_LIST["postgresql" if dialect == "postgresql" else "sqlite"]
    op.execute("DROP VIEW IF EXISTS item_usage")
    op.execute(_ITEM_USAGE.format(class_list=class_list))
