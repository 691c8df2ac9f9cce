"""The views and the read API on a synced fake site, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import Container, resolve
from d3_item_salvager.data.queries import IndexQueries
from d3_item_salvager.data.query_models import (
    AmbiguousGuideError,
    ItemVariant,
    UnknownClassError,
    UnknownGuideError,
)
from d3_item_salvager.services.build_guides import BuildGuideService
from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from d3_item_salvager.testing.fake_site import Site
from tests.index_expectations import expected_rows, touch_guide
from tests.index_reader import IndexReader
from tests.player_site import (
    NECRO_GUIDE_SLUG,
    OCULUS,
    RATHMA,
    SOJ,
    UNUSED,
    add_player_items,
    expected_candidates,
)

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def live_config(any_backend_config: AppConfig) -> AppConfig:
    """Every test here runs with the index on SQLite and on PostgreSQL."""
    return any_backend_config


@pytest.fixture
def site(site: Site) -> Site:
    """The default site, plus duplicate-name and unused items."""
    return add_player_items(site)


@pytest.fixture
async def service(live_container: Container) -> BuildGuideService:
    service: BuildGuideService = await resolve(live_container.build_guide_service)
    await service.prepare_database()
    return service


@pytest.fixture
async def queries(live_container: Container, service: BuildGuideService) -> IndexQueries:
    """The read API on the synced index."""
    return IndexQueries(await resolve(live_container.index_engine))


def expected_usage(site: Site) -> dict[str, dict[str, set[object]]]:
    """Per used item id: its builds, guides, builds' classes and contexts, from the site alone."""
    rows = expected_rows(site)
    class_of = {(guide, planner, index): c for guide, planner, index, _, c in rows["builds"]}
    usage: dict[str, dict[str, set[object]]] = defaultdict(lambda: defaultdict(set))
    for guide_id, planner_id, index, item_id, _slot, context in rows["item_usages"]:
        entry = usage[str(item_id)]
        entry["builds"].add((guide_id, planner_id, index))
        entry["guides"].add(guide_id)
        entry["classes"].add(class_of[(guide_id, planner_id, index)])
        entry[str(context)].add((guide_id, planner_id, index))
    return usage


def view_candidates(index: IndexReader) -> set[str]:
    return {str(name) for (name,) in index.query("SELECT name FROM salvage_candidates")}


