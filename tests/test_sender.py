"""The sender against the fake Telegram over real HTTP: pacing, lanes per chat, every error class, coalescing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from aiogram import Bot

from bot.events import DIGEST, STATUS, Digest, Event, StatusMove
from bot.notify import render
from bot.notify.planfix_html import utf16_len
from bot.notify.sender import CUT_UNITS, MAX_ATTEMPTS, Limits, PriorityTurnstile, Rendered, Sender
from state.records import DeliveryRow, EventRow, PollCommit
from state.store import DELIVERED, FAILED, PENDING, SUPERSEDED, Store

WEB = "https://acme.planfix.com"
ADMIN = 900
ANNA, BORIS, CYRIL = 501, 502, 503
GROUP = -100777
FAST = Limits(global_per_second=200, private_per_second=50, group_per_minute=3000)


class Clock:
    """A settable clock for the store's times (rows due, back-off, quiet hours); real time when not set."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


def render_en(events: Sequence[Event], chat_id: int) -> Rendered:
    last = events[-1]
    url = render.task_url(WEB, last.task_general)
    html_text = render.render_events(list(events), lang="en", tz=UTC, web_url=WEB)  # type: ignore[arg-type]
    return Rendered(html_text, f'<b>#{last.task_general}</b> <a href="{url}">{url}</a>', url)


def make_sender(bot: Bot, store: Store, **kwargs) -> Sender:
    values = dict(bot=bot, store=store, render=render_en, admin_ids=[ADMIN], limits=FAST, send_timeout=5,
                  coalesce_window=timedelta(seconds=10))
    values.update(kwargs)
    return Sender(**values)


_serial = iter(range(1, 1_000_000))


def event(task: int = 1, kind: str = STATUS, new: str | None = None, **fields) -> Event:
    n = next(_serial)
    values = dict(kind=kind, key=f"{kind}:{task}:{n}", task_id=task, task_general=1000 + task,
                  task_title=f"Task <{task}> & co", occurred_at=datetime.now(UTC),
                  payload=StatusMove(None, None, "Open", new or f"State {n}"), actor_name="Anna")
    values.update(fields)
    return Event(**values)


def queue(store: Store, events: Sequence[Event], chats: Sequence[int], *, now: datetime | None = None,
          not_before: datetime | None = None) -> list[Event]:
    now = now or datetime.now(UTC)
    store.commit_poll(PollCommit(
        now=now,
        events=[EventRow(e.key, e.kind, e.task_id, e.to_json()) for e in events],
        deliveries=[DeliveryRow(e.key, chat, not_before) for e in events for chat in chats],
    ))
    return list(events)


def rows(store: Store, chat_id: int | None = None) -> list[dict]:
    return store.outbox.outbox_rows(chat_id)


# ── pacing and lanes ─────────────────────────────────────────────────────────────────────────────────────────


async def test_a_burst_to_one_chat_is_paced_by_its_bucket_not_rejected(fake, bot, store):
    """Six messages queued at once for one private chat go out in order, spaced by the per-chat bucket."""
    fake.strict_limits, fake.PER_CHAT_PER_SECOND, fake.PER_CHAT_BURST = True, 10.0, 2  # Telegram's rule, 10× faster
    queue(store, [event(task=i) for i in range(6)], [ANNA])
    sender = make_sender(bot, store, limits=Limits(global_per_second=200, private_per_second=10))
    await sender.drain()
    sent = fake.messages_to(ANNA)
    assert [m.plain_text.split("\n")[0] for m in sent] == [f"🔄 #{1000 + i} Task <{i}> & co" for i in range(6)]
    gaps = [b.at - a.at for a, b in zip(sent, sent[1:], strict=False)]
    assert min(gaps) >= 0.085, gaps
    assert fake.rate_limit_hits == 0


async def test_groups_get_twenty_in_any_sixty_seconds_and_every_chat_one_a_second():
    """Every chat gets 1/s; groups also at most 20 messages in any 60 s (a sliding window, issue 11; its pacing
    against a fake that counts the same way is in test_sender_limits.py)."""
    sender = Sender(bot=None, store=None, render=render_en)  # type: ignore[arg-type]
    group, private = sender.pacing.group_window(GROUP), sender.pacing.chat_limiter(ANNA)
    assert (group.limit, group.period) == (20, 60)
    assert (private.max_rate, private.time_period) == (1, 1)
    assert (sender.pacing.chat_limiter(GROUP).max_rate, sender.pacing.chat_limiter(GROUP).time_period) == (1, 1)


