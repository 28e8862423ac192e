"""The daily digest: due today and overdue, per route and per linked user, in the chat's language and zone, skipped
when empty, once a day even across restarts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.chat.digest import DailyDigest
from bot.events import Event
from bot.notify.compose import make_renderer
from state.prefs import Prefs
from tests.chat_harness import ANNA, ANNA_TG, BORIS, BORIS_TG, TEAM, ChatHarness

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
async def h(tmp_path):
    config = {
        "users": [{"telegram_id": ANNA_TG, "planfix_id": ANNA, "digest_at": "09:00", "timezone": "Europe/Berlin"},
                  {"telegram_id": BORIS_TG, "planfix_id": BORIS, "digest_at": "09:00"}],
        "routes": [{"chat_id": TEAM, "projects": [7], "digest_at": "08:30", "timezone": "Europe/Berlin"}],
    }
    async with ChatHarness(tmp_path, **config) as harness:
        real_now = datetime.now(UTC)
        harness.morning = real_now.astimezone(BERLIN).replace(hour=9, minute=5, second=0, microsecond=0)
        today = harness.morning.date()
        pf = harness.pf
        pf.add_task(title="Anna due today", owner=BORIS, workers=(ANNA,), project=(7, "Site"), deadline=today)
        pf.add_task(title="Anna overdue", owner=BORIS, workers=(ANNA,), project=(7, "Site"),
                    deadline=today - timedelta(days=3))
        pf.add_task(title="Anna later", owner=BORIS, workers=(ANNA,), project=(7, "Site"),
                    deadline=today + timedelta(days=5))
        pf.add_task(title="Anna elsewhere", owner=ANNA, workers=(ANNA,), project=(8, "Other"), deadline=today)
        await harness.poll()
        yield harness


def digest_for(h: ChatHarness, chat_id: int) -> Event | None:
    rows = h.store.outbox.outbox_rows(chat_id)
    if not rows:
        return None
    payload = h.store.db.execute("SELECT payload FROM events WHERE key = ?", [rows[-1]["event_key"]]).fetchone()[0]
    return Event.from_json(json.loads(payload))


async def test_user_digest_lists_overdue_and_due_today_in_the_chats_language_and_zone(h):
    """At 09:05 Berlin time Anna's digest holds her overdue and due-today tasks, in her chat's language (Russian)."""
    await h.send("/lang ru")
    h.now = h.morning
    assert await DailyDigest(h.ctx).step() >= 1
    event = digest_for(h, ANNA_TG)
    assert event is not None and event.payload.zone == "Europe/Berlin"
    assert [i["title"] for i in event.payload.items] == ["Anna overdue", "Anna due today", "Anna elsewhere"]
    render = make_renderer(h.settings, lambda: h.settings.display_zone(), h.store, language=h.audience.language)
    text = render([event], ANNA_TG).html
    assert "Задачи на" in text and "Просрочены" in text and "Anna later" not in text


async def test_digest_is_not_sent_before_digest_at(h):
    """At 08:59 in the user's zone nothing is queued for them."""
    h.now = h.morning.replace(hour=8, minute=59)
    await DailyDigest(h.ctx).step()
    assert digest_for(h, ANNA_TG) is None


async def test_route_digest_covers_its_projects_only(h):
    """The route's digest (08:30 Berlin, project 7) lists project 7's tasks only."""
    h.now = h.morning
    await DailyDigest(h.ctx).step()
    event = digest_for(h, TEAM)
    assert event is not None and {i["title"] for i in event.payload.items} == {"Anna overdue", "Anna due today"}


async def test_empty_digest_is_skipped_and_each_digest_goes_once_a_day_even_after_a_restart(h):
    """An empty digest is skipped; a digest goes once a day, also after a restart, and again the next day."""
    h.now = h.morning
    await DailyDigest(h.ctx).step()
    assert digest_for(h, BORIS_TG) is None
    assert len(h.store.outbox.outbox_rows(ANNA_TG)) == 1
    await DailyDigest(h.ctx).step()
    h.ctx.prefs = Prefs(h.store.db)
    h.now = h.morning + timedelta(hours=3)
    await DailyDigest(h.ctx).step()
    assert len(h.store.outbox.outbox_rows(ANNA_TG)) == 1
    h.now = h.morning + timedelta(days=1)
    await DailyDigest(h.ctx).step()
    assert len(h.store.outbox.outbox_rows(ANNA_TG)) == 2
