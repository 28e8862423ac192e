"""/task and its buttons at the dispatcher level: the card, its cost in Planfix requests, Refresh, Follow, Snooze,
busy Planfix, groups with @botname and forum topics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.events import OVERDUE, Event
from bot.watch.diff import baseline
from state.records import PollCommit, StoredSnapshot
from tests.chat_harness import ANNA, ANNA_TG, BORIS, BORIS_TG, CYRIL, ChatHarness, buttons


@pytest.fixture
async def h(tmp_path):
    async with ChatHarness(tmp_path) as harness:
        task = harness.pf.add_task(
            title="Launch <site> & \"co\"", owner=BORIS, workers=(ANNA,), auditors=(CYRIL,), project=(7, "Website"),
            deadline=datetime.now(UTC) + timedelta(hours=3, minutes=20), importance="HIGH",
        )
        harness.task = task
        await harness.poll()
        harness.pf.add_comment(task.id, "<p>Looks <b>good</b> &amp; <script>alert(1)</script> {log26}</p>", by=BORIS)
        harness.pf.change_status(task.id, 2, by=ANNA)
        await harness.poll()  # the feed reads the full card: auditors included
        yield harness


async def test_card_shows_every_field_and_the_latest_actions_rendered_safely(h):
    """The card shows every field, "in 3 hours", auditors and safely converted latest actions, with four buttons."""
    [card] = await h.send(f"/task {h.task.general}")
    text = card.plain_text
    for expected in ('Launch <site> & "co"', "Status: In progress", "❗ Importance: high", "Project: Website",
                     "(in 3 hours)", "Owner: Boris", "Assignees: Anna", "Auditors: Cyril", "Latest actions:",
                     "Looks good &", "status: New → In progress"):
        assert expected in text, (expected, text)
    assert "alert(1)" not in text and "{log26}" not in text and "<script>" not in card.text
    assert set(buttons(card)) == {"Open in Planfix", "🔄 Refresh", "🔔 Follow this task", "💤 Snooze 1 h"}
    assert buttons(card)["Open in Planfix"] == f"https://acme.planfix.com/task/{h.task.general}"


async def test_card_from_a_fresh_snapshot_costs_one_request_then_none(h):
    """The first /task reads only the latest actions (one action.getList, no task.get); a repeat costs nothing."""
    before = h.planfix_requests()
    await h.send(f"/task {h.task.general}")
    assert h.planfix_requests() - before == 1 and h.planfix_requests("task.get") == 0
    await h.send(f"/task {h.task.general}")
    assert h.planfix_requests() - before == 1


async def test_an_action_the_feed_saw_refreshes_the_cached_history(h):
    """After the feed sees a new comment, the next /task reads the history again and shows it."""
    await h.send(f"/task {h.task.general}")
    h.pf.add_comment(h.task.id, "Second thoughts", by=CYRIL)
    await h.poll()
    [card] = await h.send(f"/task {h.task.general}")
    assert "Second thoughts" in card.plain_text


async def test_overdue_deadline_reads_as_days_overdue(h):
    """A deadline two and a half days ago shows as "2 days overdue"."""
    h.pf.change_deadline(h.task.id, datetime.now(UTC) - timedelta(days=2, hours=12), by=BORIS)
    await h.poll()
    [card] = await h.send(f"/task {h.task.general}")
    assert "(2 days overdue)" in card.plain_text


async def test_refresh_edits_the_card_in_place_from_planfix(h):
    """Refresh reads Planfix (task.get + action.getList) and edits the same message with what it shows now."""
    [card] = await h.send(f"/task {h.task.general}")
    h.pf.edit_task_silently(h.task.id, title="Launch renamed")
    before = h.planfix_requests()
    [edited] = await h.press(card, buttons(card)["🔄 Refresh"])
    assert edited.edited and edited.message_id == card.message_id and "Launch renamed" in edited.plain_text
    assert h.planfix_requests() - before == 2 and h.last_alert() == "Refreshed"


async def test_follow_button_follows_and_becomes_unfollow(h):
    """Follow stores the follow for this chat and turns into Unfollow; Unfollow undoes it."""
    [card] = await h.send(f"/task {h.task.general}")
    [edited] = await h.press(card, buttons(card)["🔔 Follow this task"])
    assert h.prefs.is_following(ANNA_TG, h.task.id) and "🔕 Unfollow" in buttons(edited)
    assert "follows task" in h.last_alert()
    await h.press(card, buttons(edited)["🔕 Unfollow"])
    assert not h.prefs.is_following(ANNA_TG, h.task.id)


async def test_snooze_holds_reminders_and_overdue_of_that_task_for_an_hour(h):
    """Snooze 1 h: an overdue notice of this task for this chat waits an hour; other kinds and chats do not."""
    [card] = await h.send(f"/task {h.task.general}")
    await h.press(card, buttons(card)["💤 Snooze 1 h"])
    assert "wait until" in h.last_alert()
    now = datetime.now(UTC)
    overdue = Event(kind=OVERDUE, key="k", task_id=h.task.id, task_general=h.task.general, task_title="t",
                    occurred_at=now, participants=(ANNA,))
    held = h.audience.defer_until(ANNA_TG, overdue, now)
    assert held is not None and timedelta(minutes=59) < held - now <= timedelta(hours=1)
    rows = {r.chat_id: r for r in h.route(overdue, now)}
    assert rows[ANNA_TG].not_before == held and h.audience.defer_until(BORIS_TG, overdue, now) is None


async def test_snooze_in_a_group_needs_a_group_administrator(h):
    """In a group, Snooze (like Follow) is refused to members who are not its administrators."""
    group = -100999
    [card] = await h.send(f"/task {h.task.general}", chat=group)
    assert await h.press(card, buttons(card)["💤 Snooze 1 h"]) == []
    assert "administrators" in h.last_alert()
    h.tg.set_chat_admins(group, ANNA_TG)
    await h.press(card, buttons(card)["💤 Snooze 1 h"])
    assert h.prefs.snoozed_until(group, h.task.id, datetime.now(UTC)) is not None


async def test_busy_planfix_answers_try_again_never_silence(h):
    """Stale snapshots and a hanging or failing Planfix: /task and Refresh answer "try again", never nothing."""
    [card] = await h.send(f"/task {h.task.general}")
    h.poller.last_success = datetime.now(UTC) - timedelta(hours=1)
    h.ctx.interactive_timeout = 0.2
    h.pf.inject_fault("hang", method="task.get", seconds=0.4)
    [reply] = await h.send(f"/task {h.task.general}")
    assert "try again" in reply.plain_text
    h.pf.inject_fault("http500", method="task.get")
    assert await h.press(card, buttons(card)["🔄 Refresh"]) == []
    assert "try again" in h.last_alert()


async def test_history_failure_still_shows_the_card(h):
    """If action.getList fails, the card is still shown, saying the history is unavailable."""
    h.pf.inject_error("0011", method="action.getList")
    [card] = await h.send(f"/task {h.task.general}")
    assert "Launch" in card.plain_text and "history is not available" in card.plain_text


async def test_usage_and_unknown_numbers(h):
    """/task without a number explains itself; a number that does not exist is "not found"."""
    [usage] = await h.send("/task")
    assert "/task 1234" in usage.plain_text
    [missing] = await h.send("/task 424242")
    assert "#424242 was not found" in missing.plain_text


async def test_group_commands_with_bot_mention_and_forum_topic_replies(h):
    """/task@planfix_test_bot works in a group and answers in the same forum topic; /task@other_bot is ignored."""
    group = -100123
    [card] = await h.send(f"/task@planfix_test_bot {h.task.general}", chat=group, thread=77)
    assert card.chat_id == group and card.message_thread_id == 77 and "Launch" in card.plain_text
    assert await h.send(f"/task@other_bot {h.task.general}", chat=group, thread=77) == []


async def test_task_visible_to_an_auditor_unknown_to_the_list_snapshot(h):
    """An auditor the list-made snapshot does not know still gets the card, read from Planfix."""
    audited = h.pf.add_task(title="Audit me", owner=ANNA, workers=(ANNA,), auditors=(BORIS,),
                            deadline=h.pf.today() + timedelta(days=3))
    listed = next(t for t in await h.client.task_get_list() if t.id == audited.id)
    assert listed.auditors == ()  # task.getList items carry no auditors
    now = datetime.now(UTC)
    snap = baseline(listed, h.poller.statuses, now)
    h.store.commit_poll(PollCommit(now=now, snapshots=[StoredSnapshot(audited.id, 1, snap.to_data())]))
    [card] = await h.send(f"/task {audited.general}", user=BORIS_TG)
    assert "Audit me" in card.plain_text and h.planfix_requests("task.get") == 1
