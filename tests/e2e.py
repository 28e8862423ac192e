"""Helpers for end-to-end tests: a config pointing at the fakes, and waiting for the daemon's polls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.fakes.harness import Daemon, planfix_bot_command, toml_value, wait_until, write_config
from bot.fakes.planfix import FakePlanfix
from bot.fakes.telegram import FakeTelegram

__all__ = ["Daemon", "daemon_config", "count_requests", "planfix_bot_command", "toml_value", "wait_polls",
           "wait_until", "write_config"]


def daemon_config(tmp: Path, pf: FakePlanfix, tg: FakeTelegram, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "planfix": {"url": pf.url, "account": pf.account, "api_key": pf.api_key, "token": pf.token,
                    "web_url": "https://acme.planfix.com", "requests_per_second": 20.0, "timeout_seconds": 5,
                    # A poll every second all day needs far more than a real plan's 20,000: without this the
                    # budget would (rightly) stretch the interval and the tests would wait for it.
                    "daily_request_budget": 1_000_000},
        "telegram": {"token": tg.token, "api_base": tg.base_url, "admin_ids": [900]},
        "state": {"path": str(tmp / "state.sqlite3")},
        "poll": {"interval_seconds": 1},
        "display": {"language": "en", "timezone": "Europe/Moscow"},
        "logging": {"level": "debug", "format": "json"},
    }
    for key, value in overrides.items():
        config[key] = value
    return config


def count_requests(pf: FakePlanfix, method: str) -> int:
    return sum(1 for r in pf.requests if r.method == method)


async def wait_polls(pf: FakePlanfix, n: int, timeout: float = 60) -> None:
    """Wait until the daemon has read the action feed `n` more times."""
    start = count_requests(pf, "action.getListByPeriod")
    await wait_until(lambda: count_requests(pf, "action.getListByPeriod") >= start + n, timeout,
                     f"{n} more feed polls")
