"""Issue 10 over real HTTP against the fake Planfix: statuses without deadlines, resumable first start and
catch-up on a large account, new tasks announced, assignments, bursts folded into one message per chat."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.events import OVERDUE, STATUS
from bot.planfix.errors import PlanfixError
from bot.watch.diff import parse_leads
from tests.test_detection import ANNA, BORIS, World, world_at


@pytest.fixture
async def world(tmp_path):
    """test_detection's world with a patient client: these tests move a lot of data on a shared, busy machine."""
    async with world_at(tmp_path, timeout=5) as made:
        yield made


# --- item 3: deadlines only where Planfix tracks them ----------------------------------------------------------

async def test_a_rejected_task_that_planfix_keeps_active_never_becomes_overdue(world):
    """The fake serves «Отклоненная» with isActive=1, hasDeadline=0 (as a real account did): a task in it gets no
    overdue notice and no reminder; reopened, its passed deadline counts again."""
    due = (world.clock.now + timedelta(minutes=30)).replace(second=0)
    rejected = world.pf.add_task(title="R", owner=ANNA, status=6, deadline=due)
    normal = world.pf.add_task(title="N", owner=ANNA, status=2, deadline=due)
    poller = world.poller(leads=parse_leads(["1h"]))
    await poller.poll_once()
    assert poller.statuses[6].is_active and not poller.statuses[6].has_deadline
    world.clock.advance(hours=2)
    assert [(e.kind, e.task_id) for e in poller.check_deadlines().events] == [(OVERDUE, normal.id)]
    world.pf.change_status(rejected.id, 2, by=BORIS)
    world.clock.advance(seconds=30)
    events = (await poller.poll_once()).events
    assert [(e.kind, e.task_id) for e in events] == [(STATUS, rejected.id), (OVERDUE, rejected.id)]


# --- item 6: any size completes -----------------------------------------------------------------------------------

def _requests(world, method: str) -> int:
    return len(world.pf.requests_for(method))


async def _until_caught_up(world, job, poller, *, steps: int) -> int:
    """Run the poll job until the first start or catch-up completes; returns how many steps it took."""
    for step in range(1, steps + 1):
        await world.run(job)
        if poller.caught_up:
            return step
    raise AssertionError(f"not caught up after {steps} steps: {poller.progress}")


async def test_a_30000_task_first_start_with_a_short_step_timeout_still_completes(world):
    """30,000 tasks (300 pages) under a 2 s step: each step commits its pages and stops at half the timeout, the
    next continues (after a time-out too, on a busy machine); every task is remembered once, silently, and no
    page is read twice except the one a time-out cut off."""
    for i in range(30_000):
        world.pf.add_task(title=f"T{i}", owner=ANNA, workers=(BORIS,), record_action=False)
    poller = world.poller(poll_timeout=2.0)
    detection = world.detection(poller)
    poll = detection.job("poll")
    poll.timeout = 2.0
    steps = await _until_caught_up(world, poll, poller, steps=200)
    assert steps > 1 and poll.results["ok"] >= 2
    assert world.store.tasks.snapshot_count() == 30_000 and world.rows() == []
    # 300 full pages, then the empty page that ends the list (never stop on totalCount alone)
    assert _requests(world, "task.getList") <= 301 + poll.results["transient"]
    assert poller.progress is None and world.store.meta.get_meta("baseline_state") == ""


async def test_an_interrupted_first_start_continues_from_its_page_after_a_restart(world):
    """A first start killed after some pages (here: a step timeout, then a new process on the same state file)
    reads only the pages it had not committed; /status and systemd see its progress meanwhile."""
    for i in range(1_000):
        world.pf.add_task(title=f"T{i}", owner=ANNA, record_action=False)
    first = world.poller()
    original = world.pf._task_get_list
    calls = {"n": 0}

    def dies_at_page_5(doc):  # the process is killed while page 5 is on its way
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("killed")
        return original(doc)

    world.pf._methods["task.getList"] = dies_at_page_5
    with pytest.raises(PlanfixError):
        await first.poll_once()
    world.pf._methods["task.getList"] = original
    assert world.store.tasks.snapshot_count() == 400
    restarted = World(world.pf, world.clock, world.store, world.client).poller()
    progress = restarted.resume_progress()
    assert (progress.kind, progress.done, progress.total) == ("first_start", 400, 1_000)
    assert "400 of 1,000 tasks" in progress.line()
    before = _requests(world, "task.getList")
    await restarted.poll_once()
    assert world.store.tasks.snapshot_count() == 1_000
    assert _requests(world, "task.getList") - before == 7  # pages 5..10 and the empty page 11; nothing read twice
    assert restarted.caught_up and restarted.resume_progress() is None


