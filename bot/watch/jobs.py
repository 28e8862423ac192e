"""Background jobs and what they do when Planfix fails, and the poll interval that follows the budget.

Every job (the feed poll, the reconciliation sweep, the local deadline check, and the daemon's digest, pruning
and group-maker checks) runs one step at a time and decides itself when it runs next (`BackgroundJob.run_once`
and `wait`: interval, pacer, back-off, pauses). In the daemon each job has its own APScheduler interval trigger
that follows that decision (`Detection.schedule`); the bench drives the same jobs with plain asyncio sleeps on
its virtual clock (`Detection.run`). The policy for a failed step, by error class (bot/planfix/errors.py):

* transient (0011, 3014, HTTP 5xx, timeouts, malformed/truncated XML, refused bodies, connection errors) and
  anything unexpected: retry after a back-off that doubles from min(interval, 10 s) up to
  `poll.max_backoff_seconds`, with jitter (50–100 %). Nothing is skipped: the step commits nothing unless it
  completes, and the feed cursor only moves on a commit.
* config-fatal (0001, 0002, 0004, 0010, 0012, 0013, 0014, 0020, 0022, 0023, 0024, 1001, 1002, and a redirect,
  401, 403 or 404 from the endpoint — planfix.url is wrong, PlanfixEndpointError carries the fix): every
  background job stops; one clear log line with the fix; the admins are told once; commands keep working
  (`Health.problem` explains why notifications stopped).
* the daily limit (0007) or a budget used up: background jobs wait until the budget resumes (budget.py), the
  admins are told once per episode, and everything resumes by itself.
* per-item errors (3001, 3002, 3008, 4001, 6001, …) never get here: the steps forget (3001) or set aside that
  task and go on (Detector.fetch_cards). A short-term 0007 (plenty left today) only delays the job, silently.
* the state file refuses writes (read-only, disk full, I/O error; state/health.py): every job waits — a poll
  whose results cannot be stored would only be repeated — and runs again as soon as the sender's retried write
  succeeds. The step's transaction was rolled back, so the cursor did not move and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.clock import utc_now
from bot.planfix.budget import Budget, BudgetPaused, Priority
from bot.planfix.errors import (
    PlanfixConfigError,
    PlanfixError,
    PlanfixItemError,
    PlanfixLimitError,
    PlanfixRequestError,
    fix_for,
)
from bot.redact import redact
from bot.watch.poller import Poller
from state.health import StoreHealth, is_write_failure

log = structlog.get_logger(__name__)

NotifyAdmins = Callable[[str], Awaitable[None]]

IDLE = 1.0  # seconds: a job that may not run yet (not ready, state file failing) looks again this soon
FIRST_BACKOFF_CAP = 10.0  # seconds: the first retry waits min(interval, this)
STEP_TIMEOUT = 300.0  # seconds: a step that takes longer is abandoned (and retried) rather than left hanging

def what_refused(exc: PlanfixError) -> str:
    return exc.code or (f"HTTP {exc.http_status}" if exc.http_status else type(exc).__name__)


@dataclass
class Health:
    """What the background jobs share: the config-fatal stop and the once-per-episode admin notices."""

    notify_admins: NotifyAdmins | None = None
    fatal: PlanfixError | None = None
    paused_until: datetime | None = None  # background work waits for the budget (0007 or used up)
    _limit_told: bool = False

    @property
    def problem(self) -> str | None:
        """Why notifications stopped or wait, in one sentence (for commands and status), or None."""
        if self.fatal is not None:
            return f"Planfix refuses the bot's configuration ({what_refused(self.fatal)}): {fix_for(self.fatal)}"
        if self.paused_until is not None:
            return f"the daily Planfix request limit is reached; background checks resume at {self.paused_until:%Y-%m-%d %H:%M %Z}"
        return None

    async def tell_admins(self, text: str) -> None:
        if self.notify_admins is None:
            return
        try:
            await self.notify_admins(redact(text))
        except Exception as exc:  # a failed notice must never take a job down
            log.warning("watch.admin_notice_failed", error=str(exc))

    async def config_fatal(self, job: str, exc: PlanfixError) -> None:
        if self.fatal is not None:
            return
        self.fatal = exc
        log.error("planfix.config_error", job=job, code=exc.code, http_status=exc.http_status, error=str(exc),
                  fix=fix_for(exc), effect="background polling stopped; commands still answered")
        await self.tell_admins(
            f"⚠️ Planfix refuses the bot: {html.escape(redact(str(exc)))}.\nFix: {html.escape(fix_for(exc))}, then "
            "restart the bot. Notifications are stopped until then; commands are still answered."
        )

    async def limited(self, exc: PlanfixLimitError, until: datetime) -> None:
        self.paused_until = until
        if self._limit_told:
            return
        self._limit_told = True
        reason = "Planfix answered 0007 (daily request limit)" if not isinstance(exc, BudgetPaused) else (
            "the daily Planfix request budget is used up")
        log.warning("planfix.background_paused", reason=reason, until=until.isoformat())
        await self.tell_admins(
            f"⏸ {html.escape(reason)}: background checks are paused until {until:%Y-%m-%d %H:%M %Z} and resume "
            "by themselves. Commands are still answered."
        )

    def ok(self) -> None:
        if self.paused_until is not None:
            log.info("planfix.background_resumed")
        self.paused_until = None
        self._limit_told = False


class WaitReason(StrEnum):
    DUE = "due"  # its own due time (interval, pacer, back-off, pause), maybe now
    NOT_READY = "not_ready"  # waits for something else (the first feed poll), looks again soon
    STORE_FAILING = "store_failing"  # the state file refuses writes: looks again soon
    STOPPED = "stopped"  # config-fatal: never again in this process


@dataclass(frozen=True)
class Wait:
    seconds: float | None  # None: stopped
    reason: WaitReason


def next_look(*, fatal: bool, ready: bool, store_failing: bool, until_due: float) -> Wait:
    """When a job is looked at again, and why."""
    if fatal:
        return Wait(None, WaitReason.STOPPED)
    if store_failing:
        return Wait(IDLE, WaitReason.STORE_FAILING)
    if not ready:
        return Wait(IDLE, WaitReason.NOT_READY)
    return Wait(until_due, WaitReason.DUE)


class BackgroundJob:
    """One periodic step with the error policy above. `interval()` says how long to wait after a success."""

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[Any]],
        *,
        interval: Callable[[], float],
        health: Health,
        budget: Budget,
        clock: Callable[[], datetime] = utc_now,
        max_backoff: float = 300.0,
        lock: asyncio.Lock | None = None,
        ready: Callable[[], bool] = lambda: True,
        timeout: float = STEP_TIMEOUT,
        rng: random.Random | None = None,
        uses_planfix: bool = True,
        store_health: StoreHealth | None = None,
        trigger: Callable[[], BaseTrigger] | None = None,
    ) -> None:
        self.name = name
        self.trigger = trigger  # when set, a success is followed by this trigger's next fire time, not `interval`
        self.store_health = store_health
        self.uses_planfix = uses_planfix  # only a job that talked to Planfix can tell that a pause is over
        self.step = step
        self.interval = interval
        self.health = health
        self.budget = budget
        self.clock = clock
        self.max_backoff = max_backoff
        self.lock = lock or asyncio.Lock()
        self.ready = ready
        self.timeout = timeout
        self.rng = rng or random.Random()
        self.next_run: datetime | None = None  # None: due now
        self.failures = 0
        self.runs = 0
        self.results: Counter[str] = Counter()  # ok | transient | limited | config_error | crashed

    def seconds_until_due(self) -> float:
        if self.next_run is None:
            return 0.0
        return max(0.0, (self.next_run - self.clock()).total_seconds())

    def backoff(self) -> float:
        """Seconds before retry number `failures`: doubling, capped, with jitter."""
        first = min(max(self.interval(), 1.0), FIRST_BACKOFF_CAP)
        delay = min(self.max_backoff, first * 2 ** max(0, self.failures - 1))
        return delay * self.rng.uniform(0.5, 1.0)

    async def run_once(self) -> bool:
        """Run the step if it is due and allowed; returns whether it ran (successfully or not)."""
        if self.health.fatal is not None or not self.ready() or self.seconds_until_due() > 0:
            return False
        if self.store_health is not None and self.store_health.failing:
            return False
        self.runs += 1
        try:
            async with self.lock, asyncio.timeout(self.timeout):
                await self.step()
        except PlanfixConfigError as exc:
            self.results["config_error"] += 1
            await self.health.config_fatal(self.name, exc)
        except PlanfixLimitError as exc:
            self.results["limited"] += 1
            until = self.budget.background_resume_at() or self.clock() + timedelta(seconds=self.max_backoff)
            self.next_run = until
            if self.budget.short_pause:  # a short-term 0007 (the day is not used up): minutes, not worth a message
                log.warning("job.rate_limited", job=self.name, until=until.isoformat())
            else:
                await self.health.limited(exc, until)
        except (PlanfixError, TimeoutError) as exc:
            self.results["transient"] += 1
            self.failures += 1
            delay = self.backoff()
            self.next_run = self.clock() + timedelta(seconds=delay)
            code = getattr(exc, "code", None)
            level = log.error if isinstance(exc, (PlanfixRequestError, PlanfixItemError)) else log.warning
            level("job.retry", job=self.name, attempt=self.failures, retry_in_s=round(delay, 1), code=code,
                  error=str(exc) or type(exc).__name__, kind=type(exc).__name__)
        except Exception as exc:
            if is_write_failure(exc):
                self.results["store_error"] += 1
                if self.store_health is not None:
                    self.store_health.failed(exc, self.clock())  # the sender retries the write, then clears it
                self.next_run = None  # due again as soon as the state file takes writes
                log.error("job.store_write_failed", job=self.name, error=str(exc),
                          effect="paused until the state file can be written")
                return True
            self.results["crashed"] += 1
            self.failures += 1
            delay = self.backoff()
            self.next_run = self.clock() + timedelta(seconds=delay)
            log.exception("job.crashed", job=self.name, attempt=self.failures, retry_in_s=round(delay, 1))
        else:
            self.results["ok"] += 1
            if self.failures:
                log.info("job.recovered", job=self.name, after_failures=self.failures)
            self.failures = 0
            if self.uses_planfix:
                self.health.ok()
            self.next_run = self.next_after_success()
        return True

    def next_after_success(self) -> datetime:
        now = self.clock()
        if self.trigger is not None and (at := self.trigger().get_next_fire_time(None, now)) is not None:
            return at
        return now + timedelta(seconds=self.interval())

    def wait(self) -> Wait:
        """When this job should be looked at again — the one timing decision both drivers (APScheduler in
        production, `Detection.run` on the bench's virtual clock) obey."""
        return next_look(fatal=self.health.fatal is not None, ready=self.ready(),
                         store_failing=self.store_health is not None and self.store_health.failing,
                         until_due=self.seconds_until_due())

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` (or a config-fatal error): sleep as `wait()` says, run, repeat (the asyncio driver)."""
        while not stop.is_set() and (delay := self.wait().seconds) is not None:
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
                continue
            await self.run_once()


@dataclass
class Pacer:
    """The feed poll interval that spends the day's budget evenly: never below `base` (poll.interval_seconds),
    longer when the requests left today (minus the reserve for commands and the sweep's planned share) would
    not last until the reset at the current pace."""

    budget: Budget
    base: float
    sweep_rate: Callable[[], float] = lambda: 0.0  # planned sweep requests per second
    per_poll: float = 1.0  # moving average of requests per feed poll (feed pages + task cards)

    def observe(self, requests: int) -> None:
        self.per_poll = 0.8 * self.per_poll + 0.2 * max(1, requests)

    def interval(self) -> float:
        seconds = self.budget.seconds_to_reset()
        spare = self.budget.remaining() - self.budget.reserve - self.sweep_rate() * seconds
        if spare < self.per_poll:
            return max(self.base, seconds)
        return max(self.base, seconds * self.per_poll / spare)


@dataclass
class Detection:
    """The detection side of the daemon: the poller, the sweep, the deadline check, their jobs and budget."""

    poller: Poller
    budget: Budget
    health: Health
    jobs: list[BackgroundJob] = field(default_factory=list)
    pacer: Pacer | None = None
    sweep: Any = None  # bot.watch.sweep.Sweep | None

    @classmethod
    def build(
        cls,
        poller: Poller,
        *,
        interval: float,
        max_backoff: float = 300.0,
        deadline_every: float = 5.0,
        sweep_period: timedelta | None = timedelta(hours=24),
        notify_admins: NotifyAdmins | None = None,
        clock: Callable[[], datetime] | None = None,
        deadline_grace: timedelta = timedelta(minutes=5),
        rng: random.Random | None = None,
        store_health: StoreHealth | None = None,
    ) -> Detection:
        from bot.watch.sweep import Sweep

        clock = clock or poller.clock
        budget = poller.client.budget
        health = Health(notify_admins=notify_admins)
        sweep = Sweep(poller, period=sweep_period) if sweep_period and sweep_period.total_seconds() > 0 else None
        pacer = Pacer(budget, interval, sweep.requests_per_second if sweep else (lambda: 0.0))
        lock = asyncio.Lock()  # the feed and the sweep never interleave: a stale card must not undo a fresh one
        common: dict[str, Any] = {"health": health, "budget": budget, "clock": clock, "max_backoff": max_backoff,
                                  "rng": rng, "store_health": store_health}

        started = clock()

        def deadlines_ready() -> bool:
            # After a restart the first feed poll folds what was missed into digests; overdue notices from the
            # downtime belong in them, so the local check waits for it (but not for ever if Planfix is down).
            return poller.caught_up or clock() - started > deadline_grace

        async def deadline_step() -> None:
            poller.detector.check_deadlines(caught_up=poller.caught_up)

        detection = cls(poller=poller, budget=budget, health=health, pacer=pacer, sweep=sweep)
        detection.jobs = [
            # A first start or catch-up that stopped at its time slice (progress committed) goes on at once.
            BackgroundJob("poll", detection.poll_step, interval=lambda: 0.0 if poller.more else pacer.interval(),
                          lock=lock, **common),
            BackgroundJob("deadlines", deadline_step, interval=lambda: deadline_every, ready=deadlines_ready,
                          lock=asyncio.Lock(), uses_planfix=False, **common),
        ]
        if sweep is not None:
            detection.jobs.append(BackgroundJob("sweep", sweep.step, interval=sweep.step_interval, lock=lock,
                                                ready=lambda: poller.caught_up, **common))
        return detection

    async def poll_step(self) -> None:
        """The poll job's step: one `Poller.poll_once`, its requests fed to the pacer (steady polls only)."""
        granted = self.budget.granted
        before = granted[Priority.FEED] + granted[Priority.ENRICH]
        steady = self.poller.caught_up  # start-up (user, statuses) and the first-start baseline are one-offs
        result = await self.poller.poll_once()
        if steady and self.pacer is not None and not result.baseline and not result.more:
            self.pacer.observe(granted[Priority.FEED] + granted[Priority.ENRICH] - before)

    def job(self, name: str) -> BackgroundJob:
        return next(j for j in self.jobs if j.name == name)

    @property
    def problem(self) -> str | None:
        return self.health.problem

    def schedule(self, scheduler: AsyncIOScheduler) -> None:
        """Put every job on the APScheduler scheduler with its own interval trigger (max_instances=1: a job never
        overlaps itself). After each run the trigger follows the job: the pacer's interval replaces the trigger's,
        a back-off or a pause becomes a postponed next run, a config-fatal error removes the job."""
        self.poller.restore_budget()
        for job in self.jobs:
            scheduler.add_job(
                fire, _trigger(job), args=[job, scheduler], id=job_id(job), name=job.name, max_instances=1,
                coalesce=True, misfire_grace_time=None, next_run_time=datetime.now(UTC),
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Run every job until `stop` is set (or configuration errors stop them), each on its own asyncio task with
        the same timing decisions (`BackgroundJob.wait`) as `schedule`: the bench's virtual-clock driver."""
        self.poller.restore_budget()
        tasks = [asyncio.create_task(job.run(stop), name=job_id(job)) for job in self.jobs]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def job_id(job: BackgroundJob) -> str:
    return f"watch-{job.name}"


def _trigger(job: BackgroundJob) -> BaseTrigger:
    if job.trigger is not None:
        return job.trigger()
    return IntervalTrigger(seconds=max(job.interval(), IDLE), timezone=UTC)


async def fire(job: BackgroundJob, scheduler: AsyncIOScheduler) -> None:
    """One APScheduler run of a job: hold its next run while the step runs (so the trigger never fires into a run
    in progress), run it, then re-time it from what the job decided."""
    with contextlib.suppress(JobLookupError):
        scheduler.modify_job(job_id(job), next_run_time=datetime.now(UTC) + timedelta(seconds=job.timeout + IDLE))
    try:
        await job.run_once()
    except asyncio.CancelledError:
        # Only a shutdown cancels a running step; its writes are one transaction, so nothing is half-done.
        log.info("job.cancelled", job=job.name)
        return
    retime(job, scheduler)


def retime(job: BackgroundJob, scheduler: AsyncIOScheduler) -> None:
    """Apply the job's own decision (interval, back-off, pause, stop) to its APScheduler trigger."""
    wait = job.wait()
    with contextlib.suppress(JobLookupError):
        if wait.seconds is None:
            scheduler.remove_job(job_id(job))
            log.info("job.stopped", job=job.name, reason="config_error")
            return
        scheduler.modify_job(job_id(job), trigger=_trigger(job),
                             next_run_time=datetime.now(UTC) + timedelta(seconds=wait.seconds))


def detection_from_settings(
    settings: Any,
    *,
    client: Any,
    store: Any,
    route: Any,
    notify_admins: NotifyAdmins | None = None,
    on_queued: Callable[[int], None] | None = None,
    clock: Callable[[], datetime] = utc_now,
    split_digest: Any = None,
) -> Detection:
    """Wire the detection side from validated settings (bot.config.Settings); `split_digest` (from the notify
    layer) says where a long digest must become several messages."""
    from bot.watch.diff import parse_leads

    poll = settings.poll
    poller = Poller(
        client=client,
        store=store,
        route=route,
        overlap=timedelta(minutes=poll.overlap_minutes),
        clock=clock,
        on_queued=on_queued,
        language=settings.display.language,
        leads=parse_leads(poll.remind_before),
        catchup_threshold=poll.catchup_digest_threshold,
        burst_threshold=poll.burst_threshold or None,
        split_digest=split_digest,
        max_event_age=timedelta(hours=poll.max_event_age_hours),
        catchup_after=timedelta(seconds=max(300.0, 10 * poll.interval_seconds)),
    )
    return Detection.build(
        poller,
        interval=poll.interval_seconds,
        max_backoff=poll.max_backoff_seconds,
        deadline_every=poll.deadline_check_seconds,
        sweep_period=timedelta(hours=poll.sweep_hours) if poll.sweep_hours else None,
        notify_admins=notify_admins,
        clock=clock,
        store_health=getattr(store, "health", None),
    )


__all__: Sequence[str] = ["BackgroundJob", "Detection", "Health", "Pacer", "detection_from_settings"]