async def test_a_hung_chat_does_not_hold_up_the_others(fake, bot, store):
    """While a send to one chat hangs, other chats' messages go out; the hung one arrives when Telegram answers."""
    fake.inject_fault("hang", seconds=1.5, chat_id=ANNA)
    queue(store, [event(task=1)], [ANNA])
    queue(store, [event(task=i) for i in range(2, 5)], [BORIS])
    started = time.monotonic()
    await sender_drain(make_sender(bot, store))
    boris = fake.messages_to(BORIS)
    [anna] = fake.messages_to(ANNA)
    assert len(boris) == 3 and all(m.at - started < 1.0 for m in boris)
    assert anna.at - started >= 1.4


async def sender_drain(sender: Sender) -> Sender:
    await asyncio.wait_for(sender.drain(), 20)
    await asyncio.wait_for(sender.notices_sent(), 20)
    return sender


async def test_a_timeout_is_retried_and_may_repeat_only_that_message(fake, bot, store):
    """A send that times out is retried with back-off (at-least-once): it arrives, at most twice, nothing lost."""
    clock = Clock()
    fake.inject_fault("hang", seconds=1.5, chat_id=ANNA)
    [e] = queue(store, [event()], [ANNA])
    sender = make_sender(bot, store, send_timeout=1, clock=clock)
    await sender_drain(sender)
    [row] = rows(store, ANNA)
    assert row["status"] == PENDING and row["attempts"] == 1 and "timeout" in row["last_error"].lower()
    await asyncio.sleep(0.7)  # the fake finishes the hung request: Telegram did get the first copy
    clock.advance(10)
    await sender_drain(sender)
    assert rows(store, ANNA)[0]["status"] == DELIVERED
    assert 1 <= len(fake.messages_to(ANNA)) <= 2


# ── 429 ──────────────────────────────────────────────────────────────────────────────────────────────────────


async def test_429_waits_retry_after_for_that_chat_without_spending_an_attempt(fake, bot, store):
    """A 429 pauses only that chat for retry_after (+ jitter); the attempt is not counted; others go on."""
    fake.inject_retry_after(1, chat_id=ANNA)
    queue(store, [event(task=1), event(task=2)], [ANNA])
    queue(store, [event(task=3)], [BORIS])
    sender = make_sender(bot, store)
    started = time.monotonic()
    await sender_drain(sender)
    [anna_row, anna_next] = rows(store, ANNA)
    assert anna_row["status"] == PENDING and anna_row["attempts"] == 0 and "429" in anna_row["last_error"]
    assert anna_next["status"] == PENDING, "the chat's later rows wait behind the first (order kept)"
    assert len(fake.messages_to(BORIS)) == 1
    task = asyncio.create_task(sender.run())
    await fake.wait_for_messages(2, chat_id=ANNA, timeout=5)
    sender.stop()
    await task
    first, second = fake.messages_to(ANNA)
    assert first.at - started >= 1.1 and "#1001" in first.plain_text and "#1002" in second.plain_text
    assert sender.rate_limited == 1


async def test_429_for_several_chats_at_once_pauses_everything(fake, bot, store):
    """When three chats get 429 within two seconds the limit is global: no chat is sent to until it passes."""
    clock = Clock()
    for chat in (ANNA, BORIS, CYRIL):
        fake.inject_retry_after(30, chat_id=chat)
    queue(store, [event(task=1)], [ANNA, BORIS, CYRIL])
    sender = make_sender(bot, store, clock=clock)
    await sender_drain(sender)
    queue(store, [event(task=2)], [777])
    await sender_drain(sender)
    assert fake.messages_to(777) == [] and rows(store, 777)[0]["status"] == PENDING
    clock.advance(32)
    await sender_drain(sender)
    assert len(fake.messages_to(777)) == 1 and len(fake.messages_to(ANNA)) == 1


async def test_a_very_long_wait_is_reported_to_the_admins_once(fake, bot, store):
    """A retry_after at or above long_wait_alert tells the admins once per chat, however often it repeats."""
    fake.inject_retry_after(3600, chat_id=ANNA, times=2)
    queue(store, [event(task=1)], [ANNA])
    sender = make_sender(bot, store, long_wait_alert=300)
    [row] = store.outbox.due_outbox(datetime.now(UTC))
    assert await sender.deliver(row) is False
    assert await sender.deliver(row) is False
    await sender.notices_sent()
    notices = fake.messages_to(ADMIN)
    assert len(notices) == 1 and "3600" in notices[0].plain_text and str(ANNA) in notices[0].plain_text
    [stored] = rows(store, ANNA)
    assert stored["attempts"] == 0 and stored["status"] == PENDING


