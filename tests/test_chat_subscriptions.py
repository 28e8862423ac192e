"""/follow, /unfollow, /subscribe, /unsubscribe, /subscriptions, /mute, /unmute, /lang at the dispatcher level, and
what routing makes of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.events import STATUS, Event, StatusMove
from bot.notify.compose import make_renderer
from tests.chat_harness import ADMIN_TG, ANNA, ANNA_TG, BORIS, BORIS_TG, TEAM, ChatHarness

GROUP = -100444  # a group that is not a [[routes]] chat


@pytest.fixture
async def h(tmp_path):
    async with ChatHarness(tmp_path) as harness:
        harness.site = harness.pf.add_task(title="Site task", owner=ANNA, workers=(BORIS,), project=(7, "Website"))
        harness.mobile = harness.pf.add_task(title="App task", owner=ANNA, workers=(BORIS,), project=(8, "Mobile"))
        await harness.poll()
        yield harness


def queued_tasks(h: ChatHarness, chat_id: int) -> list[int]:
    """Task ids of the events queued for a chat."""
    return [int(r["event_key"].split(":")[1]) for r in h.store.outbox.outbox_rows(chat_id)]


async def test_in_groups_only_chat_administrators_and_bot_admins_change_subscriptions(h):
    """A group member who is not its administrator is refused; its administrator and a bot admin are not."""
    [refused] = await h.send("/subscribe", user=ANNA_TG, chat=GROUP)
    assert "administrators" in refused.plain_text and h.prefs.subscriptions(GROUP) == []
    h.tg.set_chat_admins(GROUP, BORIS_TG)
    [ok] = await h.send("/subscribe", user=BORIS_TG, chat=GROUP)
    assert "every project" in ok.plain_text
    [admin] = await h.send("/unsubscribe", user=ADMIN_TG, chat=GROUP)
    assert "removed: 1" in admin.plain_text and h.prefs.subscriptions(GROUP) == []


async def test_project_subscription_by_name_with_kinds_drives_routing(h):
    """/subscribe Website status: the group gets project 7's status changes only, not deadlines, not others."""
    h.tg.set_chat_admins(GROUP, BORIS_TG)
    [ok] = await h.send("/subscribe website status", user=BORIS_TG, chat=GROUP)
    assert "project “Website”: status" in ok.plain_text
    h.pf.change_status(h.site.id, 2, by=ANNA)
    h.pf.change_status(h.mobile.id, 2, by=ANNA)
    h.pf.change_deadline(h.site.id, datetime.now(UTC) + timedelta(days=3), by=ANNA)
    await h.poll()
    rows = h.store.outbox.outbox_rows(GROUP)
    assert [r["event_key"].split(":")[0] for r in rows] == [STATUS] and queued_tasks(h, GROUP) == [h.site.id]
    [unknown] = await h.send("/subscribe Nonexistent", user=BORIS_TG, chat=GROUP)
    assert "No project" in unknown.plain_text


async def test_follow_routes_a_tasks_events_to_the_chat_until_unfollow(h):
    """An admin follows a task from their private chat: its changes reach them; after /unfollow they do not."""
    [ok] = await h.send(f"/follow {h.site.general}", user=ADMIN_TG)
    assert "now follows" in ok.plain_text
    [again] = await h.send(f"/follow #{h.site.general}", user=ADMIN_TG)
    assert "already follows" in again.plain_text
    h.pf.change_status(h.site.id, 2, by=ANNA)
    await h.poll()
    assert queued_tasks(h, ADMIN_TG) == [h.site.id]
    [off] = await h.send(f"/unfollow {h.site.general}", user=ADMIN_TG)
    assert "no longer follows" in off.plain_text
    h.pf.change_status(h.site.id, 3, by=ANNA)
    await h.poll()
    assert queued_tasks(h, ADMIN_TG) == [h.site.id]


async def test_nobody_hears_of_their_own_change_through_a_follow(h):
    """Boris follows a task and changes it himself: no message to Boris."""
    await h.send(f"/follow {h.site.general}", user=BORIS_TG)
    h.pf.change_status(h.site.id, 2, by=BORIS)
    await h.poll()
    assert queued_tasks(h, BORIS_TG) == []


async def test_one_message_per_chat_even_when_route_subscription_and_follow_overlap(h):
    """The route chat also subscribed and following: still one outbox row for it per change."""
    await h.send("/subscribe", user=ADMIN_TG, chat=TEAM)
    await h.send(f"/follow {h.site.general}", user=ADMIN_TG, chat=TEAM)
    h.pf.change_status(h.site.id, 2, by=ANNA)
    await h.poll()
    assert queued_tasks(h, TEAM) == [h.site.id]


