"""Detection over real HTTP against the fake Planfix with an injected clock: the error policy of the background jobs,
per-item errors, the 0007 pause, local overdue and reminders, catch-up digests after downtime."""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from bot.config import Route, UserLink
from bot.events import DEADLINE, DIGEST, OVERDUE, REMINDER, STATUS
from bot.fakes.planfix import FakePlanfix
from bot.notify.routing import deliveries
from bot.planfix.budget import Budget
from bot.planfix.client import PlanfixClient
from bot.watch.catchup import fold
from bot.watch.diff import parse_leads
from bot.watch.jobs import Detection
from bot.watch.poller import CURSOR, Poller
from state.records import DeliveryRow
from state.store import Store
from tests.clocks import Clock

CHAT = -42
MSK = ZoneInfo("Europe/Moscow")
ANNA, BORIS = 10, 11


class World:
    """One fake Planfix, one state file, one clock for both; builders for pollers and detections."""

    def __init__(self, pf: FakePlanfix, clock: Clock, store: Store, client: PlanfixClient):
        self.pf, self.clock, self.store, self.client = pf, clock, store, client
        self.admins: list[str] = []

    async def notify(self, text: str) -> None:
        self.admins.append(text)

    def route(self, event, now):
        return [DeliveryRow(event.key, CHAT)]

    def poller(self, **options) -> Poller:
        options.setdefault("route", self.route)
        return Poller(client=self.client, store=self.store, clock=self.clock, **options)

    def detection(self, poller: Poller | None = None, **options) -> Detection:
        options = {"interval": 30, "max_backoff": 60, "deadline_every": 5, "sweep_period": timedelta(hours=24),
                   "notify_admins": self.notify, "rng": random.Random(4), **options}
        return Detection.build(poller or self.poller(), clock=self.clock, **options)

    async def run(self, job) -> None:
        """Move the clock to when the job is due (if later) and run it."""
        if job.next_run is not None and job.next_run > self.clock.now:
            self.clock.now = job.next_run
        assert await job.run_once()

    def rows(self) -> list[dict]:
        return self.store.outbox.outbox_rows()

    def kinds(self) -> list[str]:
        return [row["event_key"].split(":")[0] for row in self.rows()]

    def payload(self, event_key: str) -> dict:
        row = self.store.db.execute("SELECT payload FROM events WHERE key = ?", [event_key]).fetchone()
        return json.loads(row[0])


@contextlib.asynccontextmanager
async def world_at(tmp_path, *, timeout: float = 0.5) -> AsyncIterator[World]:
    """A fake Planfix on a virtual clock, a client with a fast budget and a fresh state file (`timeout`: how
    patient the client is; tests moving a lot of data on a busy machine want more)."""
    clock = Clock(datetime(2026, 11, 23, 9, 0, 30, tzinfo=UTC))
    pf = FakePlanfix(clock=clock)
    await pf.start()
    pf.add_user(ANNA, "Anna")
    pf.add_user(BORIS, "Boris")
    client = PlanfixClient(url=pf.url, account=pf.account, api_key=pf.api_key, token=pf.token, timeout=timeout,
                           max_body_bytes=1_000_000, budget=Budget(requests_per_second=500, clock=clock))
    store = Store.open(tmp_path / "state.sqlite3")
    try:
        yield World(pf, clock, store, client)
    finally:
        await client.aclose()
        store.close()
        await pf.stop()


@pytest.fixture
async def world(tmp_path):
    async with world_at(tmp_path) as made:
        yield made


# --- error policy ---------------------------------------------------------------------------------------------

TRANSIENT = [
    ("error", "0011"), ("error", "3014"), ("fault", "http500"), ("fault", "http502"), ("fault", "malformed"),
    ("fault", "billion_laughs"), ("fault", "oversized"), ("fault", "drop"), ("fault", "hang"),
]


