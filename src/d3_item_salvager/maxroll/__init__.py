"""Maxroll: the async client, the document parsers and the item catalog."""

from __future__ import annotations
