"""Guide search page (Meilisearch JSON) -> the D3 build guides on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from d3_item_salvager.errors import ParseError, UnsafeUrlError
from d3_item_salvager.maxroll._json import load_json_object, optional_text
from d3_item_salvager.maxroll.models import CLASS_NAMES, GuideRecord
from d3_item_salvager.maxroll.urls import guide_path, is_other_maxroll_post


@dataclass(frozen=True, slots=True)
class SearchPage:
    """What one search page holds: its guides, its raw hit count, and hits that were refused."""

    guides: tuple[GuideRecord, ...]
    hit_count: int
    rejected: tuple[str, ...] = ()
    estimated_total: int | None = None


def class_from_taxonomies(taxonomies: object) -> str | None:
    """The character class among `taxonomies.classes` (`d3-demon-hunter` -> `demonhunter`).

    The list mixes class slugs with set slugs, so only known class names count.
    """
    if not isinstance(taxonomies, dict):
        return None
    slugs = taxonomies.get("classes")
    if not isinstance(slugs, list):
        return None
    for slug in slugs:
        if isinstance(slug, str):
            name = slug.removeprefix("d3-").replace("-", "")
            if name in CLASS_NAMES:
                return name
    return None


def _guide_from_hit(hit: dict[str, Any]) -> GuideRecord:
    raw_id = hit.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or not str(raw_id).isdigit():
        raise ValueError(f"id {raw_id!r} is not a number")
    modified = hit.get("post_modified_unix")
    if isinstance(modified, bool) or not isinstance(modified, int):
        raise TypeError(f"post_modified_unix {modified!r} is not an integer")
    title = optional_text(hit.get("post_title")) or ""
    return GuideRecord(
        guide_id=int(raw_id),
        title=title.strip(),
        url=str(hit["permalink"]).rstrip("/"),
        modified_unix=modified,
        class_name=class_from_taxonomies(hit.get("taxonomies")),
    )


def parse_search_page(body: bytes | str, document: str = "guide search page") -> SearchPage:
    """The build guides on one search page, de-duplicated by URL.

    A guide is a hit whose permalink is a valid https://maxroll.gg/d3/guides/<slug> URL. Other
    Maxroll posts (resources, meta posts) are skipped. Any other permalink (another host,
    userinfo, `..`, a query or fragment, a missing one), a broken id or modified time, makes the
    hit refused: named in `rejected`, never fetched. A page without a `hits` list is a ParseError.
    """
    payload = load_json_object(body, document)
    hits = payload.get("hits")
    if not isinstance(hits, list):
        raise ParseError(document, "no 'hits' list")
    guides: dict[str, GuideRecord] = {}
    rejected: list[str] = []
    for position, hit in enumerate(hits):
        if not isinstance(hit, dict):
            rejected.append(f"hit {position}: not an object")
            continue
        permalink = hit.get("permalink")
        try:
            guide_path(permalink)  # refuses a non-string too
        except UnsafeUrlError as exc:
            if not is_other_maxroll_post(permalink):
                rejected.append(f"hit {position}: {exc}")
            continue
        try:
            guide = _guide_from_hit(hit)
        except (ValueError, TypeError) as exc:
            rejected.append(f"hit {position} ({hit.get('permalink')}): {exc}")
            continue
        guides.setdefault(guide.url, guide)
    estimate = payload.get("estimatedTotalHits")
    return SearchPage(
        guides=tuple(guides.values()),
        hit_count=len(hits),
        rejected=tuple(rejected),
        estimated_total=estimate if isinstance(estimate, int) and estimate >= 0 else None,
    )