@pytest.mark.parametrize(("how", "what"), TRANSIENT)
async def test_transient_failure_backs_off_with_jitter_and_loses_nothing(world, how, what):
    """A transient failure (busy platform, 5xx, bad XML, XML bomb, huge body, dropped connection, timeout) commits
    nothing, retries after a jittered back-off, and the change made meanwhile is reported once."""
    task = world.pf.add_task(title="T", owner=ANNA)
    detection = world.detection()
    poll = detection.job("poll")
    await world.run(poll)  # baseline
    cursor = world.store.meta.get_meta(CURSOR)
    world.clock.advance(seconds=30)
    world.pf.change_status(task.id, 2, by=BORIS)
    if how == "error":
        world.pf.inject_error(what, method="action.getListByPeriod")
    else:
        world.pf.inject_fault(what, method="action.getListByPeriod", seconds=2, size=5_000_000)
    await world.run(poll)
    assert poll.failures == 1 and detection.health.fatal is None
    assert world.rows() == [] and world.store.meta.get_meta(CURSOR) == cursor
    wait = (poll.next_run - world.clock.now).total_seconds()
    assert 5 <= wait <= 10  # min(interval, 10 s) with 50–100 % jitter
    await world.run(poll)
    assert poll.failures == 0 and world.kinds() == [STATUS]


async def test_backoff_doubles_up_to_the_cap(world):
    """Consecutive failures wait about 10, 20, 40 s, then the cap (60 s here), each with jitter."""
    detection = world.detection()
    poll = detection.job("poll")
    await world.run(poll)
    world.pf.inject_error("0011", times=5)
    waits = []
    for _ in range(5):
        await world.run(poll)
        waits.append((poll.next_run - world.clock.now).total_seconds())
    for wait, ceiling in zip(waits, [10, 20, 40, 60, 60], strict=True):
        assert ceiling / 2 <= wait <= ceiling, waits
    await world.run(poll)
    assert poll.failures == 0


CONFIG_FATAL = ["0001", "0002", "0004", "0012", "0022", "0024", "1001"]


@pytest.mark.parametrize("code", CONFIG_FATAL)
async def test_config_error_stops_background_work_tells_admins_once_and_commands_go_on(world, code):
    """A config-fatal code stops every background job, logs one clear line with the fix, tells the admins once;
    interactive requests (commands) still go to Planfix, and `problem` explains why notifications stopped."""
    world.pf.add_task(title="T", owner=ANNA, deadline=world.clock.now + timedelta(minutes=1))
    detection = world.detection()
    await world.run(detection.job("poll"))
    world.pf.inject_error(code, method="action.getListByPeriod")
    world.clock.advance(seconds=30)
    with capture_logs() as logs:
        await world.run(detection.job("poll"))
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert len(errors) == 1 and errors[0]["code"] == code and errors[0]["fix"]
    assert len(world.admins) == 1 and code in world.admins[0]
    sent = len(world.pf.requests)
    world.clock.advance(hours=1)
    for job in detection.jobs:
        assert not await job.run_once()
    assert len(world.pf.requests) == sent and world.rows() == []  # no poll, no sweep, no overdue notice either
    assert len(world.admins) == 1
    assert (await world.client.user_get()).id == 1  # a command's request still goes
    assert code in detection.problem


async def test_per_item_error_sets_aside_only_the_task_it_concerns(world):
    """3008 for a batch of task cards is narrowed down by halving: that task is set aside (its snapshot kept),
    the others reported."""
    tasks = [world.pf.add_task(title=f"T{i}", owner=ANNA) for i in range(4)]
    poller = world.poller()
    await poller.poll_once()
    world.clock.advance(seconds=30)
    for task in tasks:
        world.pf.change_status(task.id, 2, by=BORIS)
    world.pf.deny_access(tasks[0].id, "3008")  # [4] → [2] fail; task.get of the first says 3008
    world.clock.advance(seconds=30)
    result = await poller.poll_once()
    assert sorted(e.task_id for e in result.events) == [t.id for t in tasks[1:]]
    assert result.forgotten == 0 and result.set_aside == 1 and world.store.tasks.set_aside() == {tasks[0].id: "3008"}
    assert tasks[0].id in world.store.tasks.snapshots([tasks[0].id])
    world.clock.advance(seconds=30)
    assert (await poller.poll_once()).events == []


