"""/my, /today, /overdue, /find at the dispatcher level: what is listed, in which order, paging, and cost."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.chat_harness import ADMIN_TG, ANNA, BORIS, BORIS_TG, ChatHarness, buttons

NOW = datetime.now(UTC)
LINE = re.compile(r"^\S+ #\d+ (.*?) · ")


async def fill(h: ChatHarness) -> None:
    """Baseline, then let the feed read every task's full card."""
    await h.poll()


@pytest.fixture
async def h(tmp_path):
    async with ChatHarness(tmp_path) as harness:
        yield harness


def titles(text: str) -> list[str]:
    """The task titles of a list message, in order."""
    return [m.group(1) for m in map(LINE.match, text.splitlines()) if m]


async def test_my_lists_active_assigned_tasks_overdue_first_then_by_deadline(h):
    """/my: active tasks assigned to me, overdue first, then by deadline, none last; not closed, not only owned."""
    pf = h.pf
    pf.add_task(title="No deadline", owner=BORIS, workers=(ANNA,))
    pf.add_task(title="Next week", owner=BORIS, workers=(ANNA,), deadline=NOW + timedelta(days=7))
    pf.add_task(title="Tomorrow", owner=BORIS, workers=(ANNA,), deadline=NOW + timedelta(days=1))
    pf.add_task(title="Late", owner=BORIS, workers=(ANNA,), deadline=NOW - timedelta(days=3))
    pf.add_task(title="Done already", owner=BORIS, workers=(ANNA,), status=3)  # a closed status
    pf.add_task(title="Only owned", owner=ANNA, workers=(BORIS,))
    await fill(h)
    [reply] = await h.send("/my")
    assert titles(reply.plain_text) == ["Late", "Tomorrow", "Next week", "No deadline"], reply.plain_text
    assert "(3 days overdue)" in reply.plain_text and "4 in all, page 1 of 1" in reply.plain_text
    assert reply.reply_markup is None


async def test_lists_page_by_ten_and_the_buttons_edit_in_place(h):
    """23 tasks: page 1 of 3 with ▶ only; ▶ edits the same message to page 2 with ◀ ▶; the last page has ◀ only."""
    for n in range(23):
        h.pf.add_task(title=f"Chore {n:02d}", owner=BORIS, workers=(ANNA,), deadline=NOW + timedelta(hours=n + 1))
    await fill(h)
    [first] = await h.send("/my")
    assert "page 1 of 3" in first.plain_text and len(titles(first.plain_text)) == 10
    assert list(buttons(first)) == ["▶"]
    [second] = await h.press(first, buttons(first)["▶"])
    assert second.edited and second.message_id == first.message_id
    assert "page 2 of 3" in second.plain_text and list(buttons(second)) == ["◀", "▶"]
    assert titles(second.plain_text)[0] == "Chore 10"
    [third] = await h.press(second, buttons(second)["▶"])
    assert "page 3 of 3" in third.plain_text and list(buttons(third)) == ["◀"] and len(titles(third.plain_text)) == 3
    [back] = await h.press(third, buttons(third)["◀"])
    assert "page 2 of 3" in back.plain_text


async def test_today_lists_only_tasks_due_today_in_the_chat_zone(h):
    """/today: due on today's date in the chat's zone (a date-only deadline counts by its date)."""
    zone = h.settings.display_zone("Europe/Moscow")
    today = NOW.astimezone(zone).date()
    h.pf.add_task(title="Date today", owner=BORIS, workers=(ANNA,), deadline=today)
    h.pf.add_task(title="Date tomorrow", owner=BORIS, workers=(ANNA,), deadline=today + timedelta(days=1))
    h.pf.add_task(title="Yesterday", owner=BORIS, workers=(ANNA,), deadline=today - timedelta(days=1))
    await fill(h)
    [reply] = await h.send("/today")
    assert titles(reply.plain_text) == ["Date today"], reply.plain_text


