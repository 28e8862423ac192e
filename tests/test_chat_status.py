"""/status, /start, /help and the command menu at the dispatcher level."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.chat.commands import MENU, set_bot_commands
from tests.chat_harness import ADMIN_TG, ANNA_TG, ChatHarness


@pytest.fixture
async def h(tmp_path):
    async with ChatHarness(tmp_path) as harness:
        await harness.poll()
        yield harness


async def test_status_for_admins_shows_health_budget_outbox_and_inactive_chats(h):
    """/status shows version, uptime, last poll and lag, requests vs budget, outbox, inactive chats and why."""
    h.store.chats.set_chat_active(-100321, False, "Forbidden: bot was kicked from the group chat", datetime.now(UTC))
    [reply] = await h.send("/status", user=ADMIN_TG)
    text = reply.plain_text
    assert "planfix-bot 0.1.0" in text and "up " in text
    assert "Last successful poll:" in text and "s ago)" in text
    assert f"Planfix requests today: {h.client.budget.used - 0} of 20000" in text
    assert "Outbox: empty" in text
    assert "-100321 — Forbidden: bot was kicked" in text


async def test_status_is_for_bot_admins_only(h):
    """A linked user who is not a bot admin gets a one-line refusal from /status."""
    [reply] = await h.send("/status", user=ANNA_TG)
    assert reply.plain_text == "This command is for the bot's admins only."


async def test_start_shows_the_chat_id_and_re_enables_a_blocked_chat(h):
    """/start tells the chat id and marks a chat that had blocked the bot active again."""
    h.store.chats.set_chat_active(ANNA_TG, False, "Forbidden: bot was blocked by the user", datetime.now(UTC))
    [reply] = await h.send("/start")
    assert str(ANNA_TG) in reply.plain_text and "/my" in reply.plain_text
    assert h.store.chats.chat(ANNA_TG).active


async def test_command_menu_is_set_in_russian_and_english_and_failures_are_not_fatal(h):
    """setMyCommands: the default list plus a Russian and an English one; a Telegram error is only logged."""
    await set_bot_commands(h.bot, "ru")
    keys = sorted(h.tg.commands)
    assert len(keys) == 3 and any(k.endswith("|ru") for k in keys) and any(k.endswith("|en") for k in keys)
    english = next(v for k, v in h.tg.commands.items() if k.endswith("|en"))
    assert [c["command"] for c in english] == [c for c in MENU if c != "status"]
    assert english[0]["description"] == "my active tasks"
    h.tg.inject_error(500, "Internal Server Error", method="setMyCommands", times=5)
    await set_bot_commands(h.bot, "en")  # no exception


async def test_status_is_in_the_admins_menu_only(h):
    """/status is in each admin's private menu (a per-chat BotCommandScope, in every language) and in nobody
    else's; an admin who never wrote to the bot ("chat not found") gets theirs on /start, the others' are set."""
    await h.send("/help", user=ADMIN_TG)
    await h.send("/help", user=ANNA_TG)
    await set_bot_commands(h.bot, "en", admin_ids=[404404, ADMIN_TG])  # 404404 never wrote: refused, logged
    for language in ("", "en", "ru"):
        assert "status" in h.tg.menu_for(ADMIN_TG, language)
        assert "status" not in h.tg.menu_for(ANNA_TG, language) and "my" in h.tg.menu_for(ANNA_TG, language)
    assert "status" not in h.tg.menu_for(404404)
    h.tg.commands.clear()  # as if the admin had not written before start-up
    await h.send("/start", user=ADMIN_TG)
    assert "status" in h.tg.menu_for(ADMIN_TG, "ru") and "status" not in h.tg.menu_for(ANNA_TG)


async def test_status_counts_the_tasks_set_aside(h):
    """A task Planfix refuses to show (3002) is counted in /status with its id and code."""
    task = h.pf.add_task(title="Hidden soon", owner=1)
    await h.poll()
    h.pf.deny_access(task.id, "3002")
    h.pf.add_comment(task.id, "now hidden", by=1)
    await h.poll()
    [reply] = await h.send("/status", user=ADMIN_TG)
    assert f"Tasks set aside (Planfix does not show them: no access, a malformed card): 1, e.g. {task.id} (3002)" \
        in reply.plain_text


async def test_status_shows_a_first_start_or_catch_up_under_way(h):
    """While a long first start or catch-up runs, /status says how far it got (it commits as it goes)."""
    from datetime import timedelta

    from bot.watch.poller import CATCH_UP, FIRST_START, Progress

    h.poller.progress = Progress(FIRST_START, 12_300, 50_000)
    [reply] = await h.send("/status", user=ADMIN_TG)
    assert "First start: 12,300 of 50,000 tasks remembered" in reply.plain_text
    reached = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    h.poller.progress = Progress(CATCH_UP, 4_000, reached=reached, behind=timedelta(hours=50))
    [reply] = await h.send("/status", user=ADMIN_TG)
    assert "Catching up after downtime: 4,000 actions read, feed read up to 20.11 12:00 (2 d 2 h behind)" in (
        reply.plain_text)


async def _healthz(ctx) -> tuple[int, str, str]:
    """/healthz and /metrics over loopback HTTP, reading the same context /status reads."""
    from aiohttp.test_utils import TestClient, TestServer

    from bot.metrics import Metrics, Readings, make_app

    async with TestClient(TestServer(make_app(Metrics(Readings(status=ctx.daemon_status))))) as http:
        health = await http.get("/healthz")
        metrics = await http.get("/metrics")
        return health.status, await health.text(), await metrics.text()


async def test_status_healthz_metrics_and_systemd_line_agree_on_a_stale_poll(h):
    """One read-model of health (bot/health.py): a poll older than max(2 min, 3 × the current interval) makes
    /healthz 503, /metrics planfix_bot_healthy 0, the STATUS= line say stale AND /status say stale; a poll as late
    as a stretched interval meant it to be is fresh for all four (they used to disagree on the interval)."""
    from datetime import timedelta

    last = h.poller.last_success
    assert last is not None
    h.now = last + timedelta(minutes=10)  # 30 s interval: stale after 120 s
    code, body, metrics = await _healthz(h.ctx)
    assert code == 503 and "stale after 120 s" in body
    assert "planfix_bot_healthy 0.0" in metrics and "planfix_bot_feed_lag_seconds 600.0" in metrics
    assert "(stale)" in h.ctx.daemon_status().line()
    [reply] = await h.send("/status", user=ADMIN_TG)
    assert "Stale: no successful poll for longer than 2 min" in reply.plain_text
    assert not h.ctx.fresh()  # lists and cards go to Planfix by the same rule

    h.ctx.poll_interval = lambda: 300.0  # the pacer stretched the interval to save the budget: fresh for 15 min
    code, body, metrics = await _healthz(h.ctx)
    assert code == 200 and "planfix_bot_healthy 1.0" in metrics
    assert "(stale)" not in h.ctx.daemon_status().line() and h.ctx.fresh()
    [reply] = await h.send("/status", user=ADMIN_TG)
    assert "Stale" not in reply.plain_text and "Last successful poll:" in reply.plain_text


def test_importing_the_daemon_does_not_import_the_metrics_server():
    """prometheus_client and aiohttp.web load only when [metrics] listen is set (bot/app.py _serve_metrics)."""
    import subprocess
    import sys

    probe = "import sys, bot.app; print(sorted(m for m in ('prometheus_client', 'aiohttp.web', 'bot.metrics') " \
            "if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


async def test_a_crashing_handler_still_answers_and_logs_the_traceback(h, monkeypatch):
    """dp.errors: a handler that raises answers "something went wrong" in the chat's language (a button press, an
    alert), and the traceback is logged once; the next command works."""
    import structlog

    from bot.chat import status

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(status, "status_report", broken)
    with structlog.testing.capture_logs() as logs:
        [reply] = await h.send("/status", user=ADMIN_TG)
    assert reply.plain_text.startswith("Something went wrong.")
    [failed] = [e for e in logs if e["event"] == "chat.handler_failed"]
    assert isinstance(failed["exc_info"], RuntimeError) and "boom" in failed["error"]
    await h.send("/lang ru", user=ADMIN_TG)
    [reply] = await h.send("/status", user=ADMIN_TG)
    assert reply.plain_text.startswith("Что-то пошло не так.")
    monkeypatch.undo()
    [reply] = await h.send("/status", user=ADMIN_TG)
    assert "planfix-bot" in reply.plain_text


async def test_a_crashing_button_handler_still_answers_the_press(h, monkeypatch):
    """A button whose handler raises gets a "something went wrong" alert instead of a spinning button."""
    from bot.chat import commands

    [help_message] = await h.send("/help")

    def broken(lang):
        raise RuntimeError("boom")

    monkeypatch.setattr(commands, "texts", broken)  # the out-of-date-button handler now fails
    await h.press(help_message, "zz:garbage")
    assert h.last_alert().startswith("Something went wrong.")