async def test_deleted_task_is_forgotten_silently_and_the_rest_goes_on(world):
    """A task deleted in Planfix (its actions still in the feed) is forgotten without a message; others go on."""
    gone, kept = world.pf.add_task(title="Gone", owner=ANNA), world.pf.add_task(title="Kept", owner=ANNA)
    poller = world.poller()
    await poller.poll_once()
    world.clock.advance(seconds=30)
    world.pf.change_status(gone.id, 2, by=BORIS)
    world.pf.change_status(kept.id, 2, by=BORIS)
    world.pf.delete_task(gone.id)
    world.clock.advance(seconds=30)
    result = await poller.poll_once()
    assert [e.task_id for e in result.events] == [kept.id] and result.forgotten == 1
    assert world.store.tasks.snapshots([gone.id]) == {}


async def test_0007_pauses_background_tells_admins_once_and_resumes_by_itself(world):
    """0007 pauses every background job until the budget resets (midnight in the API zone), tells the admins
    once, and afterwards the poll resumes on its own and reports what changed meanwhile."""
    task = world.pf.add_task(title="T", owner=ANNA)
    detection = world.detection()
    poll, sweep = detection.job("poll"), detection.job("sweep")
    await world.run(poll)
    world.pf.rate_limit_remaining = 0
    world.clock.advance(seconds=30)
    await world.run(poll)
    reset = datetime(2026, 11, 24, 0, 1, tzinfo=MSK)  # the fake's API user is in Moscow
    assert poll.next_run == reset and len(world.admins) == 1 and "0007" in world.admins[0]
    world.pf.change_status(task.id, 2, by=BORIS)
    world.clock.advance(hours=1)
    sent = len(world.pf.requests)
    assert not await poll.run_once()  # not due before the reset
    await world.run(sweep)  # the sweep is refused locally, without a request
    assert sweep.next_run == reset and len(world.pf.requests) == sent and len(world.admins) == 1
    await world.run(detection.job("deadlines"))  # the local check goes on, and does not end the pause
    assert "limit" in detection.problem
    await world.run(poll)  # the probe after the assumed reset: Planfix still says 0007
    assert poll.next_run == world.clock.now + timedelta(minutes=15) and len(world.admins) == 1
    world.pf.rate_limit_remaining = 20_000  # Planfix's new day
    await world.run(poll)
    assert poll.failures == 0 and world.kinds() == [STATUS] and detection.problem is None


# --- overdue and reminders, from the local clock ---------------------------------------------------------------


async def test_overdue_fires_within_seconds_of_the_deadline_without_asking_planfix(world):
    """The deadline job finds an overdue task from stored snapshots within seconds, with no Planfix request."""
    due = (world.clock.now + timedelta(minutes=10)).replace(second=0)
    world.pf.add_task(title="Due", owner=ANNA, deadline=due)
    detection = world.detection()
    await world.run(detection.job("poll"))
    deadlines = detection.job("deadlines")
    sent = len(world.pf.requests)
    world.clock.now = due - timedelta(seconds=2)
    await world.run(deadlines)
    assert world.rows() == []
    world.clock.now = due + timedelta(seconds=3)
    deadlines.next_run = None
    await world.run(deadlines)
    assert world.kinds() == [OVERDUE] and len(world.pf.requests) == sent
    world.clock.advance(hours=2)
    await world.run(deadlines)
    assert world.kinds() == [OVERDUE]


async def test_date_only_deadline_falls_due_at_the_end_of_that_day_in_the_api_zone(world):
    """A date-only deadline is overdue only after 23:59 of that day in the API user's zone (Moscow here)."""
    day = date(2026, 11, 23)
    world.pf.add_task(title="Today", owner=ANNA, deadline=day)
    poller = world.poller()
    await poller.poll_once()
    world.clock.now = datetime(2026, 11, 23, 23, 58, 30, tzinfo=MSK)
    assert poller.check_deadlines().events == []
    world.clock.now = datetime(2026, 11, 23, 23, 59, 2, tzinfo=MSK)
    assert [e.kind for e in poller.check_deadlines().events] == [OVERDUE]


