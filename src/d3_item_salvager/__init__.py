"""d3-item-salvager: a local index of the Diablo 3 build guides on maxroll.gg."""

from __future__ import annotations

__version__ = "0.1.0"