async def test_a_catchup_after_three_days_down_is_read_in_committed_subwindows_and_loses_nothing(world):
    """6,000 changes on 2,000 tasks while the daemon was down for three days; the catch-up under a 2 s step reads
    the feed 5 pages at a time, commits each sub-window with its cursor, and a restart half-way continues from
    the cursor: every task's change is announced exactly once."""
    tasks = [world.pf.add_task(title=f"T{i}", owner=ANNA, record_action=False) for i in range(2_000)]
    poller = world.poller(poll_timeout=2.0, catchup_pages=5)
    while not poller.caught_up:  # first start
        await poller.poll_once()
    down_at = world.clock.now
    for i in range(6_000):
        world.clock.advance(seconds=43)  # 6,000 × 43 s ≈ 3 days
        task = tasks[(i * 7) % len(tasks)]
        world.pf.change_status(task.id, 2 if task.status == 1 else 1, by=BORIS)
    world.clock.advance(minutes=5)
    before = {m: _requests(world, m) for m in ("action.getListByPeriod", "task.getMulti")}
    poller = World(world.pf, world.clock, world.store, world.client).poller(slice_seconds=0, catchup_pages=5)
    detection = world.detection(poller)
    poll = detection.job("poll")
    await world.run(poll)
    assert poller.more and not poller.caught_up
    progress = poller.progress
    assert progress.kind == "catch_up" and down_at < progress.reached < world.clock.now
    assert "catching up" in progress.line()
    # A restart in the middle: a new process continues from the committed cursor.
    poller = World(world.pf, world.clock, world.store, world.client).poller(poll_timeout=2.0, catchup_pages=5)
    detection = world.detection(poller)
    poll = detection.job("poll")
    poll.timeout = 2.0
    await _until_caught_up(world, poll, poller, steps=100)
    assert poll.results["ok"] >= 1
    changed = {t.id for t in tasks if t.status != 1}
    status_events = world.store.db.execute("SELECT task_id FROM events WHERE kind = 'status'").fetchall()
    assert sorted(r[0] for r in status_events) == sorted(changed)  # each changed task once, nothing lost
    pages = _requests(world, "action.getListByPeriod") - before["action.getListByPeriod"]
    cards = _requests(world, "task.getMulti") - before["task.getMulti"]
    assert pages <= 60 * 1.1 + 2 + 5 * poll.results["transient"], pages  # 6,000 actions = 60 pages
    # 2,000 tasks = 20 getMulti; a card read during the catch-up is not read again for later actions, but that
    # memory does not survive the restart, so the second process may read each card once more.
    assert cards <= 2 * 20 + 12 + 5 * poll.results["transient"], cards


# --- item 7: tasks created while we watch are not silent ----------------------------------------------------------

ANNA_TG, BORIS_TG = 100, 101


def _routed(world, routes):
    from bot.config import Route, UserLink
    from bot.notify.routing import deliveries
    from tests.test_detection import MSK

    users = [UserLink(telegram_id=ANNA_TG, planfix_id=ANNA), UserLink(telegram_id=BORIS_TG, planfix_id=BORIS)]
    routes = [Route(**r) for r in routes]
    return lambda event, now: deliveries(event, now, routes=routes, users=users, zone=MSK)


def _sent(world):
    """(event kind, chat) of every queued row, in order."""
    return [(r["event_key"].split(":")[0], r["chat_id"]) for r in world.rows()]


async def test_a_task_created_and_moved_on_between_two_polls_is_announced_and_its_assignee_told(world):
    """Boris creates a task for Anna and moves it to "in progress" and its deadline, all between two polls: the
    team chat hears the status and deadline changes, Anna also hears she was assigned; Boris hears nothing of
    his own doing; a route opting in to `assigned` hears of the assignment too."""
    from bot.events import ASSIGNED, DEADLINE

    poller = world.poller(route=_routed(world, [{"chat_id": -1}, {"chat_id": -2, "events": ["assigned"]}]))
    await poller.poll_once()  # first start: nothing yet
    world.clock.advance(seconds=10)
    due = (world.clock.now + timedelta(days=1)).replace(second=0)
    task = world.pf.add_task(title="New", owner=BORIS, workers=(ANNA,), deadline=due)
    world.pf.change_status(task.id, 2, by=BORIS)
    world.pf.change_deadline(task.id, due + timedelta(days=2), by=BORIS)
    world.clock.advance(seconds=30)
    await poller.poll_once()
    assert sorted(_sent(world)) == sorted([
        (STATUS, -1), (STATUS, ANNA_TG), (DEADLINE, -1), (DEADLINE, ANNA_TG), (ASSIGNED, ANNA_TG), (ASSIGNED, -2),
    ])


