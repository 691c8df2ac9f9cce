"""SQL views for players and their tools: `item_usage` and `salvage_candidates`.

Both are computed from `item_usages` on every read, so they never go stale: an item whose guides
vanished is simply unused. A usage's class is its guide's class (the player's class; a follower
planner's own class names the follower's owner in the planner, not the guide), else its build's.

An item counts as used when any id carrying its name is used: players see names, and Maxroll lists
some items (legacy versions, soul-shard ranks) under several ids.
"""

from __future__ import annotations

from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

SALVAGE_QUALITIES = ("legendary", "set")
VIEW_NAMES = ("item_usage", "salvage_candidates")

# Class names joined by ",": both dialects spell the aggregate differently.
_CLASS_LIST = {
    "postgresql": "string_agg(DISTINCT {expr}, ',' ORDER BY {expr})",
    "sqlite": "group_concat(DISTINCT {expr})",
}
_USAGE_CLASS = "COALESCE(g.class_name, b.class_name)"


def item_usage_sql(dialect_name: str) -> str:
    """The item_usage query: one row per item id, with how many builds use it and how."""
    class_list = _CLASS_LIST.get(dialect_name, _CLASS_LIST["sqlite"]).format(expr=_USAGE_CLASS)
    return f"""
SELECT
    i.id AS item_id,
    i.name AS name,
    i.slot AS slot,
    i.quality AS quality,
    i.set_name AS set_name,
    COUNT(DISTINCT u.build_id) AS builds,
    COUNT(DISTINCT b.guide_id) AS guides,
    COUNT(DISTINCT {_USAGE_CLASS}) AS classes,
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


SALVAGE_CANDIDATES_SQL = f"""
SELECT i.id AS item_id, i.name AS name, i.slot AS slot, i.quality AS quality,
    i.set_name AS set_name
FROM items i
WHERE i.quality IN {SALVAGE_QUALITIES!r}
AND lower(i.name) NOT IN (
    SELECT lower(used.name) FROM item_usages u JOIN items used ON used.id = u.item_id
)
"""


def view_queries(dialect_name: str) -> dict[str, str]:
    """Each view's name and SELECT, for `dialect_name` ("sqlite" or "postgresql")."""
    return {
        "item_usage": item_usage_sql(dialect_name),
        "salvage_candidates": SALVAGE_CANDIDATES_SQL,
    }


def create_view_statements(dialect_name: str) -> list[str]:
    """Statements that create both views, or replace them with the current definitions."""
    statements = [f"DROP VIEW IF EXISTS {name}" for name in reversed(VIEW_NAMES)]
    statements += [
        f"CREATE VIEW {name} AS {query}" for name, query in view_queries(dialect_name).items()
    ]
    return statements


def drop_view_statements() -> list[str]:
    """Statements that drop both views."""
    return [f"DROP VIEW IF EXISTS {name}" for name in reversed(VIEW_NAMES)]


async def ensure_views(engine: AsyncEngine) -> None:
    """Create whichever view is missing; a database that has both is not written to.

    Safe when several processes start at once: each CREATE is idempotent.
    """
    async with engine.connect() as connection:
        present = set(await connection.run_sync(lambda sync: inspect(sync).get_view_names()))
    missing = [name for name in VIEW_NAMES if name not in present]
    if not missing:
        return
    dialect = engine.dialect.name
    queries = view_queries(dialect)
    verb = "CREATE OR REPLACE VIEW" if dialect == "postgresql" else "CREATE VIEW IF NOT EXISTS"
    async with engine.begin() as connection:
        for name in missing:
            await connection.execute(text(f"{verb} {name} AS {queries[name]}"))
