"""Test helpers shipped with the package: a fake Maxroll on loopback and its synthetic site."""

from __future__ import annotations