async def test_overdue_is_mine_for_users_and_everyones_for_admins(h):
    """/overdue: Anna sees her overdue tasks; an admin sees everyone's."""
    h.pf.add_task(title="Anna late", owner=BORIS, workers=(ANNA,), deadline=NOW - timedelta(hours=5))
    h.pf.add_task(title="Boris late", owner=ANNA, workers=(BORIS,), deadline=NOW - timedelta(hours=2))
    h.pf.add_task(title="Anna on time", owner=BORIS, workers=(ANNA,), deadline=NOW + timedelta(hours=2))
    await fill(h)
    [anna] = await h.send("/overdue")
    assert titles(anna.plain_text) == ["Anna late"]
    [admin] = await h.send("/overdue", user=ADMIN_TG)
    assert "everyone" in admin.plain_text and titles(admin.plain_text) == ["Anna late", "Boris late"]


async def test_find_matches_every_word_in_any_case_and_language(h):
    """/find: every word must occur in the title, case-insensitively, Cyrillic included; active tasks first."""
    h.pf.add_task(title="Квартальный ОТЧЁТ", owner=ANNA, workers=(ANNA,))
    h.pf.add_task(title="Годовой отчёт", owner=ANNA, workers=(ANNA,), status=3)
    h.pf.add_task(title="Квартальный план", owner=ANNA, workers=(ANNA,))
    await fill(h)
    [reply] = await h.send("/find отчёт")
    assert titles(reply.plain_text) == ["Квартальный ОТЧЁТ", "Годовой отчёт"]
    [both] = await h.send("/find квартал отчёт")
    assert titles(both.plain_text) == ["Квартальный ОТЧЁТ"]
    [usage] = await h.send("/find")
    assert "/find report" in usage.plain_text


async def test_lists_cost_no_planfix_request_while_the_feed_is_fresh(h):
    """/my, /today, /overdue, /find and paging read only the snapshots while the feed is fresh."""
    for n in range(12):
        h.pf.add_task(title=f"Item {n}", owner=BORIS, workers=(ANNA,), deadline=NOW - timedelta(hours=n + 1))
    await fill(h)
    before = h.planfix_requests()
    [my] = await h.send("/my")
    await h.press(my, buttons(my)["▶"])
    for command in ("/today", "/overdue", "/find item"):
        await h.send(command)
    assert h.planfix_requests() == before


async def test_stale_feed_rereads_the_page_and_says_how_old(h):
    """A stale feed: the page's tasks are re-read (one task.getMulti) with a note; Planfix down gives "try again"."""
    task = h.pf.add_task(title="Old name", owner=BORIS, workers=(ANNA,))
    await fill(h)
    h.pf.edit_task_silently(task.id, title="New name")
    h.poller.last_success = datetime.now(UTC) - timedelta(hours=2)
    [reply] = await h.send("/my")
    assert titles(reply.plain_text) == ["New name"] and "Planfix data as of" in reply.plain_text
    assert h.planfix_requests("task.getMulti") == 1
    h.pf.inject_error("0011", method="task.getMulti")
    [busy] = await h.send("/my")
    assert "try again" in busy.plain_text


async def test_my_for_an_admin_without_a_planfix_link_explains(h):
    """An admin not linked to a Planfix user gets an explanation for /my and /today, not an empty list."""
    await fill(h)
    [reply] = await h.send("/my", user=ADMIN_TG)
    assert "not linked" in reply.plain_text


async def test_empty_lists_say_so(h):
    """Nothing to list: one clear sentence, no buttons."""
    await fill(h)
    [reply] = await h.send("/overdue", user=BORIS_TG)
    assert reply.plain_text == "No overdue tasks." and reply.reply_markup is None


async def test_a_status_without_deadlines_keeps_its_tasks_out_of_overdue_and_today(h):
    """A task in «Rejected» (active, but hasDeadline=0 in Planfix) is neither overdue nor due today, though
    /my still lists it and its card still shows the date."""
    h.pf.add_task(title="Rejected late", owner=BORIS, workers=(ANNA,), status=6, deadline=NOW - timedelta(hours=5))
    h.pf.add_task(title="Open late", owner=BORIS, workers=(ANNA,), status=2, deadline=NOW - timedelta(hours=5))
    await fill(h)
    [overdue] = await h.send("/overdue")
    assert titles(overdue.plain_text) == ["Open late"]
    [mine] = await h.send("/my")
    assert sorted(titles(mine.plain_text)) == ["Open late", "Rejected late"]