async def test_overdue_rearms_when_the_deadline_moves_and_disarms_when_the_task_closes(world):
    """Once per deadline value; a moved deadline fires again when it passes; a closed task never fires."""
    start = world.clock.now
    task = world.pf.add_task(title="T", owner=ANNA, deadline=(start + timedelta(minutes=5)).replace(second=0))
    poller = world.poller()
    await poller.poll_once()
    world.clock.advance(minutes=6)
    assert [e.kind for e in poller.check_deadlines().events] == [OVERDUE]
    assert poller.check_deadlines().events == []
    world.pf.change_deadline(task.id, (world.clock.now + timedelta(minutes=5)).replace(second=0), by=BORIS)
    world.clock.advance(seconds=30)
    assert [e.kind for e in (await poller.poll_once()).events] == [DEADLINE]
    world.clock.advance(minutes=6)
    assert [e.kind for e in poller.check_deadlines().events] == [OVERDUE]
    world.pf.change_deadline(task.id, (world.clock.now + timedelta(minutes=5)).replace(second=0), by=BORIS)
    world.pf.change_status(task.id, 3, by=BORIS)  # closed
    world.clock.advance(seconds=30)
    await poller.poll_once()
    world.clock.advance(minutes=10)
    assert poller.check_deadlines().events == []
    assert world.kinds() == [OVERDUE, DEADLINE, OVERDUE, STATUS, DEADLINE]


async def test_reminders_fire_once_per_lead_and_deadline_and_rearm_when_it_moves(world):
    """With remind_before = ["24h", "1h"]: each lead fires once per deadline value at its time (payload: the
    lead and the deadline); moving the deadline re-arms them; closing the task disarms them."""
    due = (world.clock.now + timedelta(days=2)).replace(second=0)
    task = world.pf.add_task(title="T", owner=ANNA, deadline=due)
    poller = world.poller(leads=parse_leads(["24h", "1h"]))
    await poller.poll_once()
    world.clock.now = due - timedelta(hours=24, seconds=5)
    assert poller.check_deadlines().events == []
    world.clock.now = due - timedelta(hours=23, minutes=59)
    [first] = poller.check_deadlines().events
    assert (first.kind, first.payload.lead) == (REMINDER, "24h") and datetime.fromisoformat(first.payload.deadline) == due
    world.clock.advance(hours=1)
    assert poller.check_deadlines().events == []
    world.clock.now = due - timedelta(minutes=59)
    [second] = poller.check_deadlines().events
    assert second.payload.lead == "1h"
    assert poller.check_deadlines().events == []
    moved = due + timedelta(days=2)
    world.pf.change_deadline(task.id, moved, by=BORIS)
    world.clock.advance(seconds=30)
    await poller.poll_once()
    world.clock.now = moved - timedelta(hours=23)
    assert [e.payload.lead for e in poller.check_deadlines().events] == ["24h"]
    world.pf.change_status(task.id, 3, by=BORIS)
    world.clock.advance(seconds=30)
    await poller.poll_once()
    world.clock.now = moved - timedelta(minutes=30)
    assert poller.check_deadlines().events == []
    assert world.kinds() == [REMINDER, REMINDER, DEADLINE, REMINDER, STATUS]


async def test_no_reminder_for_a_window_already_open_at_first_sight_or_when_the_deadline_is_set(world):
    """First sight is silent for reminders too, and a deadline set 30 minutes ahead gives the deadline notice
    but no "1h"/"24h" reminder; later leads still fire."""
    soon = world.pf.add_task(title="Soon", owner=ANNA, deadline=(world.clock.now + timedelta(hours=2)).replace(second=0))
    other = world.pf.add_task(title="Other", owner=ANNA)
    poller = world.poller(leads=parse_leads(["24h", "1h"]))
    await poller.poll_once()
    world.clock.advance(seconds=30)
    assert poller.check_deadlines().events == []  # 24h window was open at first sight
    set_to = (world.clock.now + timedelta(minutes=30)).replace(second=0)
    world.pf.change_deadline(other.id, set_to, by=BORIS)
    world.clock.advance(seconds=30)
    assert [e.kind for e in (await poller.poll_once()).events] == [DEADLINE]
    assert poller.check_deadlines().events == []
    world.clock.now = soon.deadline - timedelta(minutes=59)
    reminders = [(e.task_id, e.payload.lead) for e in poller.check_deadlines().events if e.kind == REMINDER]
    assert reminders == [(soon.id, "1h")]


