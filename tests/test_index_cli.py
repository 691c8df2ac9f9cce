"""`python -m d3_item_salvager items | item | guides` as real subprocesses on a synced index."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import sys
from contextlib import closing
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import pytest

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import open_container, resolve
from d3_item_salvager.data.queries import IndexQueries
from d3_item_salvager.services.build_guides import BuildGuideService
from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from d3_item_salvager.testing.fake_site import Site
from tests.player_site import (
    NECRO_GUIDE_SLUG,
    OCULUS,
    RATHMA,
    SOJ,
    UNUSED,
    add_player_items,
    expected_candidates,
)
from tests.processes import child_env, write_config


@pytest.fixture
def site(site: Site) -> Site:
    return add_player_items(site)


async def player_cli(
    *args: str, cwd: Path, within: float = 60, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run `python -m d3_item_salvager ARGS`; return exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "d3_item_salvager", *args,
        cwd=cwd, env=child_env(env or {"COLUMNS": "240"}), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    with anyio.fail_after(within):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def config_file(tmp_path: Path, config: AppConfig) -> Path:
    return write_config(tmp_path / "player.toml", {"database": {"url": config.database.url}})


@pytest.fixture
async def synced(any_backend_config: AppConfig, tmp_path: Path) -> Path:
    """A synced index (SQLite, then PostgreSQL) and a config file pointing at it."""
    async with open_container(any_backend_config) as container:
        service: BuildGuideService = await resolve(container.build_guide_service)
        await service.prepare_database()
    return config_file(tmp_path, any_backend_config)


@pytest.fixture
async def synced_sqlite(live_config: AppConfig, tmp_path: Path) -> Path:
    """A synced SQLite index and a config file pointing at it (for what no backend changes)."""
    async with open_container(live_config) as container:
        service: BuildGuideService = await resolve(container.build_guide_service)
        await service.prepare_database()
    return config_file(tmp_path, live_config)


async def api(config: AppConfig, question: str, *args: Any, **kwargs: Any) -> Any:
    """Ask the read API directly, to compare with what the command prints."""
    async with open_container(config) as container:
        queries = IndexQueries(await resolve(container.index_engine))
        return await getattr(queries, question)(*args, **kwargs)


async def test_items_json_matches_the_api(
    synced: Path, any_backend_config: AppConfig, fake_maxroll: FakeMaxroll, tmp_path: Path
) -> None:
    """`items --json` is one document with every used item; --class and --unused narrow it."""
    code, out, err = await player_cli("items", "--json", "--config", str(synced), cwd=tmp_path)
    assert (code, err) == (0, "")
    document = json.loads(out)
    expected = await api(any_backend_config, "items_used")
    assert document["total"] == len(document["items"]) == len(expected)
    assert [item["item"]["name"] for item in document["items"]] == [
        used.item.name for used in expected
    ]
    code, out, _ = await player_cli(
        "items", "--class", "Monk", "--json", "--config", str(synced), cwd=tmp_path
    )
    monk = json.loads(out)
    assert code == 0
    assert monk["scope"] == {"class": "Monk", "guide": None, "unused": False}
    assert {tuple(item["classes"]) for item in monk["items"]} == {("monk",)}
    code, out, _ = await player_cli(
        "items", "--unused", "--json", "--limit", "2", "--config", str(synced), cwd=tmp_path
    )
    unused = json.loads(out)
    assert code == 0
    assert unused["total"] == len(expected_candidates(fake_maxroll.site))
    assert len(unused["items"]) == 2


async def test_item_json_shows_every_id_and_where_it_is_used(
    synced: Path, fake_maxroll: FakeMaxroll, tmp_path: Path
) -> None:
    """`item NAME --json`: the matches with all their ids, uses and verdict."""
    code, out, err = await player_cli(
        "item", "STONE of jordan", "--json", "--config", str(synced), cwd=tmp_path
    )
    assert (code, err) == (0, "")
    [match] = json.loads(out)["matches"]
    assert match["item"]["ids"] == sorted(SOJ)
    assert match["used"] is True
    assert match["salvage_candidate"] is False
    assert {use["guide_slug"] for use in match["uses"]} == {fake_maxroll.site.guides[0].slug}
    code, out, _ = await player_cli("item", "qqqqqqqqqqqq", "--json", "--config", str(synced),
                                    cwd=tmp_path)  # fmt: skip
    assert (code, json.loads(out)) == (
        1, {"query": "qqqqqqqqqqqq", "matches": [], "suggestions": []}
    )  # fmt: skip


async def test_tables_for_people(
    fake_maxroll: FakeMaxroll, tmp_path: Path, live_config: AppConfig
) -> None:
    """Readable tables with a limit note, item verdicts, guides, and "no match"."""
    async with open_container(live_config) as container:
        service: BuildGuideService = await resolve(container.build_guide_service)
        await service.prepare_database()
    config = str(config_file(tmp_path, live_config))
    code, out, _ = await player_cli("items", "--limit", "3", "--config", config, cwd=tmp_path)
    assert code == 0
    assert "Items used" in out
    assert "Builds" in out
    assert "showing 3 of" in out
    guide = fake_maxroll.site.guides[1]
    code, out, _ = await player_cli("items", "--guide", guide.slug, "--config", config,
                                    cwd=tmp_path)  # fmt: skip
    assert (code, f"Items used by guide {guide.slug}" in out) == (0, True)
    code, out, _ = await player_cli("items", "--unused", "--config", config, cwd=tmp_path)
    assert code == 0
    assert "Salvage candidates" in out
    assert all(name in out for name in UNUSED)
    code, out, _ = await player_cli("item", "jordan", "--config", config, cwd=tmp_path)
    assert code == 0
    assert "KEEP: used by 1 build(s) in 1 guide(s)" in out
    # Each id on its own line, with its own quality and readable slots.
    [unused_id] = [line for line in out.splitlines() if SOJ[0] in line]
    assert unused_id.split() == [
        SOJ[0],
        "legendary",
        *["left", "finger", "or", "right", "finger"],
        "0",
    ]
    code, out, _ = await player_cli("item", "spare helm", "--config", config, cwd=tmp_path)
    assert (code, "used by no build: salvage candidate" in out) == (0, True)
    code, out, _ = await player_cli("item", "zzz", "--config", config, cwd=tmp_path)
    assert (code, out.strip()) == (1, "no item matches 'zzz'")
    code, out, _ = await player_cli("guides", "--config", config, cwd=tmp_path)
    assert code == 0
    assert all(g.slug in out for g in fake_maxroll.site.guides)


async def test_errors_exit_2_with_a_clear_message(
    synced: Path, any_backend_config: AppConfig, tmp_path: Path
) -> None:
    """An unknown class or guide, or a bad option mix, exits 2 and says why on stderr."""
    for args, message in (
        (("items", "--class", "paladin"), "unknown class 'paladin'"),
        (("items", "--guide", "no-such-guide"), "no guide 'no-such-guide' in the index"),
        (("items", "--unused", "--guide", "x"), "combine it with --class, not --guide"),
        (("guides", "--class", "druid"), "unknown class 'druid'"),
    ):
        code, out, err = await player_cli(*args, "--config", str(synced), cwd=tmp_path)
        assert (code, out) == (2, ""), args
        assert message in err


async def test_a_missing_index_is_not_created(tmp_path: Path) -> None:
    """Without an index the command exits 2, says how to make one, and creates no file."""
    path = tmp_path / "nowhere" / "index.sqlite"
    config = write_config(
        tmp_path / "player.toml", {"database": {"url": f"sqlite+aiosqlite:///{path}"}}
    )
    code, out, err = await player_cli("items", "--config", str(config), cwd=tmp_path)
    assert (code, out) == (2, "")
    assert f"no index database at {path}" in err
    assert "run scrape-guides" in err
    assert not path.parent.exists()
    # An empty file (not an index) is refused the same way, and left empty.
    path.parent.mkdir()
    path.touch()
    code, _, err = await player_cli("item", "x", "--config", str(config), cwd=tmp_path)
    assert code == 2
    assert "has no guides, builds, items, item_usages table yet" in err
    assert path.read_bytes() == b""


async def test_help_imports_no_database_or_config_code(tmp_path: Path) -> None:
    """`--help` answers without importing SQLAlchemy, the config or the data layer (lazy imports)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "importtime", "-m", "d3_item_salvager", "items", "--help",
        cwd=tmp_path, env=child_env({"COLUMNS": "240"}), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    with anyio.fail_after(60):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0
    assert "--unused" in stdout.decode()
    imported = {line.rsplit("|", 1)[-1].strip() for line in stderr.decode().splitlines()}
    assert "d3_item_salvager.index_cli" in imported
    assert not {"sqlalchemy", "d3_item_salvager.config", "d3_item_salvager.data"} & imported


