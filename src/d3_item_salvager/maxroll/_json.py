"""Strict JSON decoding for Maxroll documents: every failure becomes a ParseError.

orjson, not the standard library: a real planner profile (~29 kB, JSON inside JSON) took 0.8 ms
to decode with `json` against 0.27 ms, and the decoding holds the GIL throughout, so the event
loop waits for it. It is also stricter: NaN, Infinity and lone surrogates are refused.
"""

from __future__ import annotations

from typing import Any

import orjson

from d3_item_salvager.errors import ParseError

JSONDecodeError = orjson.JSONDecodeError


def load_json_object(body: bytes | str, document: str) -> dict[str, Any]:
    """Decode a document that must be a JSON object."""
    if not body or not body.strip():
        raise ParseError(document, "the body is empty")
    try:
        value = orjson.loads(body)
    except JSONDecodeError as exc:
        raise ParseError(document, f"invalid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ParseError(document, f"expected a JSON object, got {type(value).__name__}")
    return value


def load_json(text: bytes | str) -> Any:
    """Decode JSON text; raises JSONDecodeError (a ValueError) when it is not JSON."""
    return orjson.loads(text)


def optional_text(value: object) -> str | None:
    """A string field where null and "" both mean missing."""
    if isinstance(value, str) and value.strip():
        return value
    return None
