"""Comments reach the people on the task: what counts as a comment, who hears of it, how it reads, and the poll
that finds it (real HTTP against the fake Planfix)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.config import Route, UserLink
from bot.events import COMMENT, STATUS, Comment, Event, StatusMove
from bot.fakes.planfix import FakePlanfix
from bot.fakes.telegram_html import parse_telegram_html
from bot.notify.render import render_event, render_events
from bot.notify.routing import recipients
from bot.planfix.client import PlanfixClient
from bot.planfix.models import Action, DateChange, Deadline, PersonRef, ProjectRef, StatusChange, Task
from bot.watch.diff import NotComment, baseline, comment_events, comment_verdict
from bot.watch.poller import Poller
from state.records import DeliveryRow
from state.store import Store

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
MSK = ZoneInfo("Europe/Moscow")
WEB = "https://acme.planfix.ru"
ANNA, BORIS = PersonRef(10, "Anna"), PersonRef(11, "Boris")
TASK = Task(id=100, general=5001, title="Landing page", status=1, owner=ANNA, workers=(BORIS,),
            project=ProjectRef(7, "Site"))


def action(**fields) -> Action:
    values = dict(id=1, type="ACTION", task_id=100, at=NOW, owner=BORIS, description="Looks <b>good</b>")
    values.update(fields)
    return Action(**values)


# ── what counts as a comment ────────────────────────────────────────────────────────────────────────────────

@pytest.mark.parametrize(("fields", "verdict"), [
    ({}, None),
    ({"type": "COMMENT"}, None),
    ({"description": "", "files": ("plan.pdf",)}, None),
    ({"type": "TASKOVERDUED", "description": "{event21}"}, NotComment.SYSTEM),
    ({"type": "TASKCHANGED", "description": "{log26}"}, NotComment.SYSTEM),
    ({"status_change": StatusChange(1, 2)}, NotComment.CHANGE),
    ({"deadline_change": DateChange(None, Deadline(NOW))}, NotComment.CHANGE),
    ({"description": "{event23}<br/>{event24}: "}, NotComment.EMPTY),
    ({"description": "<p>&nbsp;</p>"}, NotComment.EMPTY),
    ({"task_id": 0}, NotComment.NO_TASK),
])
def test_what_is_a_comment(fields, verdict):
    """A person's text or files on a task is a comment; Planfix's records, changes and placeholders are not."""
    assert comment_verdict(action(**fields)) is verdict


def test_comment_events_carry_author_text_files_and_a_stable_key():
    """One event per comment of this task, oldest first, keyed by the action so a re-read is the same event."""
    snap = baseline(TASK, {}, NOW)
    actions = [action(id=3, at=NOW + timedelta(minutes=1), files=("a.png",)), action(id=2),
               action(id=4, task_id=999), action(id=5, type="TASKCHANGED", description="{log26}")]
    events = comment_events(snap, actions)
    assert [e.key for e in events] == ["comment:100:2", "comment:100:3"]
    first, second = events
    assert first.kind == COMMENT and first.actor_id == 11 and first.actor_name == "Boris"
    assert first.payload == Comment("Looks <b>good</b>") and first.action_id == 2
    assert second.payload.files == ("a.png",) and first.participants == (10, 11) and first.task_general == 5001
    assert Event.from_json(second.to_json()) == second


# ── who hears of it ─────────────────────────────────────────────────────────────────────────────────────────

def comment(**fields) -> Event:
    return dataclasses.replace(comment_events(baseline(TASK, {}, NOW), [action()])[0], **fields)


def test_a_comment_reaches_the_other_participants_not_its_author_and_routes_only_if_they_ask():
    users = [UserLink(telegram_id=100, planfix_id=10), UserLink(telegram_id=101, planfix_id=11),
             UserLink(telegram_id=102, planfix_id=12)]
    routes = [Route(chat_id=-1), Route(chat_id=-2, events=["status", "comment"])]
    assert [r.chat_id for r in recipients(comment(), routes, users)] == [-2, 100]
    # Anna's own comment (also one the bot posted for her: attributed to her) reaches Boris only.
    assert [r.chat_id for r in recipients(comment(actor_id=10, actor_name="Anna"), [], users)] == [101]


# ── how it reads ────────────────────────────────────────────────────────────────────────────────────────────

@pytest.mark.parametrize("lang", ["ru", "en"])
def test_a_comment_notice_shows_author_safe_text_cut_and_files(lang):
    hostile = "<script>alert(1)</script><p>Hi <b>team</b> &amp; <a href='/task/1'>see</a></p>" + "x" * 5000
    message = render_event(comment(payload=Comment(hostile, ("spec <v2>.pdf", "😀.png"))), lang=lang, tz=MSK,
                           web_url=WEB)
    visible = parse_telegram_html(message)  # raises if Telegram would refuse it
    assert "Boris" in visible and "Hi team & see" in visible and "alert" not in visible
    assert "spec <v2>.pdf, 😀.png" in visible
    assert "x" * 990 not in visible and len(visible) < 1400  # cut to a readable length
    assert "<blockquote>" in message


def test_comments_in_a_coalesced_message_are_one_line_each():
    status = dataclasses.replace(comment(), kind=STATUS, key="s", payload=StatusMove(1, 2, "New", "Done"))
    message = render_events([status, comment(payload=Comment("<p>one</p><p>two</p>"))], lang="en", tz=MSK, web_url=WEB)
    visible = parse_telegram_html(message)
    assert "Comment: one two" in visible and "Status: New → Done" in visible


# ── the poll finds it ───────────────────────────────────────────────────────────────────────────────────────

class Clock:
    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now


async def test_the_poll_announces_comments_once_with_files_and_not_system_actions(tmp_path):
    clock = Clock(datetime(2026, 11, 23, 9, 0, 30, tzinfo=UTC))
    pf = FakePlanfix(clock=clock)
    await pf.start()
    pf.add_user(10, "Anna")
    pf.add_user(11, "Boris")
    client = PlanfixClient(url=pf.url, account=pf.account, api_key=pf.api_key, token=pf.token,
                           requests_per_second=200, timeout=5)
    store = Store.open(tmp_path / "state.sqlite3")
    try:
        poller = Poller(client=client, store=store, route=lambda e, now: [DeliveryRow(e.key, -42)], clock=clock)
        task = pf.add_task(title="T", owner=10, workers=(11,))
        await poller.poll_once()
        clock.now += timedelta(seconds=30)
        pf.add_comment(task.id, "<p>Done, see the file</p>", by=11, files=["report.pdf"])
        pf.change_status(task.id, 2, by=11)
        pf.mark_overdue(task.id)
        clock.now += timedelta(seconds=30)
        result = await poller.poll_once()
        assert sorted(e.kind for e in result.events) == [COMMENT, STATUS]
        [note] = [e for e in result.events if e.kind == COMMENT]
        assert note.actor_id == 11 and note.payload.files == ("report.pdf",) and "Done" in note.payload.text
        assert note.participants == (10, 11)
        clock.now += timedelta(seconds=30)
        assert (await poller.poll_once()).events == []  # the overlap re-reads it: still once
    finally:
        await client.aclose()
        store.close()
        await pf.stop()
