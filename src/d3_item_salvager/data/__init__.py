"""The index database: schema, engine and repository."""

from __future__ import annotations