async def test_item_usage_view_matches_the_usages(
    queries: IndexQueries, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """One row per catalog id; its counts, builds' classes and contexts are what the usages say."""
    site = fake_maxroll.site
    usage = expected_usage(site)
    rows = index.query(
        "SELECT item_id, builds, guides, classes, class_names, main_builds, kanai_builds, "
        "follower_builds FROM item_usage"
    )
    assert {row[0] for row in rows} == {record["id"] for record in site.catalog}
    for item_id, builds, guides, classes, class_names, main, kanai, follower in rows:
        entry = usage.get(str(item_id), defaultdict(set))
        assert (builds, guides, classes) == (
            len(entry["builds"]), len(entry["guides"]), len(entry["classes"])
        ), item_id  # fmt: skip
        assert set(str(class_names or "").split(",")) - {""} == entry["classes"]
        assert (main, kanai, follower) == (
            len(entry["main"]), len(entry["kanai"]), len(entry["follower"])
        )  # fmt: skip


async def test_salvage_candidates_in_the_view_and_the_api(
    queries: IndexQueries, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """Legendary and set items no build uses under any of their ids; magic items never."""
    expected = expected_candidates(fake_maxroll.site)
    assert expected, "the site must leave some items unused"
    assert view_candidates(index) == expected
    candidates = await queries.salvage_candidates()
    assert {entry.name for entry in candidates} == expected
    [twin] = [entry for entry in candidates if entry.name == "Twin Belt"]
    assert twin.ids == ("Unique_Belt_Twin_p3", "Unique_Belt_Twin_x1")
    assert "Twin Belt" in {e.name for e in await queries.salvage_candidates(class_name="monk")}
    assert set(UNUSED) <= expected
    assert "Stone of Jordan" not in expected  # its _x1 id is unused, but _p2 is used
    assert "Plain Ring" not in expected


async def test_salvage_list_follows_a_guide_using_an_item_and_vanishing(
    service: BuildGuideService,
    queries: IndexQueries,
    fake_maxroll: FakeMaxroll,
    index: IndexReader,
) -> None:
    """An item leaves the list when a guide starts using it and is back when that guide vanishes."""
    site = fake_maxroll.site
    guide = site.guides[-1]
    candidate = min(expected_candidates(site))
    item_id = next(r["id"] for r in site.catalog if r["name"] == candidate)
    # A planner only this guide shows, so its removal leaves the item unused again.
    planner_id = guide.variant_planners[0]
    site.planners[planner_id].profiles[1]["items"]["head"] = {"id": item_id}
    touch_guide(guide)
    await service.prepare_database()
    assert candidate not in view_candidates(index)
    assert candidate not in {entry.name for entry in await queries.salvage_candidates()}
    report = await queries.item(item_id)
    assert report is not None
    assert report.used
    assert {(use.guide_id, use.slot, use.context) for use in report.uses} == {
        (guide.guide_id, "head", "main")
    }
    site.guides.remove(guide)
    summary = await service.prepare_database()
    assert summary.guides_removed == 1
    assert candidate in view_candidates(index)
    assert candidate in {entry.name for entry in await queries.salvage_candidates()}
    assert index.query("SELECT builds FROM item_usage WHERE item_id = :id", id=item_id) == [(0,)]
    report = await queries.item(item_id)
    assert report is not None
    assert not report.used
    assert report.salvage_candidate


async def test_name_search_is_tolerant_and_shows_every_id_of_a_name(
    queries: IndexQueries, fake_maxroll: FakeMaxroll
) -> None:
    """Case, punctuation and partial names match; both ids of a name come as one item."""
    for query in ("Stone of Jordan", "stone-of-JORDAN!", "jord", "  STONE OF  "):
        reports = await queries.find_items(query)
        assert [report.item.name for report in reports] == ["Stone of Jordan"], query
        [report] = reports
        assert report.item.ids == tuple(sorted(SOJ))
        assert report.used
        assert {use.item_id for use in report.uses} == {SOJ[1]}
        assert {use.guide_id for use in report.uses} == {fake_maxroll.site.guides[0].guide_id}
    by_unused_id = await queries.item(SOJ[0])
    assert by_unused_id is not None
    assert by_unused_id.item.ids == tuple(sorted(SOJ))
    assert by_unused_id.used
    assert not by_unused_id.salvage_candidate
    assert await queries.find_items("no such thing") == []
    assert await queries.find_items("!!!") == []
    assert await queries.item("Unknown_Id") is None
    # An exact id finds its item; a name shared by many items lists each once, exact first.
    [by_id] = await queries.find_items(SOJ[1])
    assert by_id.item.name == "Stone of Jordan"
    names = [report.item.name for report in await queries.find_items("item 1")]
    assert names[0] == "Item 1"
    assert len(names) == len(set(names)) > 1


async def test_items_used_by_a_class_a_guide_and_a_build(
    queries: IndexQueries, fake_maxroll: FakeMaxroll
) -> None:
    """Each scope lists exactly the items its usages name, with their counts and contexts."""
    site = fake_maxroll.site
    rows = expected_rows(site)["item_usages"]
    name_of = {r["id"]: r["name"] for r in site.catalog}
    guide = site.guides[1]
    by_guide = await queries.items_used(guide=guide.slug)
    assert {used.item.name for used in by_guide} == {
        name_of[str(row[3])] for row in rows if row[0] == guide.guide_id
    }
    by_class = await queries.items_used(class_name=guide.class_name.upper())
    class_builds = {row[:3] for row in expected_rows(site)["builds"] if row[4] == guide.class_name}
    assert {used.item.name for used in by_class} == {
        name_of[str(row[3])] for row in rows if row[:3] in class_builds
    }
    assert all(used.classes == (guide.class_name,) for used in by_class)
    everything = await queries.items_used()
    assert len(everything) == len({name_of[str(row[3])] for row in rows})
    builds_desc = [used.builds for used in everything]
    assert builds_desc == sorted(builds_desc, reverse=True)
    [info] = [g for g in await queries.guides() if g.guide_id == guide.guide_id]
    build = info.builds[0]
    by_build = await queries.items_used(build_id=build.build_id)
    key = (guide.guide_id, build.planner_id, build.profile_index)
    assert {used.item.name for used in by_build} == {
        name_of[str(row[3])] for row in rows if row[:3] == key
    }
    assert all(used.builds == 1 for used in by_build)
    contexts = {context for used in by_build for context in used.contexts}
    assert contexts == {str(row[5]) for row in rows if row[:3] == key}
    with pytest.raises(UnknownClassError, match="paladin"):
        await queries.items_used(class_name="paladin")
    with pytest.raises(UnknownGuideError, match="no-such-guide"):
        await queries.items_used(guide="no-such-guide")


async def test_guides_and_their_builds(queries: IndexQueries, fake_maxroll: FakeMaxroll) -> None:
    """Every guide with its slug, class and builds; a guide is found by slug, URL or id."""
    site = fake_maxroll.site
    builds = expected_rows(site)["builds"]
    guides = await queries.guides()
    assert {(g.guide_id, g.slug, g.guide_class) for g in guides} == {
        (g.guide_id, g.slug, g.class_name) for g in site.guides
    }
    for info in guides:
        assert {(info.guide_id, b.planner_id, b.profile_index, b.name, b.class_name)
                for b in info.builds} == {row for row in builds if row[0] == info.guide_id}  # fmt: skip
    guide = site.guides[2]
    for reference in (guide.slug, guide.permalink, str(guide.guide_id)):
        assert (await queries.guide(reference)).guide_id == guide.guide_id
    wizards = await queries.guides(class_name="Wizard")
    assert {g.guide_id for g in wizards} == {row[0] for row in builds if row[4] == "wizard"}


async def test_the_readme_sql_examples_run(queries: IndexQueries, index: IndexReader) -> None:
    """Every example query of README "Using the index" runs on the synced index."""
    readme = README.read_text(encoding="utf-8")
    section = readme.split("## Using the index", 1)[1].split("\n## ", 1)[0]
    [sql] = re.findall(r"```sql\n(.+?)\n```", section, flags=re.DOTALL)
    statements = [s for s in sql.split(";") if s.strip()]
    assert len(statements) == 4
    results = [index.query(statement) for statement in statements]
    assert len(results[0]) == 20
    assert {row[1] for row in results[1]} >= set(UNUSED)
    assert {row[1] for row in results[3]} == {"Variant 0"}


async def test_class_means_the_builds_class(
    queries: IndexQueries, fake_maxroll: FakeMaxroll
) -> None:
    """A Barbarian-tagged guide's Necromancer builds count as necromancer, never as barbarian."""
    rathma = {name for name, _type, slot in RATHMA.values() if slot}
    necromancer = {
        used.item.name: used for used in await queries.items_used(class_name="necromancer")
    }
    assert rathma <= necromancer.keys()
    assert all(necromancer[name].classes == ("necromancer",) for name in rathma)
    barbarian = {used.item.name for used in await queries.items_used(class_name="barbarian")}
    assert not rathma & barbarian
    [guide] = [
        g for g in await queries.guides(class_name="necromancer") if g.slug == NECRO_GUIDE_SLUG
    ]
    assert guide.guide_class == "barbarian"
    assert {build.class_name for build in guide.builds} == {"necromancer"}
    assert NECRO_GUIDE_SLUG not in {g.slug for g in await queries.guides(class_name="barbarian")}
    [report] = await queries.find_items("Rathma's Skull Helm")
    assert {(use.class_name, use.guide_class) for use in report.uses} == {
        ("necromancer", "barbarian")
    }
    # The salvage list of a class follows its builds too: the Necromancer set is kept for them.
    candidates = {entry.name for entry in await queries.salvage_candidates("barbarian")}
    assert rathma <= candidates
    assert not rathma & {e.name for e in await queries.salvage_candidates("necromancer")}


async def test_a_guide_by_a_unique_slug_prefix(
    queries: IndexQueries, fake_maxroll: FakeMaxroll
) -> None:
    """A prefix of one slug names that guide; a prefix of several is refused, listing them."""
    guide = fake_maxroll.site.guides[1]
    assert (await queries.guide(guide.slug[:7])).guide_id == guide.guide_id
    with pytest.raises(AmbiguousGuideError) as refused:
        await queries.guide("guide-")
    assert refused.value.candidates == tuple(
        sorted(g.slug for g in fake_maxroll.site.guides if g.slug.startswith("guide-"))
    )
    assert len(refused.value.candidates) > 1
    with pytest.raises(UnknownGuideError):
        await queries.guide("")


async def test_close_names_are_suggested(queries: IndexQueries) -> None:
    """A misspelt name gets the closest item names; nonsense gets none."""
    assert (await queries.suggest_names("stone of jordn"))[0] == "Stone of Jordan"
    assert (await queries.suggest_names("rathmas skul helm"))[0] == "Rathma's Skull Helm"
    assert await queries.suggest_names("qqqqqqqqqq") == []


async def test_one_name_two_items_keep_their_own_quality_and_slots(queries: IndexQueries) -> None:
    """An ethereal and a legendary of one name come as one item whose variants stay apart."""
    [report] = await queries.find_items("the oculus")
    assert report.item.ids == tuple(sorted(OCULUS))
    assert report.item.variants == (
        ItemVariant(OCULUS[0], "ethereal", ("mainhand", "offhand"), None),
        ItemVariant(OCULUS[1], "legendary", ("offhand",), None),
    )
    assert {use.item_id for use in report.uses} == {OCULUS[1]}
