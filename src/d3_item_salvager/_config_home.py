"""`home`: one folder under which every relative path of the configuration is taken.

Works on the raw settings, before validation, so that defaults are rooted as well as given values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

SQLITE_PREFIX = "sqlite+aiosqlite://"


def _section_values(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A section's explicit values as a dict; None when it is neither a dict nor a section."""
    values = data.get(name, {})
    if isinstance(values, BaseModel):
        return values.model_dump(exclude_unset=True)
    return dict(values) if isinstance(values, Mapping) else None


def _under(home: Path, value: Any) -> Any:
    if not isinstance(value, str | os.PathLike) or Path(value).is_absolute():
        return value
    return home / value


def _sqlite_url_under(home: Path, url: Any, prefix: str) -> Any:
    """A SQLite URL whose relative file path is taken under home; other URLs unchanged."""
    if not isinstance(url, str) or not url.startswith(prefix + "/"):
        return url
    path, query = (url.removeprefix(prefix + "/").split("?", 1) + [""])[:2]
    if not path or path == ":memory:" or Path(path).is_absolute():
        return url
    return f"{prefix}/{home / path}" + (f"?{query}" if query else "")


def rooted_at_home(
    data: dict[str, Any], home: Path, defaults: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The raw settings with every relative path, given or default, taken under home.

    `defaults` holds the default of each path setting by section: a section left out of `data`
    is rooted from its defaults.
    """
    data = {**data, "home": home}
    for name, fields in defaults.items():
        values = _section_values(data, name)
        if values is None:
            continue
        values = {**fields, **values}
        if name == "database":
            values["url"] = _sqlite_url_under(home, values["url"], SQLITE_PREFIX)
        elif name == "scheduler":
            values["job_store_path"] = _under(home, values["job_store_path"])
            values["job_store_url"] = _sqlite_url_under(
                home, values.get("job_store_url"), "sqlite://"
            )
        else:
            values["dir"] = _under(home, values["dir"])
        data[name] = values
    return data