async def test_subscriptions_lists_what_the_chat_gets(h):
    """/subscriptions names the subscriptions, the followed tasks, the mute and the language."""
    await h.send("/subscribe 7 status overdue", user=BORIS_TG)
    await h.send(f"/follow {h.mobile.general}", user=BORIS_TG)
    await h.send("/mute 2h", user=BORIS_TG)
    [reply] = await h.send("/subscriptions", user=BORIS_TG)
    text = reply.plain_text
    assert "project “Website”: status, overdue" in text and f"#{h.mobile.general} App task" in text
    assert "held until" in text and "language: en" in text


async def test_mute_defers_and_unmute_releases_without_losing_anything(h):
    """/mute 2h: a change for the chat is queued to wait until the mute ends; /unmute makes it due at once."""
    [muted] = await h.send("/mute 2h", user=BORIS_TG)
    assert "held until" in muted.plain_text
    h.pf.change_status(h.site.id, 2, by=ANNA)
    await h.poll()
    [row] = h.store.outbox.outbox_rows(BORIS_TG)

    def due(at: datetime) -> list[int]:
        return [r.id for r in h.store.outbox.due_outbox(at) if r.chat_id == BORIS_TG]

    now = datetime.now(UTC)
    assert due(now) == [] and due(now + timedelta(hours=2, minutes=1)) == [row["id"]]
    [unmuted] = await h.send("/unmute", user=BORIS_TG)
    assert "at once again" in unmuted.plain_text
    assert due(datetime.now(UTC) + timedelta(seconds=1)) == [row["id"]]


async def test_mute_applies_at_send_time_to_rows_queued_before_it(h):
    """A row queued before /mute is held by the sender's send-time check too (deferred, not dropped)."""
    from bot.notify.routing import send_time_deferral

    defer = send_time_deferral(h.settings.routes, lambda: h.settings.display_zone(), h.store.chats.chat_migrations,
                               audience=h.audience)
    event = Event(kind=STATUS, key="k", task_id=h.site.id, task_general=h.site.general, task_title="t",
                  occurred_at=datetime.now(UTC), participants=(BORIS,))
    assert defer(BORIS_TG, event, datetime.now(UTC)) is None
    await h.send("/mute 30m", user=BORIS_TG)
    held = defer(BORIS_TG, event, datetime.now(UTC))
    assert held is not None and timedelta(minutes=29) < held - datetime.now(UTC) <= timedelta(minutes=30)


@pytest.mark.parametrize("args", ["", "0m", "31d", "soon", "-5h"])
async def test_mute_needs_a_sensible_duration(h, args):
    """A missing, zero, too long or unreadable duration gets the usage line and mutes nothing."""
    [reply] = await h.send(f"/mute {args}".strip(), user=BORIS_TG)
    assert "/mute 30m" in reply.plain_text and h.prefs.muted_until(BORIS_TG, datetime.now(UTC)) is None


async def test_lang_switches_answers_and_notifications_of_that_chat_only(h):
    """/lang ru: that chat's answers and notifications are in Russian; other chats keep the display language."""
    [done] = await h.send("/lang ru", user=BORIS_TG)
    assert "русский" in done.plain_text
    [help_ru] = await h.send("/help", user=BORIS_TG)
    assert "Команды" in help_ru.plain_text
    [help_en] = await h.send("/help", user=ANNA_TG)
    assert "Commands" in help_en.plain_text
    render = make_renderer(h.settings, lambda: h.settings.display_zone(), h.store, language=h.audience.language)
    event = Event(kind=STATUS, key="k", task_id=1, task_general=5, task_title="T", occurred_at=datetime.now(UTC),
                  payload=StatusMove(None, None, "A", "B"))
    assert "Статус" in render([event], BORIS_TG).html and "Status" in render([event], ANNA_TG).html
    [usage] = await h.send("/lang de", user=BORIS_TG)
    assert "/lang ru" in usage.plain_text


async def test_a_group_that_became_a_supergroup_keeps_its_preferences(h):
    """Subscriptions made in a group follow it to its new supergroup id."""
    old, new = -4001, -1004001
    await h.send("/subscribe", user=ADMIN_TG, chat=old, chat_type="group")
    h.store.chats.migrate_chat(old, new, datetime.now(UTC))
    [reply] = await h.send("/subscriptions", user=ADMIN_TG, chat=new)
    assert "every project" in reply.plain_text and h.prefs.subscriptions(old) == []