# ── chats that will not take messages ────────────────────────────────────────────────────────────────────────

DEAD = [
    (403, "Forbidden: bot was blocked by the user"),
    (403, "Forbidden: bot was kicked from the group chat"),
    (403, "Forbidden: user is deactivated"),
    (403, "Forbidden: bot can't initiate conversation with a user"),
    (403, "Forbidden: bot is not a member of the supergroup chat"),
    (400, "Bad Request: chat not found"),
    (400, "Bad Request: have no rights to send a message"),
    (400, "Bad Request: CHAT_WRITE_FORBIDDEN"),
]


@pytest.mark.parametrize(("code", "description"), DEAD)
async def test_a_dead_chat_is_marked_inactive_admins_told_once_and_start_revives_it(fake, bot, store, code,
                                                                                       description):
    """403 blocked/kicked/deactivated/can't initiate and 400 not found/no rights: the chat goes inactive, its rows
    are given up with the reason, the admins hear once, others are unaffected; reactivating it delivers again."""
    fake.inject_error(code, description, chat_id=ANNA, times=100)
    queue(store, [event(task=1), event(task=2)], [ANNA, BORIS])
    sender = make_sender(bot, store)
    await sender_drain(sender)
    queue(store, [event(task=3)], [ANNA])
    await sender_drain(sender)
    assert store.chats.chat(ANNA).active is False
    assert [r["status"] for r in rows(store, ANNA)] == [FAILED] * 3
    assert all(description in r["last_error"] for r in rows(store, ANNA))
    assert len([c for c in fake.calls_of("sendMessage") if c["chat_id"] == ANNA]) == 1, "nothing more sent there"
    [notice] = fake.messages_to(ADMIN)
    assert str(ANNA) in notice.plain_text and description in notice.plain_text
    assert len(fake.messages_to(BORIS)) == 2
    fake.clear_faults()
    store.chats.set_chat_active(ANNA, True, None, datetime.now(UTC))  # what /start in that chat does
    queue(store, [event(task=4)], [ANNA])
    await sender_drain(sender)
    assert len(fake.messages_to(ANNA)) == 1


async def test_a_migrated_group_is_followed_to_its_new_id(fake, bot, store):
    """400 migrate_to_chat_id: the mapping is stored, pending rows move to the new id and are sent there, a row
    whose twin is already queued for the new id is settled as superseded."""
    old, new = -5, -1005
    fake.inject_migrate(old, new)
    first, second, twin = event(task=1), event(task=2), event(task=3)
    queue(store, [first, second], [old])
    queue(store, [twin], [old, new])
    sender = make_sender(bot, store)
    await sender_drain(sender)
    assert store.chats.chat_migrations() == {old: new}
    assert sorted(m.plain_text.split("\n")[0] for m in fake.messages_to(new)) == [
        "🔄 #1001 Task <1> & co", "🔄 #1002 Task <2> & co", "🔄 #1003 Task <3> & co"
    ]
    statuses = {r["event_key"]: r["status"] for r in rows(store, old)}
    assert statuses == {twin.key: SUPERSEDED}
    assert fake.messages_to(old) == []


# ── what Telegram says about our text ────────────────────────────────────────────────────────────────────────


async def test_a_parse_error_resends_the_same_content_as_plain_text(fake, bot, store):
    """400 can't parse entities: the same visible text goes out without parse_mode, the button kept."""
    fake.inject_error(400, "Bad Request: can't parse entities: Unsupported start tag \"x\" at byte offset 3",
                      chat_id=ANNA)
    [e] = queue(store, [event()], [ANNA])
    await sender_drain(make_sender(bot, store))
    [message] = fake.messages_to(ANNA)
    expected = render.render_events([e], lang="en", tz=UTC, web_url=WEB)  # type: ignore[arg-type]
    from bot.fakes.telegram_html import parse_telegram_html

    assert message.parse_mode is None and message.plain_text == parse_telegram_html(expected)
    assert message.reply_markup["inline_keyboard"][0][0]["url"] == f"{WEB}/task/1001"
    assert rows(store, ANNA)[0]["status"] == DELIVERED


