"""`python -m d3_item_salvager.workers`."""

from __future__ import annotations

from d3_item_salvager.workers.cli import main

if __name__ == "__main__":
    main(prog_name="python -m d3_item_salvager.workers")
