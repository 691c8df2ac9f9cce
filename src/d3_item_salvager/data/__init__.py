"""The index database: schema, engine and repository."""

from __future__ import annotations

from d3_item_salvager.data.repository import GuideChanges, IndexRepository, StoredGuide
from d3_item_salvager.data.schema import ensure_schema

__all__ = ["GuideChanges", "IndexRepository", "StoredGuide", "ensure_schema"]
