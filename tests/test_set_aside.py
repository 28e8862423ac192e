"""One task never stops the feed. Real HTTP against the fake Planfix, one injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from bot.events import STATUS
from bot.fakes.planfix import FakePlanfix
from bot.planfix.client import PlanfixClient
from bot.planfix.errors import PlanfixRequestError
from bot.watch.poller import CURSOR, Poller
from bot.watch.sweep import Sweep
from state.records import DeliveryRow
from state.store import Store
from tests.clocks import Clock

CHAT = -42
ANNA, BORIS = 10, 11


@pytest.fixture
async def world(tmp_path):
    clock = Clock(datetime(2026, 11, 23, 9, 0, 30, tzinfo=UTC))
    pf = FakePlanfix(clock=clock)
    await pf.start()
    pf.add_user(ANNA, "Anna")
    pf.add_user(BORIS, "Boris")
    client = PlanfixClient(url=pf.url, account=pf.account, api_key=pf.api_key, token=pf.token,
                           requests_per_second=500, timeout=5)
    store = Store.open(tmp_path / "state.sqlite3")
    poller = Poller(client=client, store=store, route=lambda e, now: [DeliveryRow(e.key, CHAT)], clock=clock)
    yield pf, clock, store, poller
    await client.aclose()
    store.close()
    await pf.stop()


def events_of(store: Store) -> list[tuple[str, int]]:
    rows = store.db.execute("SELECT kind, task_id FROM events ORDER BY task_id").fetchall()
    return [(r[0], r[1]) for r in rows]


async def start(pf: FakePlanfix, clock: Clock, poller: Poller, n: int) -> list:
    tasks = [pf.add_task(title=f"T{i}", owner=ANNA, workers=(BORIS,)) for i in range(n)]
    await poller.poll_once()
    clock.advance(seconds=30)
    return tasks


@pytest.mark.parametrize("in_batch", ["error", "omit"])
async def test_a_task_answering_3002_among_changing_tasks_never_stops_the_feed(world, in_batch):
    """Six tasks change; one answers 3002 (failing its task.getMulti batch, or left out of it): the other five
    are delivered in the same poll, the cursor moves, the task is set aside once (logged with id and code), its
    snapshot kept; when access comes back its change since is announced."""
    pf, clock, store, poller = world
    tasks = await start(pf, clock, poller, 6)
    hidden = tasks[2]
    for task in tasks:
        pf.change_status(task.id, 2, by=BORIS)
    pf.deny_access(hidden.id, "3002", in_batch=in_batch)
    cursor = store.meta.get_meta(CURSOR)
    clock.advance(seconds=30)
    with capture_logs() as logs:
        result = await poller.poll_once()
    assert sorted(e.task_id for e in result.events) == sorted(t.id for t in tasks if t is not hidden)
    assert store.meta.get_meta(CURSOR) != cursor and len(store.outbox.outbox_rows()) == 5
    assert store.tasks.set_aside() == {hidden.id: "3002"} and result.set_aside == 1
    assert hidden.id in store.tasks.snapshots([hidden.id])  # not forgotten: access may come back
    told = [entry for entry in logs if entry["event"] == "planfix.task_set_aside"]
    assert [(e["task_id"], e["code"]) for e in told] == [(hidden.id, "3002")]

    # Touched again while still hidden: no second log line, nothing announced, still counted once.
    clock.advance(seconds=30)
    pf.change_status(hidden.id, 4, by=BORIS)
    clock.advance(seconds=30)
    with capture_logs() as logs:
        assert (await poller.poll_once()).events == []
    assert not [entry for entry in logs if entry["event"] == "planfix.task_set_aside"]
    assert store.tasks.set_aside_count() == 1

    # Access comes back: the next action of the task brings the change since the kept snapshot (one poll
    # later: its own action was read while the task was hidden, so who made it is not known — hold_unattributed).
    pf.allow_access(hidden.id)
    clock.advance(seconds=30)
    pf.add_comment(hidden.id, "back", by=BORIS)
    clock.advance(seconds=30)
    with capture_logs() as logs:
        await poller.poll_once()
    assert store.tasks.set_aside() == {}
    assert any(entry["event"] == "planfix.task_readable_again" for entry in logs)
    clock.advance(seconds=30)
    result = await poller.poll_once()
    assert [(e.kind, e.task_id, e.payload.new_name) for e in result.events] == [(STATUS, hidden.id, "Отложенная")]


async def test_narrowing_costs_a_few_requests_and_task_get_only_for_the_leaves(world):
    """100 changed tasks, one 3008 among them: halving the batch, then task.get for each id left alone."""
    pf, clock, store, poller = world
    tasks = await start(pf, clock, poller, 100)
    for task in tasks:
        pf.change_status(task.id, 2, by=BORIS)
    pf.deny_access(tasks[37].id, "3008")
    clock.advance(seconds=30)
    before = len(pf.requests)
    result = await poller.poll_once()
    assert len(result.events) == 99 and store.tasks.set_aside() == {tasks[37].id: "3008"}
    asked = [r.method for r in pf.requests[before:]]
    assert 1 <= asked.count("task.get") <= 2  # only the ids narrowed down to alone
    assert asked.count("task.getMulti") <= 2 * 7 + 1  # log2(100) levels, two halves each


async def test_omitted_ids_are_double_checked_and_only_3001_forgets(world):
    """task.getMulti leaves out a deleted task and a hidden one: task.get says 3001 (forgotten) and 3008 (set
    aside, snapshot kept)."""
    pf, clock, store, poller = world
    tasks = await start(pf, clock, poller, 4)
    for task in tasks:
        pf.change_status(task.id, 2, by=BORIS)
    pf.delete_task(tasks[0].id)
    pf.deny_access(tasks[1].id, "3008", in_batch="omit")
    clock.advance(seconds=30)
    result = await poller.poll_once()
    assert sorted(e.task_id for e in result.events) == [tasks[2].id, tasks[3].id]
    assert result.forgotten == 1 and store.tasks.snapshots([tasks[0].id]) == {}
    assert store.tasks.set_aside() == {tasks[1].id: "3008"} and tasks[1].id in store.tasks.snapshots([tasks[1].id])
    checked = {r.param("task/id") for r in pf.requests_for("task.get")}
    assert checked == {str(tasks[0].id), str(tasks[1].id)}


async def test_an_unknown_code_for_one_task_is_narrowed_then_set_aside(world):
    """A code we do not know, for one task of a batch, is that task's problem once the batch is narrowed."""
    pf, clock, store, poller = world
    tasks = await start(pf, clock, poller, 4)
    for task in tasks:
        pf.change_status(task.id, 2, by=BORIS)
    pf.deny_access(tasks[3].id, "7777")
    clock.advance(seconds=30)
    with capture_logs() as logs:
        result = await poller.poll_once()
    assert len(result.events) == 3 and store.tasks.set_aside() == {tasks[3].id: "7777"}
    assert any(e["event"] == "planfix.task_unknown_error" and e["task_id"] == tasks[3].id for e in logs)


