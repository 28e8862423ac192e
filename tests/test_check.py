"""`planfix-bot check` against the fake Planfix and fake Telegram: one line per check, the fix for each failure,
exit 0 only when nothing failed."""

from __future__ import annotations

import asyncio
import logging

import pytest
import structlog

from bot.check import run_check
from bot.cli import main
from bot.config import parse_settings
from bot.fakes.planfix import FakePlanfix
from bot.fakes.telegram import FakeTelegram
from tests.e2e import write_config

CHECKS = ["endpoint", "data centre", "account", "auth", "rights", "time zone", "budget", "telegram"]


@pytest.fixture
async def fakes():
    pf, tg = FakePlanfix(account="acme"), FakeTelegram()
    await pf.start()
    await tg.start()
    pf.add_task(title="Something to look at")
    yield pf, tg
    await tg.stop()
    await pf.stop()


def config(pf: FakePlanfix, tg: FakeTelegram, **planfix: object) -> dict:
    return {
        "planfix": {"url": pf.url, "account": pf.account, "api_key": pf.api_key, "token": pf.token,
                    "requests_per_second": 50.0, "timeout_seconds": 3, **planfix},
        "telegram": {"token": tg.token, "api_base": tg.base_url, "admin_ids": [900]},
    }


async def check(raw: dict) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = await run_check(parse_settings(raw, environ={}), out=lines.append)
    return code, lines


def line(lines: list[str], name: str) -> str:
    return next(entry for entry in lines if entry.split(maxsplit=1)[1].startswith(name + ":"))


async def test_every_check_passes_against_healthy_fakes(fakes):
    """Endpoint, data centre, account, auth, rights, time zone, budget header and Telegram: one ok line each, exit 0."""
    pf, tg = fakes
    pf.rate_limit_remaining = 18_500
    code, lines = await check(config(pf, tg))
    assert code == 0, lines
    for name in CHECKS:
        assert line(lines, name).startswith("ok"), lines
    assert "Europe/Moscow" in line(lines, "time zone")
    assert "X-RateLimit-Remaining = " in line(lines, "budget")
    rights = line(lines, "rights")
    for method in ("task.getList", "task.getMulti", "task.get", "action.getListByPeriod", "taskStatus.getSetList"):
        assert method in rights
    assert lines[-1] == "all checks passed"


@pytest.mark.parametrize(
    ("inject", "failing", "fix"),
    [
        ("0024", "data centre", "https://apiru.planfix.ru/xml/"),
        ("0004", "account", "planfix.account"),
        ("0001", "auth", "planfix.api_key"),
        ("0022", "account", "free account"),
    ],
)
async def test_a_refusal_names_the_failing_check_and_its_fix(fakes, inject, failing, fix):
    """Each refusal of the first call is reported on its own check's line with what to do, and exits 1."""
    pf, tg = fakes
    pf.inject_error(inject, method="user.get")
    code, lines = await check(config(pf, tg))
    assert code == 1
    bad = line(lines, failing)
    assert bad.startswith("FAIL") and inject in bad and "— fix: " in bad and fix in bad, lines
    assert sum(entry.startswith("FAIL") for entry in lines) == 1 and line(lines, "telegram").startswith("ok")


async def test_a_wrong_token_fails_auth(fakes):
    """An unknown API token (0012) fails the auth check with a fix that names planfix.token."""
    pf, tg = fakes
    code, lines = await check(config(pf, tg, token="not-the-token"))
    assert code == 1 and line(lines, "auth").startswith("FAIL") and "planfix.token" in line(lines, "auth")


async def test_a_method_the_token_may_not_call_fails_rights(fakes):
    """0020 for one of the daemon's methods fails the rights check, naming that method and where to allow it."""
    pf, tg = fakes
    pf.inject_error("0020", method="action.getListByPeriod")
    code, lines = await check(config(pf, tg))
    rights = line(lines, "rights")
    assert code == 1 and rights.startswith("FAIL") and "allow action.getListByPeriod" in rights


async def test_unreachable_planfix_and_a_refused_bot_token_fail_with_fixes(fakes):
    """Nothing listening at planfix.url fails the endpoint check; a wrong bot token fails the Telegram check."""
    pf, tg = fakes
    raw = config(pf, tg, url="http://127.0.0.1:9/xml/")
    raw["telegram"]["token"] = "654321:WRONG"
    code, lines = await check(raw)
    assert code == 1
    assert line(lines, "endpoint").startswith("FAIL") and "planfix.url" in line(lines, "endpoint")
    assert line(lines, "telegram").startswith("FAIL") and "@BotFather" in line(lines, "telegram")


async def test_missing_time_zone_and_header_are_warnings_not_failures(fakes):
    """An API user without a time zone is a warning (UTC assumed); no budget header is fine (counted locally)."""
    pf, tg = fakes
    pf.users[1].timezone = ""
    pf._default_zone = "UTC"
    code, lines = await check(config(pf, tg))
    assert code == 0
    assert line(lines, "time zone").startswith("warn") and "— fix: " in line(lines, "time zone")
    assert "daily_request_budget = 20000" in line(lines, "budget")


@pytest.fixture
def restore_logging():
    """The CLI configures logging for the whole process; put it back for the tests that follow."""
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


async def test_the_command_line_prints_one_line_per_check_and_exits_non_zero_on_failure(fakes, tmp_path, capsys,
                                                                                       restore_logging):
    """`planfix-bot check --config PATH` (the CLI entry point, run in a thread with its own event loop): a line per
    check, skipped ones say so, and exit status 1 when one fails."""
    pf, tg = fakes
    path = write_config(tmp_path / "config.toml", config(pf, tg))
    pf.inject_error("0024", method="user.get")
    status = await asyncio.to_thread(main, ["check", "--config", str(path)])
    printed = capsys.readouterr().out.strip().splitlines()
    assert status == 1
    assert [entry.split(":")[0].split(maxsplit=1) for entry in printed[:-1]] == [
        ["ok", "endpoint"], ["FAIL", "data centre"], ["skip", "account"], ["skip", "auth"], ["ok", "telegram"],
    ]
    assert printed[-1] == "1 check(s) failed"


async def test_writes_are_checked_only_when_actions_are_enabled_and_post_nothing(fakes):
    pf, tg = fakes
    _, lines = await check(config(pf, tg))
    assert not any(entry.split(maxsplit=1)[1].startswith("writes:") for entry in lines)
    raw = {**config(pf, tg), "actions": {"enabled": True}}
    code, lines = await check(raw)
    assert code == 0 and line(lines, "writes").startswith("ok") and "nothing posted" in line(lines, "writes")
    assert len(pf.actions) == 1  # only the task's creation: the probe posted nothing
    pf.forbidden_methods.add("action.add")
    code, lines = await check(raw)
    assert code == 1 and line(lines, "writes").startswith("FAIL") and "actions.enabled = false" in line(lines, "writes")
