"""The background jobs on APScheduler: each job's own interval trigger follows the job's decisions (pacer
interval, back-off, pause, config-fatal stop), and a job never overlaps itself."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.planfix.budget import Budget
from bot.planfix.client import PlanfixClient
from bot.planfix.errors import PlanfixConfigError, PlanfixTransientError
from bot.watch.jobs import IDLE, BackgroundJob, Detection, Health, Wait, WaitReason, fire, job_id, next_look
from bot.watch.poller import Poller
from state.store import Store


def make_job(step, *, interval: float = 3600.0, ready=lambda: True, name: str = "poll") -> BackgroundJob:
    return BackgroundJob(name, step, interval=lambda: interval, health=Health(), budget=Budget(),
                         max_backoff=600.0, ready=ready, rng=random.Random(1))


def add(scheduler: AsyncIOScheduler, job: BackgroundJob) -> None:
    # As Detection.schedule does, but not due at once: the test fires the job itself.
    scheduler.add_job(fire, "interval", seconds=job.interval(), args=[job, scheduler], id=job_id(job),
                      max_instances=1, coalesce=True, misfire_grace_time=None,
                      next_run_time=datetime.now(UTC) + timedelta(hours=1))


def seconds_to_next(scheduler: AsyncIOScheduler, job: BackgroundJob) -> float:
    return (scheduler.get_job(job_id(job)).next_run_time - datetime.now(UTC)).total_seconds()


async def test_the_trigger_follows_the_interval_the_backoff_and_the_stop() -> None:
    interval = {"now": 3600.0}
    outcomes: list[Exception | None] = [None, PlanfixTransientError("busy", code="0011"), None,
                                        PlanfixConfigError("bad key", code="0001")]

    async def step() -> None:
        if (outcome := outcomes.pop(0)) is not None:
            raise outcome

    job = BackgroundJob("poll", step, interval=lambda: interval["now"], health=Health(), budget=Budget(),
                        max_backoff=600.0, rng=random.Random(1))
    scheduler = AsyncIOScheduler(timezone=UTC)
    add(scheduler, job)
    scheduler.start(paused=True)
    try:
        await fire(job, scheduler)  # ok: the next run one interval later
        assert 3590 < seconds_to_next(scheduler, job) <= 3600
        interval["now"] = 120.0  # the pacer chose another interval
        job.next_run = None
        await fire(job, scheduler)  # transient: a postponed run, the back-off (5-10 s for the first retry)
        assert 4 < seconds_to_next(scheduler, job) <= 10 and job.failures == 1
        job.next_run = None
        await fire(job, scheduler)  # ok again: the trigger now has the pacer's interval
        trigger = scheduler.get_job(job_id(job)).trigger
        assert trigger.interval == timedelta(seconds=120) and 110 < seconds_to_next(scheduler, job) <= 120
        job.next_run = None
        await fire(job, scheduler)  # config-fatal: the job leaves the scheduler
        assert scheduler.get_job(job_id(job)) is None and job.results["config_error"] == 1
    finally:
        scheduler.shutdown(wait=False)


async def test_a_job_not_ready_looks_again_soon_without_running() -> None:
    runs: list[int] = []

    async def step() -> None:
        runs.append(1)

    job = make_job(step, ready=lambda: False)
    scheduler = AsyncIOScheduler(timezone=UTC)
    add(scheduler, job)
    scheduler.start(paused=True)
    try:
        await fire(job, scheduler)
        assert runs == [] and 0 < seconds_to_next(scheduler, job) <= IDLE
    finally:
        scheduler.shutdown(wait=False)


async def test_a_job_never_overlaps_itself_on_the_scheduler() -> None:
    running, overlaps, runs = [0], [0], [0]

    async def step() -> None:
        running[0] += 1
        overlaps[0] = max(overlaps[0], running[0])
        await asyncio.sleep(0.5)
        running[0] -= 1
        runs[0] += 1

    job = make_job(step, interval=5.0)
    scheduler = AsyncIOScheduler(timezone=UTC)
    # A trigger far faster than the step:
    scheduler.add_job(fire, "interval", seconds=0.05, args=[job, scheduler], id=job_id(job), max_instances=1,
                      coalesce=True, misfire_grace_time=None, next_run_time=datetime.now(UTC))
    scheduler.start()
    try:
        await asyncio.sleep(0.25)
        assert running[0] == 1  # while it runs, its next run is held back
        assert seconds_to_next(scheduler, job) > 100
        await asyncio.sleep(0.5)
        assert runs[0] == 1 and 4 < seconds_to_next(scheduler, job) <= 5  # the trigger fired into the run: skipped
    finally:
        scheduler.shutdown(wait=False)
    assert overlaps[0] == 1


async def test_every_detection_job_gets_its_own_trigger(tmp_path) -> None:
    store = Store.open(tmp_path / "state.sqlite3")
    client = PlanfixClient(url="http://127.0.0.1:9/xml/", account="acme", api_key="k", token="t", budget=Budget())
    poller = Poller(client=client, store=store, route=lambda event, now: [])
    detection = Detection.build(poller, interval=45, deadline_every=7, sweep_period=timedelta(hours=24))
    scheduler = AsyncIOScheduler(timezone=UTC)
    detection.schedule(scheduler)
    scheduler.start(paused=True)  # nothing runs: no request leaves
    try:
        jobs = {job.id: job for job in scheduler.get_jobs()}
        assert set(jobs) == {"watch-poll", "watch-deadlines", "watch-sweep"}
        assert jobs["watch-poll"].trigger.interval >= timedelta(seconds=45)  # the pacer's interval, at least the base
        assert jobs["watch-deadlines"].trigger.interval == timedelta(seconds=7)
        assert all(job.max_instances == 1 for job in jobs.values())
    finally:
        scheduler.shutdown(wait=False)
        await client.aclose()
        store.close()


def test_when_a_job_is_looked_at_again() -> None:
    assert next_look(fatal=True, ready=True, store_failing=False, until_due=0) == Wait(None, WaitReason.STOPPED)
    assert next_look(fatal=False, ready=True, store_failing=True, until_due=0) == Wait(IDLE, WaitReason.STORE_FAILING)
    assert next_look(fatal=False, ready=False, store_failing=False, until_due=0) == Wait(IDLE, WaitReason.NOT_READY)
    assert next_look(fatal=False, ready=True, store_failing=False, until_due=42.0) == Wait(42.0, WaitReason.DUE)


def test_digests_run_at_their_local_time_in_each_chats_zone_and_hourly_besides() -> None:
    from datetime import time
    from zoneinfo import ZoneInfo

    from bot.chat.digest import SAFETY_NET, DigestTarget, digest_trigger

    moscow, new_york = ZoneInfo("Europe/Moscow"), ZoneInfo("America/New_York")
    now = datetime(2026, 3, 2, 5, 40, tzinfo=UTC)  # 08:40 in Moscow
    targets = [DigestTarget(1, time(9, 0), moscow), DigestTarget(2, time(8, 30), new_york)]
    trigger = digest_trigger(targets, now)
    assert trigger.get_next_fire_time(None, now) == datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # 09:00 Moscow
    # 13:10 UTC: past Moscow's 09:00, before New York's 08:30 (13:30 UTC in winter).
    later = datetime(2026, 3, 2, 13, 10, tzinfo=UTC)
    assert digest_trigger(targets, later).get_next_fire_time(None, later) == datetime(2026, 3, 2, 13, 30, tzinfo=UTC)
    # 12:20 UTC: the hourly run (13:20) comes before New York's.
    noon = datetime(2026, 3, 2, 12, 20, tzinfo=UTC)
    assert digest_trigger(targets, noon).get_next_fire_time(None, noon) == datetime(2026, 3, 2, 13, 20, tzinfo=UTC)
    # Without targets, the hourly run still comes.
    assert digest_trigger([], now).get_next_fire_time(None, now) == now + timedelta(seconds=SAFETY_NET)


async def test_a_job_with_a_trigger_runs_next_at_its_next_fire_time() -> None:
    from apscheduler.triggers.cron import CronTrigger

    async def step() -> None:
        pass

    now = datetime(2026, 3, 2, 5, 40, tzinfo=UTC)
    job = BackgroundJob("digest", step, interval=lambda: 30.0, health=Health(), budget=Budget(), clock=lambda: now,
                        trigger=lambda: CronTrigger(hour=9, minute=0, timezone=UTC))
    assert await job.run_once()
    assert job.next_run == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
