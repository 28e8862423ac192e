"""Delivery end to end: `planfix-bot run` as a subprocess, fake Planfix and fake Telegram over loopback HTTP.

Each test runs one daemon (two for the crash test) and puts several failure modes or features side by side, one
per chat, because a daemon start costs seconds: every chat is its own route and gets its own injected fault.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.fakes.telegram import FakeTelegram
from tests.e2e import Daemon, daemon_config, wait_polls, wait_until, write_config

ADMIN = 900
CYRIL = 12  # a Planfix user nobody in Telegram is linked to: the one who changes things
LINKED_601 = 60


def outbox(state: Path) -> list[dict]:
    """The daemon's outbox rows, read beside the running daemon (WAL allows a reader)."""
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(
            "SELECT o.id, o.event_key, o.chat_id, o.status, o.attempts, o.last_error, o.not_before, o.message_id "
            "FROM outbox o ORDER BY o.id")]


def chat_active(state: Path, chat_id: int) -> bool | None:
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as db:
        row = db.execute("SELECT active FROM chats WHERE chat_id = ?", [chat_id]).fetchone()
    return None if row is None else bool(row[0])


def sends_to(tg: FakeTelegram, chat_id: int) -> int:
    return sum(1 for c in tg.calls_of("sendMessage") if c.get("chat_id") == chat_id)


def clean_log(daemon: Daemon) -> None:
    log = daemon.output()
    assert "Traceback" not in log, log[-3000:]


# ── one daemon: every failure mode, noise control, button, silence ───────────────────────────────────────────

BLOCKED, KICKED, DEACTIVATED, CANT_INITIATE = 601, -602, 603, 604
NOT_FOUND, NO_RIGHTS = 605, -606
MIGRATED, SUPERGROUP = -607, -1000000000607
PARSE, TOO_LONG = 608, 609
HTTP500, BAD_GATEWAY, DROPPED = 610, 611, 612
RATE, LONG_WAIT, HUNG, UNKNOWN = 613, 614, 615, 616
TEAM, QUIET, QUIET_URGENT, SILENT = -701, -702, -703, -704
ANNA_TG, BORIS_TG = 501, 502
ANNA, BORIS = 10, 11
DEAD = {
    BLOCKED: "Forbidden: bot was blocked by the user",
    KICKED: "Forbidden: bot was kicked from the group chat",
    DEACTIVATED: "Forbidden: user is deactivated",
    CANT_INITIATE: "Forbidden: bot can't initiate conversation with a user",
    NOT_FOUND: "Bad Request: chat not found",
    NO_RIGHTS: "Bad Request: have no rights to send a message",
}
FAULTY = [MIGRATED, PARSE, TOO_LONG, HTTP500, BAD_GATEWAY, DROPPED, RATE, LONG_WAIT, HUNG, UNKNOWN]


