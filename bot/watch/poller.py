"""The poll job: action feed → touched tasks → fresh cards → diff → one state transaction with the outbox."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from bot.events import Event
from bot.planfix.client import PlanfixClient
from bot.planfix.models import Action, Status, Task
from bot.watch.diff import Snapshot, TaskDiff, baseline, diff_task, overdue_event
from state.records import DeliveryRow, EventRow, PollCommit, StoredSnapshot
from state.store import Store

log = structlog.get_logger(__name__)

CURSOR = "feed_cursor"
API_USER_ID = "api_user_id"
API_TIMEZONE = "api_timezone"
SEEN_ACTIONS_KEPT = timedelta(days=3)

Router = Callable[[Event, datetime], list[DeliveryRow]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class PollResult:
    """What one poll did, for logs, tests and health reporting."""

    baseline: int = 0
    actions: int = 0
    tasks: int = 0
    events: list[Event] = field(default_factory=list)
    queued: int = 0


@dataclass
class Poller:
    client: PlanfixClient
    store: Store
    route: Router
    overlap: timedelta = timedelta(minutes=2)
    clock: Callable[[], datetime] = utc_now
    on_queued: Callable[[int], None] | None = None  # wakes the sender when new rows are queued
    poll_timeout: float = 300.0
    language: str = "ru"  # status names in this language where Planfix has a translation
    statuses: dict[int, Status] = field(default_factory=dict)
    api_user_id: int | None = None
    api_timezone: str | None = None
    last_success: datetime | None = None
    _prepared: bool = False

    async def prepare(self) -> None:
        """Learn the API user's time zone (Planfix dates are in it) and the status names."""
        user = await self.client.user_get()
        zone_name = user.timezone or "UTC"
        try:
            self.client.api_timezone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("planfix.unknown_timezone", timezone=zone_name, using="UTC")
            zone_name = "UTC"
            self.client.api_timezone = ZoneInfo("UTC")
        self.api_user_id, self.api_timezone = user.id, zone_name
        statuses = await self.client.task_statuses()
        self.statuses = {sid: dataclasses.replace(s, name=s.name_in(self.language)) for sid, s in statuses.items()}
        self.store.set_meta(API_USER_ID, str(user.id))
        self.store.set_meta(API_TIMEZONE, zone_name)
        self._prepared = True
        log.info("planfix.ready", api_user=user.id, timezone=zone_name, statuses=len(self.statuses))

    async def poll_once(self) -> PollResult:
        """One cycle. Raises Planfix errors to the caller; nothing is written unless the whole cycle succeeds."""
        async with asyncio.timeout(self.poll_timeout):
            if not self._prepared:
                await self.prepare()
            now = self.clock()
            cursor = self.store.get_meta(CURSOR)
            result = await (self._baseline(now) if cursor is None else self._follow_feed(datetime.fromisoformat(cursor), now))
        self.last_success = now
        if result.queued and self.on_queued:
            self.on_queued(result.queued)
        return result

    async def _baseline(self, now: datetime) -> PollResult:
        """First start: remember every visible task silently, so that nothing old is announced."""
        tasks = await self.client.task_get_list(target="all")
        snaps = [baseline(t, self.statuses, now) for t in tasks]
        self.store.commit_poll(
            PollCommit(
                now=now,
                snapshots=[StoredSnapshot(s.task_id, 1, s.to_data()) for s in snaps],
                meta={CURSOR: now.isoformat()},
            )
        )
        log.info("poll.baseline", tasks=len(snaps))
        return PollResult(baseline=len(snaps))

    async def _follow_feed(self, cursor: datetime, now: datetime) -> PollResult:
        # Dates have minute resolution and clocks differ: re-read an overlapping window, de-duplicate by id.
        actions = await self.client.action_list_by_period(cursor - self.overlap, now)
        unseen = self.store.unseen_action_ids(a.id for a in actions)
        fresh = [a for a in actions if a.id in unseen]
        touched = list(dict.fromkeys(a.task_id for a in fresh if a.task_id))
        tasks = await self.client.task_get_multi(touched) if touched else []
        diffs = self._diff_tasks(tasks, fresh, now)
        handled = {d.snapshot.task_id for d in diffs}
        diffs += self._overdue_sweep(now, skip=handled)
        events = [e for d in diffs for e in d.events]
        deliveries = [row for e in events for row in self.route(e, now)]
        stored = self.store.snapshots(d.snapshot.task_id for d in diffs)
        snapshots = [self._stored(d.snapshot, stored.get(d.snapshot.task_id)) for d in diffs]
        queued = self.store.commit_poll(
            PollCommit(
                now=now,
                snapshots=[s for s in snapshots if s is not None],
                seen_actions=[(a.id, a.task_id, a.at) for a in fresh],
                events=[EventRow(e.key, e.kind, e.task_id, e.to_json()) for e in events],
                deliveries=deliveries,
                meta={CURSOR: now.isoformat()},
            )
        )
        if now.minute == 0:
            self.store.prune_seen_actions(now - SEEN_ACTIONS_KEPT)
        if fresh or events:
            log.info("poll.done", actions=len(fresh), tasks=len(tasks), events=len(events), queued=queued)
        return PollResult(actions=len(fresh), tasks=len(tasks), events=events, queued=queued)

    def _diff_tasks(self, tasks: Sequence[Task], actions: Sequence[Action], now: datetime) -> list[TaskDiff]:
        stored = self.store.snapshots(t.id for t in tasks)
        diffs = []
        for task in tasks:
            old = stored.get(task.id)
            previous = Snapshot.from_data(old.data) if old else None
            diffs.append(
                diff_task(previous, old.revision if old else 0, task, statuses=self.statuses, actions=actions, now=now)
            )
        return diffs

    def _overdue_sweep(self, now: datetime, *, skip: set[int]) -> list[TaskDiff]:
        """Overdue is computed locally from stored deadlines, so it fires on time without asking Planfix."""
        diffs = []
        for stored in self.store.overdue_candidates(now):
            if stored.task_id not in skip:
                diffs.append(overdue_event(Snapshot.from_data(stored.data), now))
        return diffs

    @staticmethod
    def _stored(snap: Snapshot, old: StoredSnapshot | None) -> StoredSnapshot | None:
        data = snap.to_data()
        if old is None:
            return StoredSnapshot(snap.task_id, 1, data)
        if old.data == data:
            return None
        return StoredSnapshot(snap.task_id, old.revision + 1, data)
