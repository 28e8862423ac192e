"""One read-model of the daemon's health (`DaemonStatus`), read by /status, /metrics, /healthz and systemd's STATUS=."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from bot.planfix.budget import Budget
from bot.watch.poller import Progress
from state.store import Store

FRESH_AT_LEAST = 120.0  # seconds: a poll this recent is always fresh, however short the interval
SET_ASIDE_SHOWN = 5  # task ids /status names among those set aside


def fresh_for(interval: float) -> float:
    """How long a successful feed poll keeps the snapshots fresh: max(2 min, 3 × the current poll interval). The
    current interval (it stretches to save the budget), not the configured one: a poll that comes as late as the
    pacer meant it to is not a fault."""
    return max(FRESH_AT_LEAST, 3 * interval)


def is_fresh(last_poll: datetime | None, now: datetime, interval: float) -> bool:
    """The one freshness rule: chat answers from snapshots, /status, /healthz and STATUS= all use it."""
    return last_poll is not None and (now - last_poll).total_seconds() <= fresh_for(interval)


class Verdict(StrEnum):
    """Why the daemon is (un)healthy, for /healthz."""

    OK = "ok"
    STATE_FILE = "state file"  # the state file refuses writes: nothing is polled or sent
    NO_POLL = "no poll"  # no successful feed poll yet
    STALE = "stale"  # the last successful feed poll is older than fresh_for(interval)


def store_problem(store: Store) -> str | None:
    """Why nothing is sent or polled while the state file refuses writes, or None."""
    health = store.health
    if not health.failing:
        return None
    since = f" since {health.since:%Y-%m-%d %H:%M:%S} UTC" if health.since else ""
    return (f"the state file cannot be written{since} ({health.error}): sending and polling are paused and resume "
            "by themselves")


@dataclass(frozen=True)
class BudgetView:
    """Today's Planfix requests, as the budget counts them."""

    used: int
    daily: int
    reserve: int
    remaining: int
    day_ends: datetime
    paused_until: datetime | None  # background requests held until then (budget used up, 0007)


@dataclass(frozen=True)
class DaemonStatus:
    """The daemon's health at one moment, read once from its running parts."""

    now: datetime
    started: datetime
    last_poll: datetime | None
    poll_interval: float  # seconds, the pacer's current interval
    progress: Progress | None = None  # a first start or catch-up under way
    budget: BudgetView | None = None
    store_problem: str | None = None
    detection_problem: str | None = None  # why background checks stopped, if they did
    pending: int = 0
    oldest_pending: datetime | None = None
    sent: int = 0
    failed: int = 0
    set_aside_count: int = 0
    set_aside_examples: dict[int, str] = field(default_factory=dict)  # task id -> Planfix code, lowest ids

    @property
    def uptime_seconds(self) -> float:
        return (self.now - self.started).total_seconds()

    @property
    def lag_seconds(self) -> float | None:
        return (self.now - self.last_poll).total_seconds() if self.last_poll else None

    @property
    def oldest_pending_seconds(self) -> float | None:
        return (self.now - self.oldest_pending).total_seconds() if self.oldest_pending else None

    @property
    def fresh(self) -> bool:
        return is_fresh(self.last_poll, self.now, self.poll_interval)

    @property
    def fresh_for(self) -> float:
        return fresh_for(self.poll_interval)

    @property
    def problem(self) -> str | None:
        """What /status shows as the problem: the state file first (it stops everything), then detection's."""
        return self.store_problem or self.detection_problem

    @property
    def verdict(self) -> Verdict:
        if self.store_problem is not None:
            return Verdict.STATE_FILE
        if self.last_poll is None:
            return Verdict.NO_POLL
        return Verdict.OK if self.fresh else Verdict.STALE

    @property
    def healthy(self) -> bool:
        return self.verdict is Verdict.OK

    def line(self) -> str:
        """One line for systemd's STATUS= and for logs: last poll, outbox, sends."""
        polled = f"last poll {self.last_poll:%H:%M:%S} UTC" if self.last_poll else "no successful poll yet"
        if self.last_poll and not self.fresh:
            polled += " (stale)"
        if self.progress is not None:
            polled = f"{self.progress.line()}; {polled}"
        return f"{polled}; {self.pending} messages queued; {self.sent} sent, {self.failed} failed"

    def health(self) -> tuple[bool, str]:
        """/healthz: healthy or not, and a one-line reason."""
        match self.verdict:
            case Verdict.STATE_FILE:
                return False, self.store_problem or ""
            case Verdict.NO_POLL:
                return False, "no successful Planfix poll yet"
            case Verdict.STALE:
                return False, (f"last successful Planfix poll {self.lag_seconds:.0f} s ago "
                               f"(stale after {self.fresh_for:.0f} s)")
        return True, self.line()


def read_status(
    store: Store,
    *,
    now: datetime,
    started: datetime | None = None,
    budget: Budget | None = None,
    last_poll: datetime | None = None,
    poll_interval: float = 30.0,
    progress: Progress | None = None,
    detection_problem: str | None = None,
    sent: int = 0,
    failed: int = 0,
) -> DaemonStatus:
    """The one place health is assembled: the state file's part read here, the rest passed in by the caller."""
    examples = store.tasks.set_aside(limit=SET_ASIDE_SHOWN)
    count = store.tasks.set_aside_count() if len(examples) >= SET_ASIDE_SHOWN else len(examples)
    return DaemonStatus(
        now=now, started=started or now, last_poll=last_poll, poll_interval=poll_interval, progress=progress,
        budget=None if budget is None else BudgetView(
            used=budget.used, daily=budget.daily, reserve=budget.reserve, remaining=budget.remaining(),
            day_ends=budget.day_ends, paused_until=budget.background_resume_at()),
        store_problem=store_problem(store), detection_problem=detection_problem,
        pending=store.outbox.pending_count(), oldest_pending=store.outbox.oldest_pending_created(), sent=sent, failed=failed,
        set_aside_count=count, set_aside_examples=examples,
    )


PROCESS_STARTED = datetime.now(UTC)  # this module is imported when the daemon starts
