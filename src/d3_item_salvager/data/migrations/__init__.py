"""Migrations of the index schema (Alembic), shipped in the package and run on start.

`runner.upgrade_index` brings any index this program can read to the newest revision; the
revisions live in `versions/`, one file per step, never edited once released.
"""

from __future__ import annotations
