"""The background-jobs application: tasks, scheduler, runtime and CLI."""

from __future__ import annotations
