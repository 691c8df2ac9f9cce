"""Strict JSON decoding for Maxroll documents: every failure becomes a ParseError."""

from __future__ import annotations

import json
from typing import Any

from d3_item_salvager.errors import ParseError


def load_json_object(body: bytes | str, document: str) -> dict[str, Any]:
    """Decode a document that must be a JSON object."""
    if not body or not body.strip():
        raise ParseError(document, "the body is empty")
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ParseError(document, f"invalid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ParseError(document, f"expected a JSON object, got {type(value).__name__}")
    return value


def optional_text(value: object) -> str | None:
    """A string field where null and "" both mean missing."""
    if isinstance(value, str) and value.strip():
        return value
    return None
