"""Services: the application's use cases, built on the Maxroll gateway and the index."""

from __future__ import annotations
