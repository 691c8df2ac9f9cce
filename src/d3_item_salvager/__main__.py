"""`python -m d3_item_salvager`: the players' commands (the workers have their own CLI)."""

from __future__ import annotations

from d3_item_salvager.index_cli import main

if __name__ == "__main__":
    main(prog_name="python -m d3_item_salvager")
