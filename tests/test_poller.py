"""The poll job over real HTTP against the fake Planfix, with one injected clock for both sides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.events import COMMENT, DEADLINE, OVERDUE, STATUS
from bot.fakes.planfix import FakePlanfix
from bot.planfix.client import PlanfixClient
from bot.planfix.errors import PlanfixError
from bot.watch.poller import Poller
from state.records import DeliveryRow
from state.store import Store
from tests.clocks import Clock

CHAT = -42


@pytest.fixture
async def world(tmp_path):
    clock = Clock(datetime(2026, 11, 23, 9, 0, 30, tzinfo=UTC))
    pf = FakePlanfix(clock=clock)
    await pf.start()
    pf.add_user(10, "Anna")
    pf.add_user(11, "Boris")
    client = PlanfixClient(url=pf.url, account=pf.account, api_key=pf.api_key, token=pf.token,
                           requests_per_second=200, timeout=5)
    store = Store.open(tmp_path / "state.sqlite3")

    def make_poller() -> Poller:
        return Poller(client=client, store=store, route=lambda e, now: [DeliveryRow(e.key, CHAT)], clock=clock)

    yield pf, clock, store, make_poller
    await client.aclose()
    store.close()
    await pf.stop()


def changes(result) -> list:
    """The events of a poll besides comments (the tests below comment only to make the feed show a task)."""
    return [e for e in result.events if e.kind != COMMENT]


def queued_kinds(store: Store) -> list[str]:
    return [row["event_key"].split(":")[0] for row in store.outbox.outbox_rows()]


async def test_baseline_is_silent_and_changes_are_detected_once(world):
    """The first poll queues nothing; a status change is queued once; polling again adds nothing."""
    pf, clock, store, make_poller = world
    task = pf.add_task(title="T", owner=10, workers=(11,))
    poller = make_poller()
    assert (await poller.poll_once()).baseline == 1
    assert store.outbox.outbox_rows() == []
    clock.advance(seconds=30)
    pf.change_status(task.id, 2, by=11)
    clock.advance(seconds=30)
    result = await poller.poll_once()
    assert [e.kind for e in result.events] == [STATUS]
    assert result.events[0].actor_id == 11 and result.events[0].payload.new_name == "В работе"
    for _ in range(3):
        clock.advance(seconds=30)
        assert (await poller.poll_once()).events == []
    assert queued_kinds(store) == [STATUS]


async def test_overdue_fires_on_time_from_the_local_clock_once(world):
    """A deadline passing fires `overdue` at the next poll without any Planfix action, and only once."""
    pf, clock, store, make_poller = world
    due = (clock.now + timedelta(minutes=5)).replace(second=0)
    pf.add_task(title="Due soon", owner=10, deadline=due)
    poller = make_poller()
    await poller.poll_once()
    clock.advance(minutes=3)
    assert (await poller.poll_once()).events == []
    clock.advance(minutes=3)
    assert [e.kind for e in (await poller.poll_once()).events] == [OVERDUE]
    clock.advance(minutes=30)
    assert (await poller.poll_once()).events == []
    assert queued_kinds(store) == [OVERDUE]


async def test_restart_after_20_changes_reports_each_once(world):
    """Twenty changes made while the daemon was down are all reported after restart, none twice."""
    pf, clock, store, make_poller = world
    tasks = [pf.add_task(title=f"T{i}", owner=10, deadline=(clock.now + timedelta(days=5)).date()) for i in range(10)]
    await make_poller().poll_once()
    clock.advance(minutes=40)  # the daemon is down
    for i, task in enumerate(tasks):
        pf.change_status(task.id, 2, by=11)
        pf.change_deadline(task.id, (clock.now + timedelta(days=9 + i)).date(), by=10)
        clock.advance(seconds=20)
    clock.advance(minutes=5)
    restarted = make_poller()
    result = await restarted.poll_once()
    assert sorted(e.kind for e in result.events) == [DEADLINE] * 10 + [STATUS] * 10
    clock.advance(seconds=30)
    assert (await make_poller().poll_once()).events == []
    assert len(store.outbox.outbox_rows()) == 20


async def test_150_actions_in_one_minute_are_all_seen(world):
    """More than one page of actions inside one minute: every change is detected (paging + overlap)."""
    pf, clock, store, make_poller = world
    tasks = [pf.add_task(title=f"T{i}", owner=10) for i in range(150)]
    poller = make_poller()
    await poller.poll_once()
    clock.advance(minutes=1)
    clock.now = clock.now.replace(second=5)
    for task in tasks:
        pf.change_status(task.id, 2, by=11)
    clock.advance(seconds=40)
    result = await poller.poll_once()
    assert len(result.events) == 150
    assert len({e.task_id for e in result.events}) == 150


async def test_a_planfix_fault_mid_poll_loses_nothing(world):
    """If Planfix fails halfway through a poll nothing is committed, and the next poll reports the change."""
    pf, clock, store, make_poller = world
    task = pf.add_task(title="T", owner=10)
    poller = make_poller()
    await poller.poll_once()
    cursor = store.meta.get_meta("feed_cursor")
    clock.advance(seconds=30)
    pf.change_status(task.id, 2, by=11)
    pf.inject_error("0011", method="task.getMulti")
    clock.advance(seconds=30)
    with pytest.raises(PlanfixError):
        await poller.poll_once()
    assert store.outbox.outbox_rows() == [] and store.meta.get_meta("feed_cursor") == cursor
    clock.advance(seconds=30)
    assert [e.kind for e in (await poller.poll_once()).events] == [STATUS]


async def test_deadline_into_the_past_gives_deadline_and_overdue(world):
    """Moving a deadline into the past reports the move and, at once, that the task is overdue."""
    pf, clock, store, make_poller = world
    task = pf.add_task(title="T", owner=10, deadline=(clock.now + timedelta(days=2)).date())
    poller = make_poller()
    await poller.poll_once()
    clock.advance(seconds=30)
    pf.change_deadline(task.id, (clock.now - timedelta(days=1)).date(), by=11)
    clock.advance(seconds=30)
    kinds = [e.kind for e in (await poller.poll_once()).events]
    assert kinds == [DEADLINE, OVERDUE]


async def test_change_seen_before_its_action_is_attributed_on_the_next_poll(world):
    """A change that shows in the card before its action reaches the feed is announced one poll later with its
    author (so the author is not told about their own change); a change with no action at all is still announced."""
    pf, clock, store, make_poller = world
    task = pf.add_task(title="Racy", owner=10, workers=(11,))
    other = pf.add_task(title="Other", owner=10)
    poller = make_poller()
    await poller.poll_once()
    clock.advance(seconds=30)
    pf.add_comment(task.id, "touch", by=10)  # the feed shows an action, so the card is fetched ...
    pf.edit_task_silently(task.id, status=2)  # ... and already has the new status, but its action comes later
    clock.advance(seconds=30)
    assert changes(await poller.poll_once()) == []
    pf.tasks[task.id].status = 1
    pf.change_status(task.id, 2, by=11)  # now the action is in the feed (the status is 2 either way)
    clock.advance(seconds=30)
    [event] = changes(await poller.poll_once())
    assert event.kind == STATUS and event.actor_id == 11
    clock.advance(seconds=30)
    pf.add_comment(other.id, "touch", by=10)
    pf.edit_task_silently(other.id, status=3)  # a change no action ever explains
    clock.advance(seconds=30)
    assert changes(await poller.poll_once()) == []
    clock.advance(seconds=30)
    [late] = changes(await poller.poll_once())
    assert late.kind == STATUS and late.actor_id is None and late.task_id == other.id
