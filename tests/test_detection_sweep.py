"""The reconciliation sweep over real HTTP against the fake Planfix: changes the feed never saw, closed, reopened
and deleted tasks, paging while the list shifts, its pace and priority, and its position across restarts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.events import DEADLINE, STATUS
from bot.planfix.budget import Priority
from bot.watch.sweep import PAGES, VERIFY, Sweep
from tests.test_detection import ANNA, world_at


@pytest.fixture
async def world(tmp_path):
    async with world_at(tmp_path, timeout=2) as made:
        yield made


async def full_pass(sweep: Sweep, limit: int = 50) -> list:
    """Run steps until the current pass is complete, with a feed poll after each as in the daemon (the sweep hands
    status and deadline changes to the feed, which fetches them with their actions); returns the events found."""
    events = []
    passes = sweep.state.passes
    for _ in range(limit):
        events += (await sweep.step()).events
        events += (await sweep.poller.poll_once()).events
        if sweep.state.passes > passes:
            return events + (await sweep.poller.poll_once()).events
    raise AssertionError("the pass did not finish")


async def test_sweep_catches_changes_the_feed_never_saw(world):
    """Silent edits (no action in the feed) are found by the sweep and diffed like the feed's: a status change, a
    removed deadline; a project move updates the snapshot without a message; untouched tasks cost no card."""
    due = (world.clock.now + timedelta(days=3)).replace(second=0)
    status, deadline, moved = (world.pf.add_task(title=t, owner=ANNA, deadline=due) for t in ("S", "D", "M"))
    for i in range(7):
        world.pf.add_task(title=f"quiet {i}", owner=ANNA)
    poller = world.poller()
    await poller.poll_once()
    world.clock.advance(minutes=5)
    await poller.poll_once()  # reads the tasks' creation actions
    world.pf.edit_task_silently(status.id, status=2)
    world.pf.edit_task_silently(deadline.id, deadline=None)
    world.pf.edit_task_silently(moved.id, project=(77, "Elsewhere"))
    world.clock.advance(minutes=5)
    assert (await poller.poll_once()).events == []  # the feed shows nothing
    multi_before = len(world.pf.requests_for("task.getMulti"))
    events = await full_pass(Sweep(poller, page_size=5))
    assert sorted((e.kind, e.task_id) for e in events) == [(DEADLINE, deadline.id), (STATUS, status.id)]
    [removed] = [e for e in events if e.kind == DEADLINE]
    assert removed.payload.new is None and removed.actor_id is None
    stored = world.store.tasks.snapshots([moved.id])[moved.id].data
    assert stored["project_id"] == 77
    cards = [r for r in world.pf.requests_for("task.getMulti")[multi_before:]]
    # Only the three that differ, plus the feed's re-read (with actions) of the two it was handed.
    assert sum(len(r.param_all("tasks/id")) for r in cards) == 3 + 2
    assert await full_pass(Sweep(poller, page_size=5)) == []  # a second pass finds nothing new


async def test_sweep_reports_closed_and_reopened_tasks_and_forgets_deleted_ones(world):
    """A task closed silently drops out of the active list and is checked by id at the end of the pass (status
    event); reopened, it is back in the list (status event); a deleted task is forgotten without a message."""
    closing, deleted = world.pf.add_task(title="C", owner=ANNA), world.pf.add_task(title="X", owner=ANNA)
    world.pf.add_task(title="Other", owner=ANNA)
    poller = world.poller()
    await poller.poll_once()
    sweep = Sweep(poller, page_size=100)
    world.pf.edit_task_silently(closing.id, status=3)
    world.pf.delete_task(deleted.id)
    events = await full_pass(sweep)
    assert [(e.kind, e.task_id, e.payload.new_name) for e in events] == [(STATUS, closing.id, "Завершенная")]
    assert world.store.tasks.snapshots([deleted.id]) == {}
    world.pf.edit_task_silently(closing.id, status=2)
    events = await full_pass(sweep)
    assert [(e.kind, e.task_id, e.payload.new_name) for e in events] == [(STATUS, closing.id, "В работе")]
    assert world.kinds() == [STATUS, STATUS]


async def test_sweep_rereads_the_previous_page_when_the_list_shrinks(world):
    """Closing tasks between two page reads shifts later tasks onto a page already read; the shrink is noticed
    (totalCount) and that page is read again, so their changes are not missed in this pass."""
    tasks = [world.pf.add_task(title=f"T{i}", owner=ANNA) for i in range(12)]
    poller = world.poller()
    await poller.poll_once()
    sweep = Sweep(poller, page_size=5)
    await sweep.step()  # page 1: T0..T4
    for task in tasks[:3]:
        world.pf.edit_task_silently(task.id, status=3)  # closed: T5..T7 slide onto page 1
    world.pf.edit_task_silently(tasks[5].id, status=4)
    world.pf.edit_task_silently(tasks[6].id, status=2)
    events = await full_pass(sweep)
    # The two that slid onto page 1 are not missed; the three closed ones are caught in the same pass too, each once.
    assert sorted(e.task_id for e in events) == sorted([tasks[5].id, tasks[6].id, *(t.id for t in tasks[:3])])
    assert await full_pass(sweep) == []


async def test_sweep_position_survives_a_restart(world):
    """The pass position is in the state file: a restarted sweep continues with the next page."""
    for i in range(12):
        world.pf.add_task(title=f"T{i}", owner=ANNA)
    poller = world.poller()
    await poller.poll_once()
    first = Sweep(poller, page_size=5)
    await first.step()
    await first.step()
    restarted = Sweep(world.poller(), page_size=5)
    restarted.load()
    assert (restarted.state.page, restarted.state.phase) == (3, PAGES)
    await restarted.step()
    assert restarted.state.phase == VERIFY
    pages = [r.param("pageCurrent") for r in world.pf.requests_for("task.getList") if r.param("filter") == "ACTIVE"]
    assert pages == ["1", "2", "3"]


async def test_sweep_is_spread_over_its_period_at_the_lowest_priority(world):
    """One pass of N pages takes N+1 steps spaced period/(N+1) apart, and every sweep request is SWEEP priority."""
    for i in range(250):
        world.pf.add_task(title=f"T{i}", owner=ANNA, record_action=False)
    poller = world.poller()
    await poller.poll_once()
    sweep = Sweep(poller, period=timedelta(hours=24))
    await sweep.step()
    assert sweep.steps_per_pass() == 4 and sweep.step_interval() == pytest.approx(86400 / 4)
    assert world.client.budget.granted[Priority.SWEEP] == 1
    world.pf.edit_task_silently(max(world.pf.tasks), status=2)  # on the last page
    await full_pass(sweep)
    assert world.client.budget.granted[Priority.SWEEP] == 3 + 1  # 3 pages + 1 card; the verify step had no work
