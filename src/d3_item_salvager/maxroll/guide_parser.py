"""Guide page HTML -> the planner ids of the builds the guide recommends.

The rule of docs/maxroll-formats.md: the distinct `data-d3planner-id` values of
rendered planner elements between `h2#variants-header` and the next `h2`; without a Variants
section, every rendered `paperdoll` planner on the page. Altar planners never count, and ids that
exist only inside scripts or third-party links are never read: only element attributes are.
"""

from __future__ import annotations

from dataclasses import dataclass

from selectolax.lexbor import LexborHTMLParser, LexborNode

from d3_item_salvager.errors import ParseError

VARIANTS_HEADER_ID = "variants-header"
_PLANNER_ATTR = "data-d3planner-id"
_GEAR_TYPE = "paperdoll"


@dataclass(frozen=True, slots=True)
class GuidePlanners:
    """The guide's planner ids in page order, and the attribute values refused as ids."""

    planner_ids: tuple[str, ...]
    from_variants: bool
    rejected: tuple[str, ...] = ()


def _is_gear_planner(node: LexborNode) -> bool:
    planner_type = (node.attributes.get("data-d3planner-type") or "").strip().lower()
    # A missing type is taken as gear; only the explicit altar type (or another kind) is excluded.
    return planner_type in ("", _GEAR_TYPE)


def parse_guide_planners(html: str | bytes, document: str = "guide page") -> GuidePlanners:
    """The planner ids of one guide page, given as text or as the UTF-8 bytes the server sent.

    Prefer the bytes: the parser reads UTF-8, so text is encoded again first, and a real guide
    page (~420 kB, mostly scripts) took ~0.8 ms to encode and ~0.5 ms to decode, both holding
    the GIL (the parse itself releases it). Invalid UTF-8 reads as U+FFFD either way.

    Raises:
        ParseError: when the page is empty, is not HTML, or has no gear planner at all.
    """
    if not html or not html.strip():
        raise ParseError(document, "the page is empty")
    tree = LexborHTMLParser(html)
    if tree.body is None or not tree.body.child:
        raise ParseError(document, "the page has no body")

    in_variants = False
    has_variants = False
    variants: list[LexborNode] = []
    everywhere: list[LexborNode] = []
    # Selector results come back in document order, so headings and planners interleave as on
    # the page; nesting depth does not matter.
    for node in tree.css(f"h2, [{_PLANNER_ATTR}]"):
        if node.tag == "h2":
            if (node.attributes.get("id") or "").strip() == VARIANTS_HEADER_ID:
                in_variants = has_variants = True
            else:
                in_variants = False
            if node.attributes.get(_PLANNER_ATTR) is None:
                continue
        if node.tag in ("script", "template"):
            continue
        everywhere.append(node)
        if in_variants:
            variants.append(node)

    chosen = variants if has_variants else everywhere
    ids: dict[str, None] = {}
    rejected: list[str] = []
    for node in chosen:
        if not _is_gear_planner(node):
            continue
        value = (node.attributes.get(_PLANNER_ATTR) or "").strip()
        if value.isascii() and value.isdigit() and len(value) <= 15:
            ids.setdefault(value, None)
        else:
            rejected.append(value[:100])
    if not ids:
        where = "in its Variants section" if has_variants else "on the page"
        raise ParseError(document, f"no gear planner element {where}")
    return GuidePlanners(
        planner_ids=tuple(ids), from_variants=has_variants, rejected=tuple(rejected)
    )
