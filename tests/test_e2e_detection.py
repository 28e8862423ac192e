"""Detection end to end: the real daemon (as a `planfix-bot run` subprocess, or in-process via run_daemon) against
the fake Planfix and fake Telegram over loopback: a fault storm, a restart after downtime, a config error."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest

from bot.app import run_daemon
from bot.config import parse_settings
from bot.events import DIGEST, STATUS
from bot.fakes.planfix import FakePlanfix
from bot.fakes.telegram import FakeTelegram
from state.store import DELIVERED, Store
from tests.e2e import Daemon, count_requests, daemon_config, wait_polls, wait_until, write_config

TEAM = -100777
ANNA_TG, ADMIN_TG = 501, 900
ANNA, BORIS = 10, 11


@pytest.fixture
async def fakes():
    pf, tg = FakePlanfix(account="acme"), FakeTelegram()
    await pf.start()
    await tg.start()
    pf.add_user(ANNA, "Anna")
    pf.add_user(BORIS, "Boris")
    yield pf, tg
    await tg.stop()
    await pf.stop()


def detection_config(tmp_path, pf, tg, **poll):
    return daemon_config(
        tmp_path, pf, tg,
        planfix={"url": pf.url, "account": pf.account, "api_key": pf.api_key, "token": pf.token,
                 "web_url": "https://acme.planfix.com", "requests_per_second": 20.0, "timeout_seconds": 1,
                 "daily_request_budget": 1_000_000},  # polls every second all day: far more than a real plan
        poll={"interval_seconds": 1, "max_backoff_seconds": 1, "sweep_hours": 0, **poll},
        users=[{"telegram_id": ANNA_TG, "planfix_id": ANNA}],
        routes=[{"chat_id": TEAM}],
    )


def delivered_keys(path, chat_id: int) -> list[str]:
    store = Store.open(path)
    try:
        return [r["event_key"] for r in store.outbox.outbox_rows(chat_id) if r["status"] == DELIVERED]
    finally:
        store.close()


async def test_fault_storm_during_changes_the_daemon_stays_up_and_delivers_every_change(fakes, tmp_path):
    """0011 ×3, HTTP 500 ×3, a 40 s hang, truncated XML and a billion-laughs body hit `planfix-bot run` while five
    tasks change: it stays up, backs off, and afterwards each change is delivered exactly once."""
    pf, tg = fakes
    today = pf.today()
    tasks = [pf.add_task(title=f"Storm task {i}", owner=BORIS, deadline=today + timedelta(days=5)) for i in range(5)]
    config = write_config(tmp_path / "config.toml", detection_config(tmp_path, pf, tg))
    daemon = await Daemon(config, tmp_path / "daemon.log").start()
    try:
        await wait_polls(pf, 2, timeout=40)
        pf.inject_error("0011", times=3)
        pf.inject_fault("http500", times=3)
        pf.inject_fault("hang", seconds=40)
        pf.inject_fault("malformed")
        pf.inject_fault("billion_laughs")
        pf.change_status(tasks[0].id, 2, by=ANNA)
        pf.change_deadline(tasks[1].id, today + timedelta(days=9), by=ANNA)
        await wait_until(lambda: len(pf._injected) <= 3, 20, "half of the storm")
        pf.change_status(tasks[2].id, 4, by=ANNA)
        pf.change_deadline(tasks[3].id, None, by=ANNA)
        await wait_until(lambda: not pf._injected, 20, "the end of the storm")
        pf.change_status(tasks[4].id, 2, by=ANNA)
        await tg.wait_for_messages(5, chat_id=TEAM, timeout=30)
        await wait_polls(pf, 3, timeout=20)
        assert daemon.proc is not None and daemon.proc.returncode is None, "the daemon must stay up"
    finally:
        code = await daemon.stop()
    assert code == 0
    outcomes = {r.outcome for r in pf.requests}
    assert {"0011", "http500", "malformed", "billion_laughs"} <= outcomes
    team = [m.plain_text for m in tg.messages_to(TEAM)]
    for task in tasks:
        assert sum(task.title in text for text in team) == 1, team
    keys = delivered_keys(tmp_path / "state.sqlite3", TEAM)
    assert len(keys) == 5 and len(set(keys)) == 5
    log = daemon.output()
    assert "job.retry" in log and "Traceback" not in log, log[-3000:]


async def start_daemon(settings):
    stop = asyncio.Event()
    task = asyncio.create_task(run_daemon(settings, stop=stop))
    return stop, task


async def stop_daemon(stop: asyncio.Event, task: asyncio.Task) -> None:
    stop.set()
    assert await asyncio.wait_for(task, 20) == 0


async def test_restart_after_20_changes_while_down_reports_all_without_flood_or_duplicates(fakes, tmp_path):
    """The daemon is stopped, 20 changes are made, it starts again: the team chat gets one digest holding all 20
    (not 20 messages), Anna gets her two tasks' notices, and nothing is ever sent twice."""
    pf, tg = fakes
    tasks = [pf.add_task(title=f"Down task {i}", owner=ANNA if i < 2 else BORIS) for i in range(20)]
    settings = parse_settings(detection_config(tmp_path, pf, tg, catchup_digest_threshold=10), environ={})
    stop, task = await start_daemon(settings)
    await wait_polls(pf, 2)
    await stop_daemon(stop, task)
    for t in tasks:
        pf.change_status(t.id, 2, by=BORIS)
    stop, task = await start_daemon(settings)
    try:
        await tg.wait_for_messages(1, chat_id=TEAM, timeout=20)
        await tg.wait_for_messages(2, chat_id=ANNA_TG, timeout=20)
        await wait_polls(pf, 3)
    finally:
        await stop_daemon(stop, task)
    assert len(tg.messages_to(TEAM)) == 1 and len(tg.messages_to(ANNA_TG)) == 2
    store = Store.open(tmp_path / "state.sqlite3")
    try:
        [row] = store.outbox.outbox_rows(TEAM)
        assert row["status"] == DELIVERED and row["event_key"].startswith(DIGEST)
        payload = store.db.execute("SELECT payload FROM events WHERE key = ?", [row["event_key"]]).fetchone()[0]
        import json

        items = json.loads(payload)["payload"]["items"]
        assert sorted(i["task_id"] for i in items) == sorted(t.id for t in tasks)
        assert store.db.execute("SELECT count(*) FROM events WHERE kind = ?", [STATUS]).fetchone()[0] == 20
    finally:
        store.close()


