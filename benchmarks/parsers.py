"""Parser CPU per document: the synthetic site's documents, and real captures if given.

python -m benchmarks.parsers [--profile-capture PATH] [--page-capture PATH] [--repeat 500]

Parsing runs in worker threads and holds the GIL throughout (JSON decoding is one C call), so
its cost is both CPU per guide and time the event loop may wait. The synthetic site's profiles
are smaller than real ones (their items carry no stats): pass a saved real profile (the JSON
that `profiles/load/d3/<id>` returns) and a saved guide page to see the real cost beside them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks._common import realistic_site_options
from d3_item_salvager.maxroll.guide_parser import parse_guide_planners
from d3_item_salvager.maxroll.profile_parser import parse_planner_profile
from d3_item_salvager.testing.fake_site import build_site


def per_call(function: Callable[[], object], repeat: int) -> float:
    """Median CPU seconds per call over five rounds of `repeat` calls."""
    rounds = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(repeat):
            function()
        rounds.append((time.process_time() - started) / repeat)
    return sorted(rounds)[2]


def report(what: str, body: bytes, parse: Callable[[bytes], object], repeat: int) -> None:
    seconds = per_call(lambda: parse(body), repeat)
    print(f"  {what:34s} {len(body) / 1e3:7.1f} kB  {seconds * 1e6:8.0f} µs CPU per document")


def main(profile_capture: Path | None, page_capture: Path | None, repeat: int) -> None:
    options = realistic_site_options(4)
    site = build_site(**options)
    planner = next(iter(site.planners.values()))
    page = site.guide_page(site.guides[0]).encode()
    print(f"parser CPU, median of 5 rounds of {repeat} documents:")
    report("synthetic planner profile", planner.document(), profile, repeat)
    report("synthetic guide page", page, guide_page, repeat)
    if profile_capture is not None:
        report("real planner profile (capture)", profile_capture.read_bytes(), profile, repeat)
    if page_capture is not None:
        report("real guide page (capture)", page_capture.read_bytes(), guide_page, repeat)


def profile(body: bytes) -> object:
    return parse_planner_profile(body, "1")


def guide_page(body: bytes) -> object:
    return parse_guide_planners(body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile-capture", type=Path)
    parser.add_argument("--page-capture", type=Path)
    parser.add_argument("--repeat", type=int, default=500)
    arguments = parser.parse_args()
    main(arguments.profile_capture, arguments.page_capture, arguments.repeat)
