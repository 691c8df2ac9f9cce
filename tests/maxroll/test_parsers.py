"""Parsers: each trap of docs/maxroll-formats.md, over small synthetic fixtures and pages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from d3_item_salvager.errors import ParseError
from d3_item_salvager.maxroll.catalog import parse_item_catalog
from d3_item_salvager.maxroll.guide_parser import parse_guide_planners
from d3_item_salvager.maxroll.models import ItemUsage
from d3_item_salvager.maxroll.profile_parser import parse_planner_profile
from d3_item_salvager.maxroll.search_parser import class_from_taxonomies, parse_search_page
from d3_item_salvager.testing.fake_site import build_site, render_guide_page

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# Search pages


def test_search_page_keeps_only_build_guides_deduplicated() -> None:
    """Resources and meta posts are dropped, trailing slashes and repeated URLs collapse."""
    page = parse_search_page(fixture("search_page.json"))
    assert page.hit_count == 9
    assert [(g.guide_id, g.url, g.modified_unix, g.class_name) for g in page.guides] == [
        (3022, "https://maxroll.gg/d3/guides/sotl-hammer-crusader-guide", 1753493424, "crusader"),
        (
            9564,
            "https://maxroll.gg/d3/guides/lod-rapid-fire-demon-hunter-guide",
            1753492398,
            "demonhunter",
        ),
        (3582, "https://maxroll.gg/d3/guides/support-zmonk-guide", 1753494312, "monk"),
        (4002, "https://maxroll.gg/d3/guides/no-class-guide", 1753400000, None),
    ]
    assert page.guides[0].title == "Post 3022"
    assert page.guides[3].title == ""
    assert len(page.rejected) == 2
    assert "broken-id-guide" in page.rejected[0]
    assert "post_modified_unix 'yesterday'" in page.rejected[1]


@pytest.mark.parametrize(
    ("slugs", "expected"),
    [
        (["d3-demon-hunter", "d3-embodiment-of-the-marauder"], "demonhunter"),
        (["d3-armor-of-akkhan", "d3-crusader"], "crusader"),
        (["d3-witch-doctor"], "witchdoctor"),
        (["d3-seeker-of-the-light"], None),
        ("d3-monk", None),
        (None, None),
    ],
)
def test_class_from_taxonomies(slugs: object, expected: str | None) -> None:
    """Class slugs map to class names; set slugs mixed in are ignored."""
    assert class_from_taxonomies({"classes": slugs}) == expected


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b"", "the body is empty"),
        (b"   ", "the body is empty"),
        (b'{"hits": [', "invalid JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"results": []}', "no 'hits' list"),
    ],
)
def test_malformed_search_page_is_a_parse_error(body: bytes, what: str) -> None:
    """A broken page is a ParseError naming the problem, never an empty guide list."""
    with pytest.raises(ParseError, match=what):
        parse_search_page(body, "search page 3")


# Guide pages


def test_pretty_page_reads_only_variants_planners() -> None:
    """Pretty-printed, nested, multi-line attributes: only Variants gear planners, once each."""
    planners = parse_guide_planners(fixture("guide_pretty.html").decode(), "pretty")
    assert planners.planner_ids == ("100000005", "100000006")
    assert planners.from_variants


def test_page_without_variants_uses_all_gear_planners() -> None:
    """No Variants section: every rendered paperdoll planner, de-duplicated; bad ids refused."""
    planners = parse_guide_planners(fixture("guide_no_variants.html").decode(), "plain")
    assert planners.planner_ids == ("200000001", "200000003")
    assert not planners.from_variants
    assert planners.rejected == ("../../admin",)


def test_page_whose_variants_hold_only_an_altar_is_a_parse_error() -> None:
    """Altar planners never count, and ids only in scripts are never read."""
    with pytest.raises(ParseError, match="no gear planner element in its Variants section"):
        parse_guide_planners(fixture("guide_altar_only.html").decode(), "altar page")


@pytest.mark.parametrize(
    "html",
    ["", "   ", "<html><body></body></html>", "<html><body><p>Nothing here</p></body></html>"],
)
def test_page_without_planners_is_a_parse_error(html: str) -> None:
    """An empty page or one with no planners is reported, not read as 'no builds'."""
    with pytest.raises(ParseError, match="guide page x"):
        parse_guide_planners(html, "guide page x")


@pytest.mark.parametrize("real_size", [False, True])
@pytest.mark.parametrize("shape", ["minified", "pretty", "no-variants"])
def test_generated_pages_of_every_shape(shape: str, real_size: bool) -> None:
    """Generated pages carry script copies, followers and altars; the rule still holds, also
    in pages as large as real ones (article markup and scripts around the planners)."""
    site = build_site(3, planners_per_guide=3, real_size=real_size)
    for guide in site.guides:
        guide.shape = shape  # type: ignore[assignment]
        planners = parse_guide_planners(render_guide_page(guide), guide.permalink)
        assert list(planners.planner_ids) == guide.expected_planners()
        assert "481464426" not in planners.planner_ids
        assert guide.altar_planner not in planners.planner_ids


def test_a_page_as_bytes_reads_as_its_text_invalid_utf8_included() -> None:
    """The gateway hands the parser the bytes it received; they read as the text decoded with
    replacement did: an undecodable byte becomes U+FFFD, here turning an id into a refused one."""
    site = build_site(2, planners_per_guide=3)
    for guide in site.guides:
        page = render_guide_page(guide).encode()
        assert parse_guide_planners(page, "bytes") == parse_guide_planners(page.decode(), "text")
    broken = (
        b'<html><body><h2 id="variants-header">Variants</h2>'
        b'<div data-d3planner-id="12\xff3"></div><div data-d3planner-id="456">\xfe</div>'
        b"</body></html>"
    )
    as_text = parse_guide_planners(broken.decode("utf-8", errors="replace"), "text")
    assert parse_guide_planners(broken, "bytes") == as_text
    assert as_text.planner_ids == ("456",)
    assert as_text.rejected == ("12\ufffd3",)


# Planner profiles


def test_profile_yields_one_build_per_profile_with_contexts() -> None:
    """Double-encoded data, trailing-space names, empty slots, Kanai strings, follower items."""
    profile = parse_planner_profile(fixture("profile.json"), "400000001")
    assert (profile.name, profile.class_name, len(profile.builds)) == ("Synth zMonk", "monk", 2)
    first, second = profile.builds
    assert (first.profile_index, first.name, first.class_name) == (0, "High GR WD", "monk")
    main = [u for u in first.usages if u.context == "main"]
    assert len(main) == 12  # offhand is an empty {}
    assert ItemUsage("P3_Unique_Ring_107", "rightfinger", "main") in main
    assert [u for u in first.usages if u.context == "kanai"] == [
        ItemUsage("P66_Unique_Axe_2H_003", "weapon", "kanai"),
        ItemUsage("Unique_Boots_103_x1", "armor", "kanai"),
        ItemUsage("P3_Unique_Ring_107", "jewelry", "kanai"),
    ]
    assert not [u for u in first.usages if u.context == "follower"]
    assert (second.profile_index, second.name) == (1, "3 supp Crusader")
    assert ItemUsage("Unique_Helm_017_p2", "head", "main") in second.usages
    assert [u for u in second.usages if u.context == "kanai"] == [
        ItemUsage("P66_Unique_Axe_2H_003", "weapon", "kanai")
    ]
    assert [u for u in second.usages if u.context == "follower"] == [
        ItemUsage("Unique_Helm_017_x1", "head", "follower"),
        ItemUsage("Unique_EnchantressFocus_001", "follower", "follower"),
        ItemUsage("Unique_B_mainhand", "mainhand", "follower"),
    ]


def test_profile_repeated_entries_are_one_usage() -> None:
    """The same item in the same slot and context twice counts once."""
    data = {"profiles": [{"name": "x", "items": {"head": {"id": "A"}}, "kanai": {"armor": "A"}}]}
    body = json.dumps({"id": "1", "data": json.dumps(data)})
    [build] = parse_planner_profile(body, "1").builds
    assert build.usages == (ItemUsage("A", "head", "main"), ItemUsage("A", "armor", "kanai"))
    assert build.class_name is None


def test_profiles_share_one_record_per_usage() -> None:
    """Two profiles using the same item in the same slot share one (frozen) usage record.

    A sync holds every guide's usages until it is written; shared records keep that from being
    a fresh object per usage for the cyclic collector to walk.
    """
    data = {"profiles": [{"items": {"head": {"id": "A"}}, "kanai": {"armor": "B"}}]}
    body = json.dumps({"data": json.dumps(data)})
    [first] = parse_planner_profile(body, "1").builds
    [second] = parse_planner_profile(body, "2").builds
    assert first.usages == second.usages
    assert all(a is b for a, b in zip(first.usages, second.usages, strict=True))


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b"", "the body is empty"),
        (b"<html>", "invalid JSON"),
        (json.dumps({"id": "1", "data": "{not json"}).encode(), "'data' field is not JSON"),
        # Not JSON either, though Python's json module reads them: NaN, lone surrogates, bad UTF-8.
        (b'{"id": "1", "data": "{\\"profiles\\": [], \\"x\\": NaN}"}', "'data' field is not"),
        (b'{"id": "1", "name": "\\ud800", "data": "{}"}', "invalid JSON"),
        (b'{"id": "1", "name": "\xff", "data": "{}"}', "invalid JSON"),
        (json.dumps({"id": "1"}).encode(), "'data' field is missing"),
        (json.dumps({"id": "1", "data": "{}"}).encode(), "'data.profiles' is missing"),
        (json.dumps({"data": json.dumps({"profiles": [1]})}).encode(), "profiles\\[0\\]"),
        (
            json.dumps({"data": json.dumps({"profiles": [{"items": [1]}]})}).encode(),
            "profiles\\[0\\].items is a list",
        ),
    ],
)
def test_malformed_profile_is_a_parse_error(body: bytes, what: str) -> None:
    """Each broken shape names the planner and what is wrong."""
    with pytest.raises(ParseError, match=f"planner profile 42.*{what}"):
        parse_planner_profile(body, "42")


# Item catalog


def test_catalog_resolves_slots_sets_and_aliases() -> None:
    """Meta-slots expand to real slots; aliases are a fallback; suffix variants stay distinct."""
    catalog = parse_item_catalog(fixture("data_small.json"))
    assert len(catalog) == 9
    ring = catalog.get("P3_Unique_Ring_107")
    assert ring is not None
    assert (ring.slot, ring.quality, ring.set_name) == ("leftfinger,rightfinger", "legendary", None)
    assert catalog.get("Unique_Ring_107_x1") == ring
    axe = catalog.get("ptr_OldAxe")
    assert axe is not None
    assert (axe.item_id, axe.slot) == ("P66_Unique_Axe_2H_003", "mainhand")
    boots = catalog.get("Unique_Boots_103_x1")
    assert boots is not None
    assert (boots.slot, boots.set_name) == ("feet", "Synthetic Battlegear")
    x1, p2 = catalog.get("Unique_Helm_017_x1"), catalog.get("Unique_Helm_017_p2")
    assert x1 is not None
    assert p2 is not None
    assert x1.item_id != p2.item_id
    assert x1.name == p2.name
    assert catalog.get("Unique_Helm_017") is None
    assert catalog.get("unique_helm_017_x1") is None
    sword = catalog.get("Unique_Sword_001_x1")
    assert sword is not None
    assert sword.slot == "mainhand,offhand"
    focus = catalog.get("Unique_EnchantressFocus_001")
    assert focus is not None
    assert focus.slot == "follower"
    assert catalog.get("Wings_1") is None


@pytest.mark.parametrize(
    ("payload", "what"),
    [
        ({"itemTypes": {}}, "'items' is missing"),
        ({"items": [{"id": "A", "name": "x"}], "itemTypes": {}}, "lacks an id, name or quality"),
        (
            {"items": [{"id": "A", "name": "x", "quality": "set"}] * 2, "itemTypes": {}},
            "appears twice",
        ),
        ({"items": [{"id": "A", "name": "x", "quality": "q"}], "itemTypes": []}, "itemTypes"),
    ],
)
def test_malformed_catalog_is_a_parse_error(payload: dict[str, object], what: str) -> None:
    """A catalog that cannot be trusted is refused as a whole."""
    with pytest.raises(ParseError, match=what):
        parse_item_catalog(json.dumps(payload))