async def test_a_message_telegram_calls_too_long_is_cut(fake, bot, store):
    """400 message is too long (twice): the text is cut to CUT_UNITS, and still arrives."""
    fake.inject_error(400, "Bad Request: message is too long", chat_id=ANNA, times=2)
    queue(store, [event(task_title="😀" * 290, new="x" * 90)], [ANNA])
    await sender_drain(make_sender(bot, store))
    [message] = fake.messages_to(ANNA)
    assert utf16_len(message.plain_text) <= CUT_UNITS and message.plain_text.startswith("🔄 #1001 😀")


async def test_an_unknown_refusal_is_given_up_with_the_reason_and_the_queue_goes_on(fake, bot, store):
    """A 400 we cannot classify gives that row up (reason stored, admins told) and the chat's next row is sent."""
    fake.inject_error(400, "Bad Request: something new", chat_id=ANNA)
    queue(store, [event(task=1), event(task=2)], [ANNA])
    await sender_drain(make_sender(bot, store))
    first, second = rows(store, ANNA)
    assert first["status"] == FAILED and "something new" in first["last_error"]
    assert second["status"] == DELIVERED
    [notice] = fake.messages_to(ADMIN)
    assert "something new" in notice.plain_text
    assert store.outbox.outbox_problems()[0]["id"] == first["id"]


@pytest.mark.parametrize("fault", ["http500", "bad_gateway", "drop"])
async def test_network_errors_and_5xx_are_retried_with_back_off(fake, bot, store, fault):
    """A 500, a 502 with an HTML body, or a dropped connection: the row waits with its reason, then arrives."""
    clock = Clock()
    fake.inject_fault(fault, chat_id=ANNA)
    queue(store, [event()], [ANNA])
    sender = make_sender(bot, store, clock=clock)
    await sender_drain(sender)
    [row] = rows(store, ANNA)
    assert row["status"] == PENDING and row["attempts"] == 1 and row["last_error"].startswith("transient")
    assert store.outbox.outbox_problems()[0]["id"] == row["id"]
    clock.advance(0.5)
    await sender_drain(sender)
    assert fake.messages_to(ANNA) == [], "back-off: not retried at once"
    clock.advance(5)
    await sender_drain(sender)
    assert len(fake.messages_to(ANNA)) == 1 and rows(store, ANNA)[0]["status"] == DELIVERED


async def test_back_off_grows_and_the_admins_hear_when_a_chat_is_stuck(fake, bot, store):
    """Repeated transient failures double the wait, and after STUCK_NOTICE_ATTEMPTS the admins are told once."""
    clock = Clock()
    fake.inject_fault("http500", chat_id=ANNA, times=100)
    queue(store, [event()], [ANNA])
    sender = make_sender(bot, store, clock=clock)
    waits = []
    for _ in range(9):
        before = clock()
        await sender_drain(sender)
        due = store.outbox.outbox_problems()[0]["not_before"]
        waits.append((due - before).total_seconds())
        clock.advance(waits[-1] + 0.01)
    assert all(b > a for a, b in zip(waits[:6], waits[1:7], strict=False)), waits
    [notice] = fake.messages_to(ADMIN)
    assert "delayed" in notice.plain_text and str(ANNA) in notice.plain_text


async def test_a_row_that_crashes_the_renderer_costs_only_itself(fake, bot, store):
    """A bug while rendering one row backs that row off and gives it up after MAX_ATTEMPTS; other rows go out."""
    clock = Clock()
    bad = event(task=1)

    def fragile(events, chat_id):
        if events[-1].key == bad.key:
            raise RuntimeError("boom")
        return render_en(events, chat_id)

    queue(store, [bad], [ANNA])
    queue(store, [event(task=2)], [BORIS])
    sender = make_sender(bot, store, render=fragile, clock=clock)
    for _ in range(MAX_ATTEMPTS):
        await sender_drain(sender)
        clock.advance(100)
    assert len(fake.messages_to(BORIS)) == 1
    [row] = rows(store, ANNA)
    assert row["status"] == FAILED and "boom" in row["last_error"]


