"""Run the parsers over real Maxroll responses saved on disk and print what they read.

    python scripts/check_captures.py PATH/TO/captures

The folder holds `guides_list.json`, `build_guide.html`, `profile_object_<id>.json` and
`data.json` as fetched from Maxroll. Nothing here is part of the test suite: the captures are not
shipped with the project.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from d3_item_salvager.maxroll.catalog import parse_item_catalog
from d3_item_salvager.maxroll.guide_parser import parse_guide_planners
from d3_item_salvager.maxroll.profile_parser import parse_planner_profile
from d3_item_salvager.maxroll.search_parser import parse_search_page


def main(folder: Path) -> None:
    started = time.perf_counter()
    page = parse_search_page((folder / "guides_list.json").read_bytes())
    print(f"search page: {page.hit_count} hits, {len(page.guides)} build guides")
    for guide in page.guides:
        print(f"  {guide.guide_id:>6} {guide.class_name or '-':<12} {guide.url}")

    planners = parse_guide_planners((folder / "build_guide.html").read_text(encoding="utf-8"))
    print(f"guide page: planners {list(planners.planner_ids)} (variants: {planners.from_variants})")

    catalog = parse_item_catalog((folder / "data.json").read_bytes())
    print(f"item catalog: {len(catalog)} items")

    for path in sorted(folder.glob("profile_object_*.json")):
        planner_id = path.stem.removeprefix("profile_object_")
        profile = parse_planner_profile(path.read_bytes(), planner_id)
        usages = [u for build in profile.builds for u in build.usages]
        ids = {u.item_id for u in usages}
        unresolved = sorted(i for i in ids if catalog.get(i) is None)
        print(
            f"profile {planner_id} {profile.name!r} ({profile.class_name}): "
            f"{len(profile.builds)} builds, {len(usages)} usages, {len(ids)} unique ids, "
            f"unresolved {unresolved}"
        )
        for build in profile.builds:
            contexts = {
                c: sum(u.context == c for u in build.usages) for c in ("main", "kanai", "follower")
            }
            print(f"  [{build.profile_index}] {build.name!r}: {contexts}")
    print(f"done in {time.perf_counter() - started:.3f}s")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