def window_around_now() -> tuple[str, datetime]:
    """A quiet-hours window in UTC that contains now (it may cross midnight), and when it ends."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    return f"{start:%H:%M}-{end:%H:%M}", end


def inject_failures(tg: FakeTelegram) -> None:
    """One failure mode per chat (TELEGRAM.md §2), each in the shape Telegram answers it."""
    for chat, description in DEAD.items():
        if description.startswith("Forbidden"):
            tg.block(chat, description)
        else:
            tg.inject_error(400, description, chat_id=chat, times=1000)
    tg.inject_migrate(MIGRATED, SUPERGROUP)
    tg.inject_error(400, "Bad Request: can't parse entities: Unsupported start tag \"x\" at byte offset 0",
                    chat_id=PARSE)
    tg.inject_error(400, "Bad Request: message is too long", chat_id=TOO_LONG, times=2)
    tg.inject_fault("http500", chat_id=HTTP500)
    tg.inject_fault("bad_gateway", chat_id=BAD_GATEWAY)
    tg.inject_fault("drop", chat_id=DROPPED)
    tg.inject_retry_after(2, chat_id=RATE)
    tg.inject_retry_after(4, chat_id=LONG_WAIT)
    tg.inject_fault("hang", seconds=3, chat_id=HUNG)
    tg.inject_error(400, "Bad Request: something nobody has seen before", chat_id=UNKNOWN)


async def test_failure_modes_and_noise_control_end_to_end(fakes, tmp_path):
    """One daemon, a chat per behaviour. Failures: dead chats (403 blocked / kicked / deactivated / can't
    initiate, 400 not found / no rights) go inactive with one admin notice each and get nothing more until
    /start; a migrated group is followed and routed to its new id; a parse error arrives as plain text, "too
    long" cut; 500 / 502 / dropped connections / a timeout are retried; 429 waits without spending an attempt and
    a long one is reported; an unknown refusal is given up and reported; none of it holds up a healthy chat.
    Noise: a second change of a task edits its message in place (button kept); quiet hours defer to the window's
    end in the route's zone, an urgent task bypasses them where allowed; a silent route is silent; the person who
    made a change is not told about it."""
    pf, tg = fakes
    for user, name in ((ANNA, "Anna"), (BORIS, "Boris"), (CYRIL, "Cyril")):
        pf.add_user(user, name)
    release = [pf.add_task(title=f"Release <{n}> & notes", owner=CYRIL, workers=(CYRIL,)) for n in range(3)]
    coalesced = pf.add_task(title="Coalesce me", owner=ANNA, workers=(BORIS,))
    urgent = pf.add_task(title="Server down", owner=CYRIL, workers=(CYRIL,), importance="HIGH")
    quiet_hours, quiet_end = window_around_now()
    state = tmp_path / "state.sqlite3"
    config = write_config(tmp_path / "config.toml", daemon_config(
        tmp_path, pf, tg,
        users=[{"telegram_id": ANNA_TG, "planfix_id": ANNA}, {"telegram_id": BORIS_TG, "planfix_id": BORIS},
               {"telegram_id": BLOCKED, "planfix_id": LINKED_601}],
        routes=[*({"chat_id": chat} for chat in [*DEAD, *FAULTY, TEAM]),
                {"chat_id": QUIET, "quiet_hours": quiet_hours, "timezone": "UTC"},
                {"chat_id": QUIET_URGENT, "quiet_hours": quiet_hours, "timezone": "UTC",
                 "urgent_bypasses_quiet_hours": True},
                {"chat_id": SILENT, "silent": True}],
        delivery={"send_timeout_seconds": 1.5, "long_wait_alert_seconds": 3, "coalesce_seconds": 30},
    ))
    inject_failures(tg)
    daemon = await Daemon(config, tmp_path / "daemon.log").start()
    try:
        await wait_polls(pf, 2, timeout=30)  # the creation actions are read and settled before the first change
        pf.change_status(release[0].id, 2, by=CYRIL)
        pf.change_status(coalesced.id, 2, by=ANNA)
        changed = time.monotonic()
        first = await wait_for_title(tg, TEAM, "Coalesce me")
        pf.change_status(coalesced.id, 3, by=ANNA)  # within coalesce_seconds of the first: an edit
        await wait_until(lambda: all(titled(tg, c, "Release <0>") for c in [*FAULTY, TEAM] if c not in
                                     (MIGRATED, UNKNOWN)) and titled(tg, SUPERGROUP, "Release <0>"),
                         timeout=30, what="round 1 delivered to every live chat")

        # A hung chat and retries never held up the healthy one; a timed-out send arrives at most twice.
        healthy = titled(tg, TEAM, "Release <0>")[0]
        hung = titled(tg, HUNG, "Release <0>")
        assert healthy.at < hung[-1].at and healthy.at - changed < 3
        assert 1 <= len(hung) <= 2, "a timed-out send may arrive twice (at-least-once), never more"
        # Dead chats: inactive, rows given up with the reason.
        await wait_until(lambda: all(chat_active(state, c) is False for c in DEAD), timeout=10, what="dead chats")
        rows = outbox(state)
        for chat, description in DEAD.items():
            assert {r["status"] for r in rows if r["chat_id"] == chat} == {"failed"}
            assert all(description in r["last_error"] for r in rows if r["chat_id"] == chat)
        # Migration: followed to the new id.
        assert sends_to(tg, MIGRATED) == 1 and not tg.messages_to(MIGRATED)
        # Parse error → the same text without markup; too long → cut plain text; both keep the button.
        for chat in (PARSE, TOO_LONG):
            [message] = titled(tg, chat, "Release <0>")
            assert message.parse_mode is None
            assert message.reply_markup["inline_keyboard"][0][0]["url"].endswith(f"/task/{release[0].general}")
        # Transient failures: retried with back-off (an attempt counted); 429: no attempt counted.
        by_chat = {r["chat_id"]: r for r in rows if r["event_key"] == rows_for(rows, SUPERGROUP)[0]["event_key"]}
        for chat in (HTTP500, BAD_GATEWAY, DROPPED):
            assert by_chat[chat]["status"] == "delivered" and by_chat[chat]["attempts"] == 1
        assert by_chat[RATE]["attempts"] == 0 and titled(tg, RATE, "Release <0>")[0].at - changed >= 2
        assert by_chat[LONG_WAIT]["attempts"] == 0
        assert by_chat[UNKNOWN]["status"] == "failed" and "nobody has seen" in by_chat[UNKNOWN]["last_error"]
        # Admins: once per dead chat, the long wait, the given-up row (raised together, folded into few messages).
        def notices() -> list[str]:
            return [n for m in tg.messages_to(ADMIN) for n in m.plain_text.split("\n\n")]

        await wait_until(lambda: len(notices()) >= len(DEAD) + 2, timeout=45, what="admin notices")
        for chat in DEAD:
            assert sum(n.startswith(f"⚠️ Chat {chat} no longer accepts") for n in notices()) == 1, notices()
        assert any("wait 4 s" in n and str(LONG_WAIT) in n for n in notices()), notices()
        assert any("nobody has seen" in n and str(UNKNOWN) in n for n in notices()), notices()
        assert len(tg.messages_to(ADMIN)) < len(notices())

        # Round 2: dead chats get nothing (not even a try), the new group id is addressed directly, the chat whose
        # row was given up gets the next one; the urgent task passes the quiet hours where allowed.
        calls_before = {chat: sends_to(tg, chat) for chat in [*DEAD, MIGRATED]}
        pf.change_status(release[1].id, 2, by=CYRIL)
        pf.change_status(urgent.id, 2, by=CYRIL)
        await wait_until(lambda: all(titled(tg, c, "Release <1>") for c in (TEAM, SUPERGROUP, UNKNOWN))
                         and titled(tg, QUIET_URGENT, "Server down"), timeout=45, what="round 2")
        await wait_polls(pf, 1)
        assert {chat: sends_to(tg, chat) for chat in [*DEAD, MIGRATED]} == calls_before

        # Coalescing: one message for the two quick changes, edited in place with its button.
        team_coalesced = titled(tg, TEAM, "Coalesce me")
        assert [m.edited for m in team_coalesced] == [False, True] and team_coalesced[1].message_id == first.message_id
        shown = tg.message(TEAM, first.message_id)
        assert shown["text"].count("Status:") == 2 and "Changed by: Anna" in shown["text"]
        assert shown["reply_markup"]["inline_keyboard"][0][0]["url"].endswith(f"/task/{coalesced.general}")
        # Quiet hours: nothing in QUIET, its rows wait for the end of the window (UTC, the route's zone);
        # QUIET_URGENT got only the urgent task.
        assert tg.messages_to(QUIET) == []
        quiet_rows = rows_for(outbox(state), QUIET)
        assert len(quiet_rows) == 5 and {r["status"] for r in quiet_rows} == {"pending"}
        assert all(abs(r["not_before"] - quiet_end.timestamp()) < 1 for r in quiet_rows)
        assert [m.plain_text.split("\n")[0] for m in tg.messages_to(QUIET_URGENT)] == [
            f"🔄 #{urgent.general} Server down"]
        # Silent route; personal notices never to the one who made the change.
        await wait_until(lambda: len([m for m in tg.messages_to(SILENT) if not m.edited]) >= 4, timeout=30,
                         what="round 2 in the silent chat")
        silent = [m for m in tg.messages_to(SILENT) if not m.edited]  # an edit makes no sound anyway
        assert len(silent) == 4 and all(m.disable_notification for m in silent)
        assert not any(m.disable_notification for m in tg.messages_to(TEAM))
        assert tg.messages_to(ANNA_TG) == [], "Anna made the change: she is not told"
        assert [m.edited for m in tg.messages_to(BORIS_TG)] == [False, True]
        # Every notification carries the "Open in Planfix" button.
        for message in tg.sent:
            if message.chat_id != ADMIN:
                [[button]] = message.reply_markup["inline_keyboard"]
                assert button["text"] == "Open in Planfix" and "/task/" in button["url"]

        # /start from the blocked user re-enables the chat: round 3 reaches it, and still not the others.
        tg.unblock(BLOCKED)
        tg.user_sends(chat_id=BLOCKED, user_id=BLOCKED, text="/start")
        await wait_until(lambda: chat_active(state, BLOCKED) is True, timeout=45, what="/start reactivation")
        pf.change_status(release[2].id, 2, by=CYRIL)
        await wait_until(lambda: titled(tg, BLOCKED, "Release <2>"), timeout=45, what="round 3 to the re-enabled chat")
        assert not titled(tg, KICKED, "Release <2>") and sends_to(tg, KICKED) == 1
    finally:
        assert await daemon.stop() == 0
    clean_log(daemon)


def titled(tg: FakeTelegram, chat_id: int, title: str) -> list:
    return [m for m in tg.messages_to(chat_id) if title in m.plain_text]


async def wait_for_title(tg: FakeTelegram, chat_id: int, title: str, timeout: float = 20):
    await wait_until(lambda: titled(tg, chat_id, title), timeout=timeout, what=f"{title!r} in {chat_id}")
    return titled(tg, chat_id, title)[0]


def rows_for(rows: list[dict], chat_id: int) -> list[dict]:
    return [r for r in rows if r["chat_id"] == chat_id]


# ── crash ────────────────────────────────────────────────────────────────────────────────────────────────────

CRASH_CHATS = list(range(801, 811))


async def test_kill_9_with_50_messages_queued_loses_none_and_repeats_only_those_in_flight(fakes, tmp_path):
    """kill -9 while 50 messages are queued and each chat's first send hangs in Telegram: after a restart every
    (event, chat) arrives; the only duplicates are the sends that were in flight at the kill, one per chat."""
    pf, tg = fakes
    pf.add_user(CYRIL, "Cyril")
    tasks = [pf.add_task(title=f"Crash {n}", owner=CYRIL, workers=(CYRIL,), status=1) for n in range(5)]
    state = tmp_path / "state.sqlite3"
    config = write_config(tmp_path / "config.toml", daemon_config(
        tmp_path, pf, tg, routes=[{"chat_id": chat} for chat in CRASH_CHATS],
    ))
    daemon = await Daemon(config, tmp_path / "daemon.log").start()
    await wait_polls(pf, 1, timeout=30)
    tg.inject_fault("hang", seconds=4, times=len(CRASH_CHATS))
    for task in tasks:
        pf.change_status(task.id, 2, by=CYRIL)
    try:
        await wait_until(lambda: tg.in_flight == len(CRASH_CHATS), timeout=45, what="one send in flight per chat")
    finally:
        await daemon.stop(signal.SIGKILL)
    in_flight_at_kill = tg.in_flight
    rows = outbox(state)
    assert len(rows) == 50 and Counter(r["status"] for r in rows) == {"pending": 50}

    daemon = await Daemon(config, tmp_path / "daemon.log").start()
    try:
        await wait_until(lambda: tg.in_flight == 0, timeout=10, what="the hung sends to finish at Telegram")
        await wait_until(lambda: all(r["status"] == "delivered" for r in outbox(state)), timeout=30,
                         what="every row delivered after the restart")
    finally:
        assert await daemon.stop() == 0
    per_chat_event = Counter((m.chat_id, m.plain_text.split("\n")[0]) for m in tg.sent if not m.edited)
    expected = {(chat, f"🔄 #{t.general} Crash {n}") for chat in CRASH_CHATS for n, t in enumerate(tasks)}
    assert set(per_chat_event) == expected, "nothing lost"
    duplicates = {key: n - 1 for key, n in per_chat_event.items() if n > 1}
    assert sum(duplicates.values()) <= in_flight_at_kill == len(CRASH_CHATS)
    assert all(n == 1 for n in duplicates.values()) and len({chat for chat, _ in duplicates}) == len(duplicates)
    clean_log(daemon)