def test_reminders_go_to_routes_that_list_them_and_to_participants():
    """Default routes (status, deadline, overdue) get no reminders; a route listing "reminder" and the linked
    participants of the task do."""
    from bot.watch.diff import Snapshot, reminder_event

    snap = Snapshot(task_id=1, general=5, title="T", status=1, status_name="New", is_active=True,
                    deadline="2026-11-24T12:00:00+00:00", deadline_due=datetime(2026, 11, 24, 12, tzinfo=UTC).timestamp(),
                    participants=(ANNA,))
    now = datetime(2026, 11, 24, 11, 30, tzinfo=UTC)
    [event] = reminder_event(snap, now, parse_leads(["1h"])).events
    routes = [Route(chat_id=-1), Route(chat_id=-2, events=["status", "reminder"])]
    rows = deliveries(event, now, routes=routes, users=[UserLink(telegram_id=501, planfix_id=ANNA)], zone=MSK)
    assert sorted(r.chat_id for r in rows) == [-2, 501]


# --- never flood: catch-up after downtime ----------------------------------------------------------------------


def personal_route(event, now):
    return [DeliveryRow(event.key, CHAT), *([DeliveryRow(event.key, 501)] if ANNA in event.participants else [])]


async def test_restart_after_20_changes_reports_all_in_one_digest_per_chat_without_duplicates(world):
    """Twenty changes made while the daemon was down: all are detected and stored, each chat gets one digest of
    them instead of twenty messages, and polling again queues nothing more."""
    tasks = [world.pf.add_task(title=f"T{i}", owner=ANNA if i < 3 else BORIS) for i in range(20)]
    await world.poller().poll_once()
    world.clock.advance(hours=2)  # down
    for task in tasks:
        world.pf.change_status(task.id, 2, by=BORIS)
        world.clock.advance(seconds=20)
    world.clock.advance(minutes=5)
    restarted = world.poller(route=personal_route, catchup_threshold=10, max_event_age=timedelta(hours=24))
    result = await restarted.poll_once()
    assert result.catchup and len(result.events) == 20 and result.digests == 1
    rows = world.rows()
    assert [(r["chat_id"], r["event_key"].split(":")[0]) for r in rows] == [(CHAT, DIGEST)] + [(501, STATUS)] * 3
    digest = world.payload(rows[0]["event_key"])
    items = digest["payload"]["items"]
    assert len(items) == 20 and {item["task_id"] for item in items} == {t.id for t in tasks}
    stored = world.store.db.execute("SELECT count(*) FROM events WHERE kind = ?", [STATUS]).fetchone()[0]
    assert stored == 20
    world.clock.advance(seconds=30)
    assert (await restarted.poll_once()).events == [] and len(world.rows()) == 4


def test_the_same_catchup_detected_twice_gives_the_same_digest_key():
    """Folding is deterministic: a poll repeated after a crash before its commit cannot queue a second digest."""
    from bot.events import Event

    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    events = [Event(kind=STATUS, key=f"status:{i}:1:1>2", task_id=i, task_general=i, task_title="T", occurred_at=now)
              for i in range(12)]
    rows = [DeliveryRow(e.key, CHAT) for e in events]
    first, _ = fold(events, rows, now, threshold=10, max_age=None)
    again, kept = fold(list(reversed(events)), list(reversed(rows)), now + timedelta(minutes=1), threshold=10,
                       max_age=None)
    assert [d.key for d in first] == [d.key for d in again] and len(kept) == 1