async def test_config_error_stops_polling_tells_admins_once_and_commands_still_work(fakes, tmp_path):
    """A token Planfix refuses (0012) mid-run stops background polling with one admin notice; /task still answers."""
    pf, tg = fakes
    mine = pf.add_task(title="Anna's task", owner=ANNA, workers=(ANNA,))
    settings = parse_settings(detection_config(tmp_path, pf, tg), environ={})
    stop, task = await start_daemon(settings)
    try:
        await wait_polls(pf, 2)
        pf.inject_error("0012", method="action.getListByPeriod")
        [notice] = await tg.wait_for_messages(1, chat_id=ADMIN_TG, timeout=10)
        assert "planfix.token" in notice.plain_text
        polls = count_requests(pf, "action.getListByPeriod")
        tg.user_sends(chat_id=ANNA_TG, user_id=ANNA_TG, text=f"/task {mine.general}")
        [card] = await tg.wait_for_messages(1, chat_id=ANNA_TG, timeout=15)
        assert "Anna's task" in card.plain_text
        await asyncio.sleep(1.5)  # a poll a second, if it still polled
        assert count_requests(pf, "action.getListByPeriod") == polls and len(tg.messages_to(ADMIN_TG)) == 1
    finally:
        with contextlib.suppress(Exception):
            await stop_daemon(stop, task)