async def test_a_linked_user_added_as_assignee_of_an_existing_task_is_told_unless_they_did_it(world):
    """An existing task gets Anna as assignee (by Boris): Anna gets `assigned`; routes not asking for it hear
    nothing. Boris adding himself is not told to Boris."""
    from bot.events import ASSIGNED

    task = world.pf.add_task(title="Old", owner=BORIS)
    poller = world.poller(route=_routed(world, [{"chat_id": -1}]))
    await poller.poll_once()
    world.clock.advance(seconds=30)
    world.pf.edit_task_silently(task.id, workers=(ANNA,))
    world.pf.add_comment(task.id, "Anna, please take it", by=BORIS)
    world.clock.advance(seconds=30)
    await poller.poll_once()
    # Boris's comments reach Anna too, now that she takes part (issue 13 item 0); the team chat did not ask.
    assert sorted(_sent(world)) == [(ASSIGNED, ANNA_TG), ("comment", ANNA_TG)]
    world.pf.edit_task_silently(task.id, workers=(ANNA, BORIS))
    world.pf.add_comment(task.id, "me too", by=BORIS)
    world.clock.advance(seconds=30)
    await poller.poll_once()
    assert sorted(_sent(world)) == [(ASSIGNED, ANNA_TG), ("comment", ANNA_TG), ("comment", ANNA_TG)]


# --- item 9: a burst is one message, live too ---------------------------------------------------------------------

async def test_150_tasks_moved_at_once_reach_each_chat_as_one_grouped_message_naming_every_task(world):
    """A bulk change in Planfix (150 tasks to another status within one poll) while running: the team chat and
    Anna (assignee of all) each get one grouped message — in as few parts as Telegram's length limit forces —
    that names every task and its change; nothing is cut ("and N more") and nothing is dropped. Boris, who made
    the change, gets nothing. A smaller change still goes out one message per task."""
    from zoneinfo import ZoneInfo

    from bot.events import DIGEST, Event
    from bot.fakes.telegram_html import parse_telegram_html
    from bot.notify.markup import visible_len as _visible_len
    from bot.notify.render import MESSAGE_LIMIT, digest_parts, render_event, utf16_len

    web, zone = "https://acme.planfix.com", ZoneInfo("Europe/Moscow")
    tasks = [world.pf.add_task(title=f"Landing page section {i} — copy, images and the «contact» form",
                               owner=BORIS, workers=(ANNA,)) for i in range(150)]
    poller = world.poller(route=_routed(world, [{"chat_id": -1}]), burst_threshold=10,
                          split_digest=lambda events: digest_parts(events, web_url=web, tz=zone))
    await poller.poll_once()
    for task in tasks[:3]:
        world.pf.change_status(task.id, 2, by=BORIS)
    world.clock.advance(seconds=30)
    await poller.poll_once()
    assert sorted(_sent(world)) == sorted([(STATUS, -1), (STATUS, ANNA_TG)] * 3)  # under the threshold: one each
    before = len(world.rows())
    for task in tasks:
        world.pf.change_status(task.id, 3, by=BORIS)
    world.clock.advance(seconds=30)
    result = await poller.poll_once()
    assert len(result.events) == 150
    rows = world.rows()[before:]
    for chat in (-1, ANNA_TG):
        keys = [r["event_key"] for r in rows if r["chat_id"] == chat]
        assert all(k.startswith(f"{DIGEST}:") for k in keys) and 2 <= len(keys) <= 6, keys
        parts = [Event.from_json(world.payload(k)) for k in keys]
        named = [item["task_general"] for p in parts for item in p.payload.items]
        assert sorted(named) == sorted(t.general for t in tasks)  # every task, once
        for index, part in enumerate(parts, 1):
            for lang in ("ru", "en"):
                text = render_event(part, lang=lang, tz=zone, web_url=web)
                shown = parse_telegram_html(text)  # what Telegram would show; raises if it would refuse it
                assert _visible_len(text) <= MESSAGE_LIMIT and utf16_len(shown) <= MESSAGE_LIMIT
                assert "more" not in shown and "ещё" not in shown
                assert f"({index}/{len(parts)})" in text
            assert f"150 changes at once ({index}/{len(parts)})" in render_event(part, lang="en", tz=zone, web_url=web)
            assert f"Сразу 150 изменений ({index}/{len(parts)})" in render_event(part, lang="ru", tz=zone, web_url=web)
    assert not [r for r in rows if r["chat_id"] == BORIS_TG]


