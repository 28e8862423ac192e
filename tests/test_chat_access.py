"""Visibility, tried hard: strangers, other people's tasks, forged and stale button data, /find, subscriptions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.chat.access import Viewer, may_see
from bot.watch.diff import Snapshot
from tests.chat_harness import ADMIN_TG, ANNA, ANNA_TG, BORIS, BORIS_TG, CYRIL, STRANGER_TG, ChatHarness, buttons

SECRET = "Anna's secret merger"


@pytest.fixture
async def h(tmp_path):
    async with ChatHarness(tmp_path) as harness:
        harness.secret = harness.pf.add_task(title=SECRET, owner=ANNA, workers=(ANNA,), project=(7, "Board"))
        harness.borises = harness.pf.add_task(title="Boris report", owner=BORIS, workers=(BORIS,), project=(7, "Board"))
        harness.pf.add_task(title="Cyril report", owner=CYRIL, workers=(CYRIL,))
        await harness.poll()
        yield harness


def test_may_see_is_one_rule_for_cards_snapshots_and_events():
    """Admins see everything; a linked user sees a task only if their Planfix id takes part; nobody else."""
    snap = Snapshot(task_id=1, general=5, title="T", status=1, status_name="New", is_active=True, participants=(ANNA,))
    assert may_see(Viewer(ANNA_TG, ANNA, False), snap)
    assert not may_see(Viewer(BORIS_TG, BORIS, False), snap)
    assert not may_see(Viewer(1, None, False), snap)
    assert may_see(Viewer(ADMIN_TG, None, True), snap)


async def test_stranger_gets_a_short_refusal_for_commands_and_buttons(h):
    """A stranger's command or button press gets only the refusal with their own id, nothing about the task."""
    [reply] = await h.send(f"/task {h.secret.general}", user=STRANGER_TG)
    assert "team members only" in reply.plain_text and str(STRANGER_TG) in reply.plain_text
    assert SECRET not in reply.plain_text and reply.reply_markup is None
    [card] = await h.send(f"/task {h.secret.general}", user=ANNA_TG, chat=-100555, chat_type="supergroup")
    assert await h.press(card, f"t1:r:{h.secret.general}", user=STRANGER_TG) == []
    assert "team members only" in h.last_alert() and SECRET not in h.last_alert()
    assert await h.send("just chatting", user=STRANGER_TG) == [], "no refusal spam for non-commands"


async def test_someone_elses_task_reads_exactly_like_a_missing_one(h):
    """/task of a task Boris does not take part in gives the same words as a number that does not exist."""
    [hidden] = await h.send(f"/task {h.secret.general}", user=BORIS_TG)
    [missing] = await h.send("/task 999999", user=BORIS_TG)
    assert hidden.plain_text.replace(str(h.secret.general), "N") == missing.plain_text.replace("999999", "N")
    assert SECRET not in hidden.plain_text and hidden.reply_markup is None


async def test_forged_button_with_another_task_number_is_refused(h):
    """Boris's own card with Anna's task number forged into Refresh, Follow or Snooze: "not found", nothing changes."""
    [card] = await h.send(f"/task {h.borises.general}", user=BORIS_TG)
    for act in "rfz":
        assert await h.press(card, f"t1:{act}:{h.secret.general}", user=BORIS_TG) == []
        assert "not found" in h.last_alert() and SECRET not in h.last_alert()
    assert h.prefs.follows(BORIS_TG) == []
    assert h.prefs.snoozed_until(BORIS_TG, h.secret.id, datetime.now(UTC)) is None
    assert "Boris report" in (h.tg.message(BORIS_TG, card.message_id) or {}).get("text", "")


@pytest.mark.parametrize("data", ["garbage", "t0:r:{n}", "t1:r:abc", "t1:x:{n}", "t1:r:{n}:extra", "l0:my:0:502:0",
                                  "l1:my:x:502:0", "t1:r:-{n}", "t1:r:99999999999999999999999",
                                  "l1:find:0:502:99999999999999999999"])
