"""Run `planfix-bot run` as a real subprocess with a generated TOML config (tests, benchmarks, soak)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """A tiny TOML writer for the shapes our config uses: tables and arrays of tables."""
    lines: list[str] = []
    for section, body in data.items():
        tables = body if isinstance(body, list) else [body]
        for table in tables:
            lines.append(f"[[{section}]]" if isinstance(body, list) else f"[{section}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
            lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def planfix_bot_command() -> list[str]:
    """The installed console script next to this interpreter, as a user would run it."""
    script = Path(sys.executable).with_name("planfix-bot")
    if script.exists():
        return [str(script)]
    found = shutil.which("planfix-bot")
    return [found] if found else [sys.executable, "-m", "bot"]


class Daemon:
    """`planfix-bot run --config PATH` in a subprocess, its output in a log file."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None):
        self.config, self.log = config, log
        self.extra_env = env or {}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Daemon:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PLANFIX_", "TELEGRAM_"))}
        env.update(self.extra_env)
        self._out = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            *planfix_bot_command(), "run", "--config", str(self.config),
            stdout=self._out, stderr=asyncio.subprocess.STDOUT, env=env,
        )
        return self

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            self._out.close()
        return code

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


async def wait_until(condition: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