@pytest.mark.parametrize(("code", "description", "key"), [
    (401, "Unauthorized", "telegram.token"), (404, "Not Found", "telegram.api_base"),
])
async def test_a_wrong_token_or_address_keeps_everything_queued(fake, bot, store, code, description, key):
    """401/404: nothing is given up, the row waits (no attempt spent), sending pauses for every chat."""
    fake.inject_error(code, description, chat_id=ANNA)
    queue(store, [event()], [ANNA])
    sender = make_sender(bot, store)
    await sender_drain(sender)
    [row] = rows(store, ANNA)
    assert row["status"] == PENDING and row["attempts"] == 0 and key in row["last_error"]
    assert sender.pacing.global_pause is not None


# ── coalescing ───────────────────────────────────────────────────────────────────────────────────────────────


async def test_changes_within_the_window_edit_the_first_message_in_place(fake, bot, store):
    """The first change goes out at once; a second change of the same task queued within the window edits that
    message (button kept); a change after the window is a new message; other tasks are never merged."""
    t0 = datetime.now(UTC) - timedelta(minutes=1)
    sender = make_sender(bot, store)
    queue(store, [event(task=1, new="Doing")], [ANNA], now=t0)
    await sender_drain(sender)
    [first] = fake.messages_to(ANNA)
    queue(store, [event(task=1, new="Review", actor_name="Boris")], [ANNA], now=t0 + timedelta(seconds=4))
    queue(store, [event(task=2, new="Other")], [ANNA], now=t0 + timedelta(seconds=5))
    await sender_drain(sender)
    edits = [m for m in fake.messages_to(ANNA) if m.edited]
    assert len(edits) == 1 and edits[0].message_id == first.message_id
    shown = fake.message(ANNA, first.message_id)
    assert "Status: Open → Doing — Anna" in shown["text"] and "Status: Open → Review — Boris" in shown["text"]
    assert shown["reply_markup"]["inline_keyboard"][0][0]["url"] == f"{WEB}/task/1001"
    queue(store, [event(task=1, new="Done")], [ANNA], now=t0 + timedelta(seconds=11))
    await sender_drain(sender)
    new_messages = [m for m in fake.messages_to(ANNA) if not m.edited]
    assert len(new_messages) == 3 and "Done" in new_messages[-1].plain_text
    assert sender.sent == 3 and sender.edited == 1
    assert all(r["status"] == DELIVERED for r in rows(store, ANNA))


async def test_changes_queued_together_go_out_as_one_message(fake, bot, store):
    """Two changes of one task queued in the same poll become one message, both rows delivered with its id."""
    queue(store, [event(task=1, new="Doing"), event(task=1, new="Done")], [ANNA])
    await sender_drain(make_sender(bot, store))
    [message] = fake.messages_to(ANNA)
    assert "Doing" in message.plain_text and "Done" in message.plain_text
    assert {r["message_id"] for r in rows(store, ANNA)} == {message.message_id}


async def test_not_modified_counts_as_success_and_a_deleted_message_gets_a_new_one(fake, bot, store):
    """An edit answered "message is not modified" is delivered; one answered "message to edit not found" is
    sent as a new message instead."""
    t0 = datetime.now(UTC) - timedelta(minutes=1)
    sender = make_sender(bot, store)
    queue(store, [event(task=1)], [ANNA], now=t0)
    await sender_drain(sender)
    fake.inject_error(400, "Bad Request: message is not modified: specified new message content and reply markup "
                      "are exactly the same", chat_id=ANNA, method="editMessageText")
    queue(store, [event(task=1)], [ANNA], now=t0 + timedelta(seconds=1))
    await sender_drain(sender)
    assert rows(store, ANNA)[1]["status"] == DELIVERED and len(fake.sent) == 1
    fake.inject_error(400, "Bad Request: message to edit not found", chat_id=ANNA, method="editMessageText")
    queue(store, [event(task=1)], [ANNA], now=t0 + timedelta(seconds=2))
    await sender_drain(sender)
    assert [m.edited for m in fake.messages_to(ANNA)] == [False, False]
    assert all(r["status"] == DELIVERED for r in rows(store, ANNA))


async def test_digests_are_never_merged(fake, bot, store):
    """A digest is its own message even when queued next to a change of the same task id."""
    items = tuple(event(task=i).to_json() for i in range(3))
    digest = event(task=0, kind=DIGEST, payload=Digest("burst", items), task_general=0)
    queue(store, [digest, event(task=0)], [ANNA])
    await sender_drain(make_sender(bot, store))
    assert len(fake.messages_to(ANNA)) == 2