async def test_an_unknown_code_every_request_answers_is_a_bug_not_a_task(world):
    """When both halves of the batch answer the same unknown code (and task.get too), the request is wrong:
    the poll fails (retried by the job with back-off), nothing is set aside, the cursor stays."""
    pf, clock, store, poller = world
    tasks = await start(pf, clock, poller, 4)
    for task in tasks:
        pf.change_status(task.id, 2, by=BORIS)
    pf.inject_error("0016", method="task.getMulti", times=10)
    pf.inject_error("0016", method="task.get", times=10)
    cursor = store.meta.get_meta(CURSOR)
    clock.advance(seconds=30)
    with pytest.raises(PlanfixRequestError):
        await poller.poll_once()
    assert store.meta.get_meta(CURSOR) == cursor and store.tasks.set_aside() == {} and store.outbox.outbox_rows() == []


@pytest.mark.parametrize("field", ["general", "status", "endTime"])
async def test_a_malformed_card_is_skipped_and_reported_never_failing_its_page(world, field):
    """A card without `general`, with a non-numeric status or an impossible date: in a task.getList page (the
    first start) it is left out and logged; in the feed it is set aside as "malformed"; the rest go on."""
    pf, clock, store, poller = world
    tasks = [pf.add_task(title=f"T{i}", owner=ANNA) for i in range(3)]
    pf.malform(tasks[1].id, field)
    with capture_logs() as logs:
        assert (await poller.poll_once()).baseline == 2
    skipped = [e for e in logs if e["event"] == "planfix.items_skipped"]
    assert skipped and skipped[0]["method"] == "task.getList" and poller.client.items_skipped["task.getList"] == 1
    clock.advance(seconds=30)
    for task in tasks:
        pf.change_status(task.id, 2, by=BORIS)
    clock.advance(seconds=30)
    result = await poller.poll_once()
    assert sorted(e.task_id for e in result.events) == [tasks[0].id, tasks[2].id]
    assert store.tasks.set_aside() == {tasks[1].id: "malformed"}


async def test_the_sweep_sets_aside_a_hidden_task_and_forgets_a_deleted_one(world):
    """At the end of a pass, stored active tasks the list did not show: 3001 → forgotten, 3002 → set aside."""
    pf, clock, store, poller = world
    tasks = await start(pf, clock, poller, 5)
    pf.delete_task(tasks[0].id)
    pf.deny_access(tasks[1].id, "3002")
    pf.edit_task_silently(tasks[2].id, status=2)
    sweep = Sweep(poller, page_size=2)
    for _ in range(10):
        await sweep.step()
        if sweep.state.passes:
            break
    assert sweep.state.passes == 1
    assert store.tasks.snapshots([tasks[0].id]) == {} and store.tasks.set_aside() == {tasks[1].id: "3002"}
    assert tasks[1].id in store.tasks.snapshots([tasks[1].id])


async def test_a_set_aside_task_gets_no_overdue_notice_from_its_stale_snapshot(world):
    """Its deadline passes while Planfix hides it: the stored snapshot is stale, so nothing is announced."""
    pf, clock, store, poller = world
    task = pf.add_task(title="Due", owner=ANNA, deadline=clock.now + timedelta(minutes=3))
    await poller.poll_once()
    pf.deny_access(task.id, "3008")
    clock.advance(seconds=30)
    pf.add_comment(task.id, "hidden now", by=BORIS)
    clock.advance(seconds=30)
    await poller.poll_once()
    assert store.tasks.set_aside() == {task.id: "3008"}
    clock.advance(minutes=5)
    assert poller.check_deadlines().events == [] and store.outbox.outbox_rows() == []