async def test_short_downtime_is_replayed_but_events_older_than_the_max_age_are_summarised(world):
    """Below the threshold a catch-up is replayed one by one, except events older than max_event_age_hours, which
    go into a digest."""
    old, fresh = world.pf.add_task(title="Old", owner=ANNA), world.pf.add_task(title="Fresh", owner=ANNA)
    await world.poller().poll_once()
    world.clock.advance(hours=1)
    world.pf.change_status(old.id, 2, by=BORIS)  # 30 hours before the restart
    world.clock.advance(hours=30)
    world.pf.change_status(fresh.id, 2, by=BORIS)
    world.clock.advance(minutes=1)
    poller = world.poller(catchup_threshold=10, max_event_age=timedelta(hours=24), overlap=timedelta(hours=40))
    result = await poller.poll_once()
    assert len(result.events) == 2 and result.digests == 1
    rows = world.rows()
    assert sorted(r["event_key"].split(":")[0] for r in rows) == [DIGEST, STATUS]
    digest = next(r for r in rows if r["event_key"].startswith(DIGEST))
    assert [i["task_id"] for i in world.payload(digest["event_key"])["payload"]["items"]] == [old.id]


async def test_overdue_notices_from_the_downtime_wait_for_the_catchup_poll_and_fold_into_its_digest(world):
    """After a restart the local deadline check waits for the first feed poll, which folds the many overdue
    notices of the downtime into the chat's digest."""
    for i in range(12):
        world.pf.add_task(title=f"T{i}", owner=ANNA, deadline=(world.clock.now + timedelta(hours=1)).replace(second=0))
    await world.poller().poll_once()
    world.clock.advance(hours=3)  # down while all twelve fell due
    detection = world.detection(world.poller(catchup_threshold=10, max_event_age=timedelta(hours=24)))
    assert not await detection.job("deadlines").run_once()  # not before the catch-up poll
    await world.run(detection.job("poll"))
    assert world.kinds() == [DIGEST]
    assert await detection.job("deadlines").run_once() and world.kinds() == [DIGEST]


async def test_150_actions_in_one_minute_are_each_queued_outside_a_catchup(world):
    """A burst of 150 changes in one minute (two feed pages) during normal running: none missed, none folded."""
    tasks = [world.pf.add_task(title=f"T{i}", owner=ANNA) for i in range(150)]
    detection = world.detection(world.poller(catchup_threshold=10, max_event_age=timedelta(hours=24)))
    poll = detection.job("poll")
    await world.run(poll)
    world.clock.now = (world.clock.now + timedelta(minutes=1)).replace(second=2)
    for task in tasks:
        world.pf.change_status(task.id, 2, by=BORIS)
    world.clock.advance(seconds=40)
    await world.run(poll)
    assert world.kinds() == [STATUS] * 150
    assert len({r["event_key"] for r in world.rows()}) == 150
    pages = [r for r in world.pf.requests_for("action.getListByPeriod") if r.param("pageCurrent") == "2"]
    assert pages, "the feed must have been paged"


def test_a_catch_up_names_every_change_in_a_few_messages_and_counts_the_tail_of_a_long_one():
    """Minutes of downtime: every change named, split where the length needs (here 25 a part). Days of it: at most
    CATCHUP_MAX_PARTS messages, the last holding the rest (the renderer counts what does not fit)."""
    from bot.events import Event
    from bot.watch.catchup import CATCHUP_MAX_PARTS

    now = datetime(2026, 11, 23, 12, tzinfo=UTC)

    def catch_up(n: int) -> list[Event]:
        events = [Event(kind=STATUS, key=f"status:{i}:1:1>2", task_id=i, task_general=i, task_title="T",
                        occurred_at=now) for i in range(n)]
        digests, kept = fold(events, [DeliveryRow(e.key, CHAT) for e in events], now, threshold=10, max_age=None)
        assert len(kept) == len(digests) and len({d.key for d in digests}) == len(digests)
        assert sum(len(d.payload.items) for d in digests) == n  # nothing dropped from the record
        return digests

    assert [len(d.payload.items) for d in catch_up(60)] == [25, 25, 10]
    long = catch_up(1000)
    assert len(long) == CATCHUP_MAX_PARTS and [len(d.payload.items) for d in long[:-1]] == [25] * 4