async def test_coalescing_can_be_switched_off(fake, bot, store):
    """coalesce_window = 0: every change is its own message."""
    queue(store, [event(task=1), event(task=1)], [ANNA])
    await sender_drain(make_sender(bot, store, coalesce_window=timedelta(0)))
    assert len(fake.messages_to(ANNA)) == 2


# ── quiet hours, silence, shutdown ───────────────────────────────────────────────────────────────────────────


async def test_a_row_due_inside_quiet_hours_is_deferred_to_their_end(fake, bot, store):
    """The send-time check moves a row that became due inside quiet hours to the window's end: never dropped."""
    end = datetime.now(UTC) + timedelta(hours=3)
    queue(store, [event(task=1)], [ANNA])
    sender = make_sender(bot, store, defer=lambda chat, e, now: end if chat == ANNA else None)
    await sender_drain(sender)
    [row] = rows(store, ANNA)
    assert fake.sent == [] and row["status"] == PENDING and row["last_error"] == "quiet hours"
    assert abs(store.outbox.next_outbox_time() - end) < timedelta(milliseconds=1)


async def test_silent_rendering_disables_the_notification(fake, bot, store):
    """A Rendered marked silent is sent with disable_notification."""

    def quiet(events, chat_id):
        r = render_en(events, chat_id)
        return Rendered(r.html, r.fallback_html, r.url, silent=True)

    queue(store, [event()], [ANNA])
    await sender_drain(make_sender(bot, store, render=quiet))
    assert fake.messages_to(ANNA)[0].disable_notification is True


async def test_stop_lets_the_send_in_flight_finish_and_record_it(fake, bot, store):
    """stop() during a slow send: the send completes and its row is marked delivered before run() returns."""
    fake.inject_fault("hang", seconds=0.5, chat_id=ANNA)
    queue(store, [event(task=1), event(task=2)], [ANNA])
    sender = make_sender(bot, store)
    task = asyncio.create_task(sender.run())
    await asyncio.sleep(0.2)
    assert fake.in_flight == 1
    sender.stop()
    await asyncio.wait_for(task, 5)
    assert [r["status"] for r in rows(store, ANNA)] == [DELIVERED, PENDING]


async def test_tell_admins_survives_an_admin_who_blocked_the_bot(fake, bot, store):
    """A notice to admins never raises, even if one admin blocked the bot; the others get it."""
    fake.block(ADMIN)
    sender = make_sender(bot, store, admin_ids=[ADMIN, 901])
    await sender.tell_admins("⚠️ <b>test</b>")
    assert fake.messages_to(ADMIN) == [] and fake.messages_to(901)[0].plain_text == "⚠️ test"


async def test_a_lanes_log_lines_carry_its_chat_and_row_but_an_admin_notice_does_not(fake, bot, store):
    """The lane binds chat and event_key once (structlog.contextvars); the admin notice it raises runs without
    them, so its lines are not filed under the chat that raised it."""
    fake.inject_error(400, "Bad Request: wrong file identifier", chat_id=ANNA)
    fake.block(ADMIN)
    [ev] = queue(store, [event()], [ANNA])
    sender = make_sender(bot, store)
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await sender.drain()
        await asyncio.wait_for(sender.notices_sent(), 20)
    [gave_up] = [e for e in logs if e["event"] == "telegram.gave_up"]
    assert (gave_up["chat"], gave_up["event_key"]) == (ANNA, ev.key)
    [notice_failed] = [e for e in logs if e["event"] == "telegram.admin_notice_failed"]
    assert "chat" not in notice_failed and "event_key" not in notice_failed
    assert structlog.contextvars.get_contextvars() == {}


# ── the turnstile in front of the global bucket ──────────────────────────────────────────────────────────────


async def test_the_turnstile_serves_the_longest_backlog_first_and_survives_cancellation():
    """Waiters pass one at a time, most urgent first; a waiter cancelled in the queue, or just as its turn
    came, never blocks the others."""
    gate = PriorityTurnstile()
    order: list[str] = []
    release = asyncio.Event()

    async def holder():
        async with gate.turn(0):
            await release.wait()

    async def waiter(name: str, urgency: float):
        async with gate.turn(urgency):
            order.append(name)

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(waiter(name, u)) for name, u in (("low", 1), ("high", 9), ("gone", 50), ("mid", 5))]
    await asyncio.sleep(0)
    tasks[2].cancel()
    release.set()
    await asyncio.gather(first, *tasks, return_exceptions=True)
    assert order == ["high", "mid", "low"]
    async with gate.turn(1):  # free again
        pass