async def test_garbage_and_old_version_callback_data_get_out_of_date_and_no_data(h, data):
    """Unparseable, old-version, bad-field, negative or overflowing callback data: an alert, no message, no edit."""
    [card] = await h.send(f"/task {h.borises.general}", user=BORIS_TG)
    assert await h.press(card, data.format(n=h.secret.general), user=BORIS_TG) == []
    alert = h.last_alert()
    assert ("out of date" in alert or "not found" in alert) and SECRET not in alert


async def test_someone_elses_list_buttons_are_refused(h):
    """Only whoever asked may page a list: Boris pressing (or forging) Anna's ▶ gets an alert, never her list."""
    for n in range(12):
        h.pf.add_task(title=f"Anna chore {n}", owner=ANNA, workers=(ANNA,))
    h.poller.store.meta.set_meta("feed_cursor", h.poller.last_success.isoformat())
    await h.poll()
    await h.poll()  # the feed sees the new tasks (created after the baseline)
    [mine] = await h.send("/find chore", user=ANNA_TG, chat=-100555, chat_type="supergroup")
    forward = buttons(mine)["▶"]
    assert await h.press(mine, forward, user=BORIS_TG) == []
    assert "Someone else" in h.last_alert()
    forged = forward.replace(f":{ANNA_TG}:", f":{BORIS_TG}:")
    assert await h.press(mine, forged, user=BORIS_TG) == []
    assert "out of date" in h.last_alert()
    [edited] = await h.press(mine, forward, user=ANNA_TG)
    assert edited.edited and "page 2 of 2" in edited.plain_text


async def test_find_shows_only_tasks_the_viewer_may_see(h):
    """/find report: Boris sees his report only, an admin sees both reports; Anna's secret never shows for Boris."""
    [boris] = await h.send("/find report", user=BORIS_TG)
    assert "Boris report" in boris.plain_text and "Cyril report" not in boris.plain_text
    [nothing] = await h.send("/find secret merger", user=BORIS_TG)
    assert SECRET not in nothing.plain_text and "Nothing found" in nothing.plain_text
    [admin] = await h.send("/find report", user=ADMIN_TG)
    assert "Boris report" in admin.plain_text and "Cyril report" in admin.plain_text


async def test_subscription_in_a_private_chat_never_leaks_invisible_tasks(h):
    """Boris's private "every project" subscription brings his tasks' changes, never those of Anna's secret task."""
    await h.send("/subscribe", user=BORIS_TG)
    h.pf.change_status(h.secret.id, 2, by=ANNA)
    h.pf.change_status(h.borises.id, 2, by=ANNA)
    await h.poll()
    rows = h.store.outbox.outbox_rows(BORIS_TG)
    assert [r["event_key"].split(":")[1] for r in rows] == [str(h.borises.id)]


async def test_group_subscription_shows_only_what_its_creator_may_see(h):
    """Boris, an administrator of a (non-route) group, subscribes it: the group hears about Boris's tasks only."""
    group = -100888
    h.tg.set_chat_admins(group, BORIS_TG)
    [ok] = await h.send("/subscribe", user=BORIS_TG, chat=group)
    assert "subscribed" in ok.plain_text
    h.pf.change_status(h.secret.id, 2, by=ANNA)
    h.pf.change_status(h.borises.id, 2, by=ANNA)
    await h.poll()
    assert [r["event_key"].split(":")[1] for r in h.store.outbox.outbox_rows(group)] == [str(h.borises.id)]


async def test_follow_stops_delivering_when_the_follower_loses_sight_of_the_task(h):
    """Boris follows his task, then is taken off it: its next change does not reach him."""
    await h.send(f"/follow {h.borises.general}", user=BORIS_TG)
    h.pf.edit_task_silently(h.borises.id, owner=ANNA, workers=(ANNA,))
    h.pf.change_status(h.borises.id, 3, by=ANNA)
    await h.poll()
    assert h.store.outbox.outbox_rows(BORIS_TG) == []
