"""Why a job store cannot be opened, worded from the database's own error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.exc import DBAPIError

from d3_item_salvager.config import SchedulerConfig
from d3_item_salvager.workers.job_store import job_store_error, metadata


def open_error(path: Path, *pragmas: str) -> DBAPIError:
    """The real error SQLAlchemy raises creating the job store's tables at `path`."""
    engine = create_engine(f"sqlite:///{path}")

    def on_connect(connection: Any, _record: Any) -> None:
        for pragma in pragmas:
            connection.execute(pragma)

    event.listen(engine, "connect", on_connect)
    try:
        with pytest.raises(DBAPIError) as caught:
            metadata.create_all(engine)
    finally:
        engine.dispose()
    return caught.value


def test_a_full_disk_is_named_and_keeping_the_file_is_said(tmp_path: Path) -> None:
    """SQLite's SQLITE_FULL (here from a page limit) says the disk is full, never to move the
    file aside, and carries no SQLAlchemy statement or link."""
    path = tmp_path / "jobs.sqlite"
    error = open_error(path, "PRAGMA max_page_count = 1")
    message = str(job_store_error(SchedulerConfig(job_store_path=path), error))
    assert message == (
        f"scheduler.job_store_path = {str(path)!r}: the disk holding the job store is full "
        "(database or disk is full); free some space and start again: the stored jobs and run "
        "history are kept"
    )


def test_only_a_damaged_file_is_to_be_moved_aside(tmp_path: Path) -> None:
    """Moving the file aside is advised for a file that is not a database; not for one that
    cannot be opened (here a folder in its place), whose history may be whole."""
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"garbage" * 1000)
    message = str(job_store_error(SchedulerConfig(job_store_path=damaged), open_error(damaged)))
    assert message.endswith(
        "cannot use the job store (file is not a database); move the file aside to start with "
        "an empty one"
    )
    folder = tmp_path / "folder.sqlite"
    folder.mkdir()
    message = str(job_store_error(SchedulerConfig(job_store_path=folder), open_error(folder)))
    assert message == (
        f"scheduler.job_store_path = {str(folder)!r}: cannot use the job store "
        "(unable to open database file)"
    )
    assert "sqlalche.me" not in message