async def test_version_and_the_console_script(tmp_path: Path) -> None:
    """`--version` answers without a config; the console script names itself in its help."""
    code, out, _ = await player_cli("--version", cwd=tmp_path)
    assert (code, out.strip()) == (0, f"d3-item-salvager {version('d3-item-salvager')}")
    script = shutil.which("d3-item-salvager", path=str(Path(sys.executable).parent))
    assert script is not None, "pip install -e . installs the d3-item-salvager script"
    process = await asyncio.create_subprocess_exec(
        script, "--help", cwd=tmp_path, env=child_env({"COLUMNS": "240"}),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    with anyio.fail_after(60):
        stdout, _ = await process.communicate()
    assert process.returncode == 0
    assert "Usage: d3-item-salvager " in stdout.decode()
    assert "--install-completion" in stdout.decode()


async def test_reads_while_a_sync_holds_the_write_lock(
    live_config: AppConfig, tmp_path: Path
) -> None:
    """A writer in the middle of a transaction neither blocks the command nor leaks into it."""
    async with open_container(live_config) as container:
        service: BuildGuideService = await resolve(container.build_guide_service)
        await service.prepare_database()
    path = live_config.database.sqlite_path
    assert path is not None
    config = str(config_file(tmp_path, live_config))
    with closing(sqlite3.connect(path, isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE items SET name = 'Half Written' WHERE quality = 'set'")
        code, out, err = await player_cli("items", "--unused", "--json", "--config", config,
                                          cwd=tmp_path)  # fmt: skip
        writer.execute("ROLLBACK")
    assert (code, err) == (0, "")
    assert "Half Written" not in out
    assert set(UNUSED) <= {item["name"] for item in json.loads(out)["items"]}


async def test_class_means_the_builds_class(synced: Path, tmp_path: Path) -> None:
    """--class filters by the builds' class; the guide's own class is `guide_class` in the JSON."""
    config = ("--config", str(synced))
    rathma = {name for name, _type, slot in RATHMA.values() if slot}

    async def used(*args: str) -> dict[str, list[str]]:
        code, out, err = await player_cli("items", *args, "--json", *config, cwd=tmp_path)
        assert (code, err) == (0, ""), args
        return {item["item"]["name"]: item["classes"] for item in json.loads(out)["items"]}

    necromancer = await used("--class", "necromancer")
    assert all(necromancer.get(name) == ["necromancer"] for name in rathma), necromancer
    assert not rathma & (await used("--class", "barbarian")).keys()
    code, out, _ = await player_cli("item", "rathma's skull helm", "--json", *config, cwd=tmp_path)
    [match] = json.loads(out)["matches"]
    assert {(use["class_name"], use["guide_class"]) for use in match["uses"]} == {
        ("necromancer", "barbarian")
    }
    code, out, _ = await player_cli("guides", "--class", "necromancer", "--json", *config,
                                    cwd=tmp_path)  # fmt: skip
    assert code == 0
    [guide] = [g for g in json.loads(out)["guides"] if g["slug"] == NECRO_GUIDE_SLUG]
    assert "class_name" not in guide
    assert guide["guide_class"] == "barbarian"
    assert {build["class_name"] for build in guide["builds"]} == {"necromancer"}


async def test_did_you_mean(synced: Path, tmp_path: Path) -> None:
    """A misspelt name matches nothing: the closest names are suggested and the exit code is 1."""
    config = ("--config", str(synced))
    code, out, err = await player_cli("item", "stone of jordn", *config, cwd=tmp_path)
    assert (code, err) == (1, "")
    assert out.startswith("no item matches 'stone of jordn'; did you mean: Stone of Jordan")
    code, out, _ = await player_cli("item", "stone of jordn", "--json", *config, cwd=tmp_path)
    assert code == 1
    assert json.loads(out)["suggestions"][0] == "Stone of Jordan"


async def test_piped_tables_never_cut_identifiers(
    synced_sqlite: Path, fake_maxroll: FakeMaxroll, tmp_path: Path
) -> None:
    """Piped at 80 columns: plain rows with every slug and header whole, nothing cut."""
    narrow = {"COLUMNS": "80"}
    code, out, _ = await player_cli(
        "guides", "--config", str(synced_sqlite), cwd=tmp_path, env=narrow
    )
    assert code == 0
    slugs = {line.split()[0] for line in out.splitlines()[2:]}
    assert slugs == {guide.slug for guide in fake_maxroll.site.guides}
    assert len(NECRO_GUIDE_SLUG) > 60
    assert out.splitlines()[1].split() == ["Guide", "Builds", "Classes", "Guide", "class", "Title"]
    assert "…" not in out
    assert not {"┃", "│", "━"} & set(out)
    code, out, _ = await player_cli("items", "--class", "necromancer", "--config", str(synced_sqlite),
                                    cwd=tmp_path, env=narrow)  # fmt: skip
    assert code == 0
    assert "…" not in out
    assert "Rathma's Macabre Vambraces" in out


async def test_terminal_tables_fit_without_cutting_identifiers(
    synced_sqlite: Path, fake_maxroll: FakeMaxroll, tmp_path: Path
) -> None:
    """In an 80-column terminal, slugs stay whole; columns that do not fit are left out, said so."""
    terminal = {"COLUMNS": "80", "TTY_COMPATIBLE": "1", "NO_COLOR": "1"}
    code, out, _ = await player_cli(
        "guides", "--config", str(synced_sqlite), cwd=tmp_path, env=terminal
    )
    assert code == 0
    text = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert "┃" in text, "a terminal gets a rich table"
    for guide in fake_maxroll.site.guides:
        assert guide.slug in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text
    assert "left out to fit 80 columns" in text
    code, out, _ = await player_cli("items", "--class", "necromancer", "--limit", "5",
                                    "--config", str(synced_sqlite), cwd=tmp_path, env=terminal)  # fmt: skip
    text = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "┃ Quality" in text
    assert "…" not in text


async def test_guide_by_a_unique_slug_prefix(
    synced: Path, fake_maxroll: FakeMaxroll, tmp_path: Path
) -> None:
    """--guide takes a prefix of one slug; a prefix of several exits 2 listing them."""
    config = ("--config", str(synced))
    guide = fake_maxroll.site.guides[1]
    full = await player_cli("items", "--guide", guide.slug, "--json", *config, cwd=tmp_path)
    prefix = await player_cli("items", "--guide", guide.slug[:7], "--json", *config, cwd=tmp_path)
    assert (full[0], prefix[0]) == (0, 0)
    assert json.loads(full[1])["items"] == json.loads(prefix[1])["items"]
    code, out, err = await player_cli("items", "--guide", "guide-", *config, cwd=tmp_path)
    assert (code, out) == (2, "")
    assert "guide 'guide-' is ambiguous" in err
    assert all(g.slug in err for g in fake_maxroll.site.guides if g.slug.startswith("guide-"))


async def test_several_matches_give_a_list_of_names(synced_sqlite: Path, tmp_path: Path) -> None:
    """Several items match: a short list of their names; --all shows each in full."""
    config = ("--config", str(synced_sqlite))
    code, out, _ = await player_cli("item", "rathma", *config, cwd=tmp_path)
    assert code == 0
    assert "4 items match 'rathma'" in out
    assert all(name in out for name, _type, _slot in RATHMA.values())
    assert "KEEP: used by 2 build(s)" in out
    assert "in 1 guide(s)" not in out  # no full report, only the list
    code, out, _ = await player_cli("item", "rathma", "--all", *config, cwd=tmp_path)
    assert code == 0
    assert out.count("in 1 guide(s)") == 3  # the three used ones in full
    assert "used by no build: salvage candidate" in out
    # An exact name shows that item, and says how many others also match.
    code, out, _ = await player_cli("item", "Item 1", *config, cwd=tmp_path)
    assert code == 0
    assert out.splitlines()[0] == "Item 1"
    assert "other item(s) match 'Item 1'; --all shows them" in out


async def test_one_name_two_items_each_on_its_own_line(synced_sqlite: Path, tmp_path: Path) -> None:
    """An ethereal and a legendary of one name: one line each, with readable slots."""
    code, out, _ = await player_cli(
        "item", "the oculus", "--config", str(synced_sqlite), cwd=tmp_path
    )
    assert code == 0
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert lines[OCULUS[0]] == ["ethereal", "main", "hand", "or", "off", "hand", "0"]
    assert lines[OCULUS[1]] == ["legendary", "off", "hand", "2"]
    assert "mainhand" not in out