async def test_a_long_first_start_tells_systemd_it_is_ready_and_how_far_it_got(tmp_path):
    """`planfix-bot run` under systemd: while a first start is still paging (page 2 held up here), READY=1
    already went out with a STATUS= saying how many tasks are remembered, so TimeoutStartSec cannot kill it."""
    import asyncio
    import socket

    from bot.fakes.planfix import FakePlanfix
    from bot.fakes.telegram import FakeTelegram
    from tests.e2e import Daemon, count_requests, daemon_config, write_config

    sock_path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.setblocking(False)
    received: list[str] = []
    async with FakePlanfix() as pf, FakeTelegram() as tg:
        for i in range(250):
            pf.add_task(title=f"T{i}", record_action=False)
        config = daemon_config(tmp_path, pf, tg)
        config["planfix"]["requests_per_second"] = 2.0  # page 2 leaves 0.5 s after page 1: time to hold it up
        config = write_config(tmp_path / "c.toml", config)
        daemon = await Daemon(config, tmp_path / "d.log",
                              env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "2000000"}).start()
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + 60
            while count_requests(pf, "task.getList") < 1:
                assert loop.time() < end
                await asyncio.sleep(0.05)
            pf.inject_fault("hang", method="task.getList", seconds=2.5, times=1)  # page 2 takes 2.5 s
            while not any("READY=1" in m for m in received):
                assert loop.time() < end, received
                try:
                    received.append(server.recv(4096).decode())
                except BlockingIOError:
                    await asyncio.sleep(0.05)
            ready = next(m for m in received if "READY=1" in m)
            assert "STATUS=first start: 100 of 250 tasks remembered" in ready, ready
        finally:
            assert await daemon.stop() == 0
    server.close()


async def test_a_new_task_the_sweep_sees_before_the_feed_is_still_announced(world):
    """The sweep pages past a task created (and moved on) since the last feed poll: it leaves the task to the
    feed, whose actions tell what changed, instead of remembering it silently."""
    poller = world.poller(route=_routed(world, [{"chat_id": -1}]))
    detection = world.detection(poller)
    await world.run(detection.job("poll"))
    world.clock.advance(seconds=10)
    task = world.pf.add_task(title="New", owner=BORIS)
    world.pf.change_status(task.id, 2, by=BORIS)
    sweep = detection.job("sweep")
    sweep.next_run = None
    await world.run(sweep)
    assert world.store.tasks.snapshots([task.id]) == {} and _sent(world) == []
    world.clock.advance(seconds=30)
    poll = detection.job("poll")
    poll.next_run = None
    await world.run(poll)
    assert _sent(world) == [(STATUS, -1)]


async def test_a_catchup_change_whose_action_is_in_a_later_subwindow_keeps_its_author(world):
    """During the downtime Anna moves a task's deadline early on and Boris changes its status days later: the
    card read in the first sub-window already shows the new status, but the catch-up waits for the sub-window
    holding Boris's action (without reading the card again), so the status change is his, the deadline Anna's."""
    from bot.events import DEADLINE

    filler = [world.pf.add_task(title=f"F{i}", owner=ANNA, record_action=False) for i in range(300)]
    task = world.pf.add_task(title="T", owner=ANNA, record_action=False)
    poller = world.poller(slice_seconds=0, catchup_pages=1)
    while not poller.caught_up:
        await poller.poll_once()
    world.clock.advance(hours=1)
    world.pf.change_deadline(task.id, (world.clock.now + timedelta(days=5)).replace(second=0), by=ANNA)
    for i, other in enumerate(filler):  # three pages of other changes in between
        world.clock.advance(minutes=10)
        world.pf.add_comment(other.id, f"c{i}", by=ANNA)
    world.pf.change_status(task.id, 2, by=BORIS)
    world.clock.advance(minutes=5)
    before = len(world.pf.requests_for("task.getMulti"))
    poller = World(world.pf, world.clock, world.store, world.client).poller(slice_seconds=0, catchup_pages=1)
    while not poller.caught_up:
        await poller.poll_once()
    rows = world.store.db.execute("SELECT kind, payload FROM events WHERE task_id = ?", [task.id]).fetchall()
    import json

    actors = {kind: json.loads(payload)["actor_id"] for kind, payload in rows}
    assert actors == {DEADLINE: ANNA, STATUS: BORIS}
    asked = [r for r in world.pf.requests_for("task.getMulti")[before:] if str(task.id) in r.param_all("tasks/id")]
    assert len(asked) == 1  # its card was read once
