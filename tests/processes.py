"""Real `python -m d3_item_salvager.workers` subprocesses for CLI tests, watched via stderr."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """Write a TOML config file (tables nested with dots)."""
    lines: list[str] = []

    def emit(prefix: str, table: dict[str, Any]) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if scalars:
            lines.append(f"[{prefix}]")
            for key, value in scalars.items():
                if isinstance(value, bool):
                    lines.append(f"{key} = {str(value).lower()}")
                elif isinstance(value, int | float):
                    lines.append(f"{key} = {value}")
                else:
                    escaped = str(value).replace("\\\\", "\\\\\\\\").replace('"', '\\\\"')
                    lines.append(f'{key} = "{escaped}"')
        for key, value in table.items():
            if isinstance(value, dict):
                emit(f"{prefix}.{key}", value)

    for name, table in sections.items():
        emit(name, table)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tomllib.loads(path.read_text(encoding="utf-8"))  # fail here, not in the child, if malformed
    return path


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("D3IS_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    env.update(extra or {})
    return env


async def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, within: float = 60
) -> tuple[int, str, str]:
    """Run the CLI to completion; return exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "d3_item_salvager.workers", *args,
        cwd=cwd, env=child_env(env), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    with anyio.fail_after(within):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


class WorkerProcess:
    """A long-running CLI process whose stderr lines are collected as they arrive."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(
        cls, *args: str, cwd: Path, env: dict[str, str] | None = None, stdout: Path | None = None
    ) -> WorkerProcess:
        """Start the CLI; its stdout goes to the `stdout` file when given, else nowhere."""
        with open(stdout or os.devnull, "wb") as output:  # noqa: ASYNC230 - opening is instant
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "d3_item_salvager.workers", *args,
                cwd=cwd, env=child_env(env), stdin=asyncio.subprocess.DEVNULL,
                stdout=output, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            async with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        return sum(1 for line in self.lines if regex.search(line))

    async def wait_for(self, pattern: str, count: int = 1, within: float = 60) -> None:
        """Wait until `count` stderr lines match `pattern` (fails if the process exits first)."""
        with anyio.fail_after(within):
            async with self._changed:
                await self._changed.wait_for(
                    lambda: self.count(pattern) >= count or self._reader.done()
                )
        if self.count(pattern) < count:
            raise AssertionError(f"process ended before {pattern!r}:\n" + "\n".join(self.lines))

    async def stop(self, signum: int = signal.SIGTERM, within: float = 60) -> int:
        """Send a signal and wait for the exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signum)
        with anyio.fail_after(within):
            code = await self.process.wait()
            await self._reader
        return code

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        await self._reader
