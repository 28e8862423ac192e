"""The feed poll: action feed → touched tasks → fresh cards → diff → one state transaction with the outbox.

The steps it shares with the sweep and the deadline check (reading cards, diffing, routing, committing) are the
Detector's (bot/watch/detector.py). Rule for every step: all store reads that a diff depends on happen after the
step's last `await`, so nothing another job commits in between can be overwritten by stale data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from bot.clock import utc_now
from bot.events import Event
from bot.planfix.budget import Priority, priority
from bot.planfix.client import MAX_PAGE_SIZE, PlanfixClient, is_last_page
from bot.planfix.models import Action, Status, Task
from bot.watch.catchup import Split
from bot.watch.detector import BUDGET, Changes, Detector, PollResult, Router, hold_unattributed
from bot.watch.diff import Lead, Snapshot, baseline, comment_events, comment_verdict, snapshot_of
from state.records import PollCommit, StoredSnapshot
from state.store import Store

log = structlog.get_logger(__name__)

CURSOR = "feed_cursor"
FEED_PARTIAL = "feed_partial"  # "1": the cursor ends a catch-up sub-window exactly (read on from it, no overlap)
BASELINE = "baseline_state"  # the first start in progress: JSON of BaselineState; "" or absent when none
API_USER_ID = "api_user_id"
API_TIMEZONE = "api_timezone"
SEEN_ACTIONS_KEPT = timedelta(days=3)


@dataclass(frozen=True)
class Progress:
    """A long first start or catch-up under way, for /status, systemd's STATUS= and logs."""

    kind: str  # FIRST_START | CATCH_UP
    done: int  # tasks remembered so far / actions read so far
    total: int | None = None  # first start: tasks Planfix lists (totalCount of the last page)
    reached: datetime | None = None  # catch-up: the feed is read up to here
    behind: timedelta | None = None  # catch-up: how far `reached` is behind the clock

    def line(self) -> str:
        """One line in English (systemd STATUS=, logs)."""
        if self.kind == FIRST_START:
            of = f" of {self.total:,}" if self.total is not None else ""
            return f"first start: {self.done:,}{of} tasks remembered; notifications start when it completes"
        behind = f", {int(self.behind.total_seconds() // 60):,} min behind" if self.behind is not None else ""
        reached = f"{self.reached:%Y-%m-%d %H:%M %Z}" if self.reached else "?"
        return f"catching up: {self.done:,} actions read, feed read up to {reached}{behind}"


FIRST_START, CATCH_UP = "first_start", "catch_up"


@dataclass
class BaselineState:
    """How far the first start got; committed with each page, so a restart or a timeout continues from it."""

    started: str  # ISO time the first start began: the feed is read from there once it completes
    page: int = 1  # the next page of task.getList to read
    total: int | None = None  # totalCount at the last page read
    tasks: int = 0  # tasks remembered so far

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def parse(cls, text: str | None) -> BaselineState | None:
        if not text:
            return None
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError):
            log.warning("poll.baseline_state_ignored", saved=text[:200])
            return None


def subwindow(actions: Sequence[Action], start: datetime, *, capped: bool) -> tuple[list[Action], datetime | None]:
    """Where a catch-up read that may have been cut short by its page cap can safely end.

    `actions` are the oldest of [start, …] in time order. If the read was not capped, all of them count and the
    window ends at the caller's `now` (None). Otherwise the last minute may be incomplete (dates have minute
    resolution): keep the actions before it, and the next read starts at that minute. Returns (actions to
    handle, where the next read starts)."""
    if not capped or not actions:
        return list(actions), None
    last = _minute(actions[-1].at)
    if last <= _minute(start):
        return list(actions), None  # one minute holds more than the cap: the caller reads that minute whole
    return [a for a in actions if a.at < last], last


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


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
    leads: tuple[Lead, ...] = ()  # reminder lead times (poll.remind_before), shortest first
    catchup_threshold: int | None = None  # catch-up polls fold more rows than this per chat into a digest
    burst_threshold: int | None = None  # other polls (and deadline checks) fold more rows than this per chat
    split_digest: Split | None = None  # where a long digest must be split into several messages (notify layer)
    max_event_age: timedelta | None = None  # older events are folded into a digest, never replayed
    catchup_after: timedelta = timedelta(minutes=5)  # a feed window longer than this is a catch-up poll
    catchup_pages: int = 20  # a catch-up reads at most this many feed pages per committed sub-window
    slice_seconds: float | None = None  # a first start or catch-up stops a step after this; None: poll_timeout / 2
    # Who really made the actions we wrote from Telegram (Planfix may record the API user).
    attribute: Callable[[list[Action]], list[Action]] | None = None
    api_user_id: int | None = None
    api_timezone: str | None = None
    last_success: datetime | None = None
    caught_up: bool = False  # the first feed poll of this process has been committed
    more: bool = False  # the last step stopped with a first start or catch-up unfinished: run again at once
    progress: Progress | None = None  # the first start or catch-up under way, if any
    _cards_read: dict[int, datetime] = field(default_factory=dict)  # catch-up: task → when its card was read
    _held_cards: dict[int, Task] = field(default_factory=dict)  # catch-up: held cards waiting for their action
    _held_actions: dict[int, list[Action]] = field(default_factory=dict)  # … and the actions read for them so far
    _prepared: bool = False
    _budget_restored: bool = False
    detector: Detector = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.detector = Detector(
            client=self.client, store=self.store, route=self.route, clock=self.clock, on_queued=self.on_queued,
            language=self.language, leads=self.leads, catchup_threshold=self.catchup_threshold,
            burst_threshold=self.burst_threshold, split_digest=self.split_digest, max_event_age=self.max_event_age,
        )

    @property
    def statuses(self) -> dict[int, Status]:
        return self.detector.statuses

    @property
    def _held(self) -> set[int]:
        """Tasks whose change waits for this feed poll (held back for their action, or handed over by the sweep)."""
        return self.detector.held

    @_held.setter
    def _held(self, held: set[int]) -> None:
        self.detector.held = held

    # --- start-up ---------------------------------------------------------------------------------------------

    def restore_budget(self) -> None:
        """Requests used today survive a restart: take the count back before the first request."""
        if self._budget_restored:
            return
        self._budget_restored = True
        saved = self.store.meta.get_meta(BUDGET)
        if saved:
            try:
                self.client.budget.restore(json.loads(saved))
            except ValueError:
                log.warning("planfix.budget_restore_ignored")

    async def prepare(self) -> None:
        """Learn the API user's time zone (Planfix dates are in it) and the status names."""
        self.restore_budget()
        with priority(Priority.FEED):
            user = await self.client.user_get()
            zone_name = user.timezone or "UTC"
            try:
                zone = ZoneInfo(zone_name)
            except (ZoneInfoNotFoundError, ValueError):
                log.warning("planfix.unknown_timezone", timezone=zone_name, using="UTC")
                zone_name, zone = "UTC", ZoneInfo("UTC")
            self.client.api_timezone = zone
            self.client.budget.zone = zone  # the daily budget is assumed to reset at midnight there
            self.api_user_id, self.api_timezone = user.id, zone_name
            await self.detector.read_statuses()
        self.store.meta.set_meta(API_USER_ID, str(user.id))
        self.store.meta.set_meta(API_TIMEZONE, zone_name)
        self._prepared = True
        log.info("planfix.ready", api_user=user.id, timezone=zone_name, statuses=len(self.statuses))

    # --- the feed poll ----------------------------------------------------------------------------------------

    async def poll_once(self) -> PollResult:
        """One cycle. Raises Planfix errors to the caller; nothing is written unless a step succeeds.

        A first start and a catch-up after downtime can take longer than one step may: they commit their progress
        as they go (a page of tasks, a sub-window of the feed) and return after about half of `poll_timeout`
        with `more` set, and the next call continues where they stopped — as does a restart or a timeout."""
        loop = asyncio.get_running_loop()
        started = loop.time()  # the clock asyncio.timeout reads
        total = PollResult()
        async with asyncio.timeout(self.poll_timeout):
            if not self._prepared:
                await self.prepare()
            while True:
                now = self.clock()
                cursor = self.store.meta.get_meta(CURSOR)
                if cursor is None:
                    result = await self._baseline(now, started)
                else:
                    result = await self._follow_feed(datetime.fromisoformat(cursor), now)
                total = _merge(total, result)
                if not result.more or loop.time() - started > self._slice():
                    break
        self.more = total.more
        self.detector.wake(total.queued)
        if total.more:
            return total
        self.progress = None
        self.last_success = now
        self.caught_up = True
        return total

    async def _baseline(self, now: datetime, step_started: float) -> PollResult:
        """First start: remember every visible task silently, so that nothing old is announced.

        Page by page (one page of cards in memory at a time), each page committed with the position, so an
        interrupted first start continues from the next page. When the list shrank since the previous page (tasks
        closed or deleted meanwhile), the previous page is read again too, as items may have moved onto it. The
        cursor is written after the last page: the time the first start began, so the feed then covers what
        changed while it ran."""
        state = BaselineState.parse(self.store.meta.get_meta(BASELINE)) or BaselineState(started=now.isoformat())
        while True:
            number = state.page
            with priority(Priority.ENRICH):
                page = await self.client.task_list_page(number, target="all")
                items = list(page.items)
                shrank = state.total is not None and page.total_count is not None and page.total_count < state.total
                if number > 1 and shrank:
                    items = list((await self.client.task_list_page(number - 1, target="all")).items) + items
            # No await below: the page and its position are committed together.
            stored = self.store.tasks.snapshots(t.id for t in items)
            fresh = {t.id: t for t in items if t.id not in stored}  # seen earlier in this first start: keep
            snaps = [baseline(t, self.statuses, now, self.leads) for t in fresh.values()]
            last = is_last_page(page, number, MAX_PAGE_SIZE)
            state = BaselineState(started=state.started, page=number + 1, total=page.total_count,
                                  tasks=state.tasks + len(snaps))
            meta = {BASELINE: "", CURSOR: state.started} if last else {BASELINE: state.to_json()}
            self.store.commit_poll(PollCommit(
                now=now, snapshots=[StoredSnapshot(s.task_id, 1, s.to_data()) for s in snaps],
                meta={**meta, **self.detector.budget_meta()},
            ))
            self.progress = Progress(FIRST_START, state.tasks, page.total_count)
            if last:
                log.info("poll.baseline", tasks=state.tasks, pages=number)
                return PollResult(baseline=state.tasks)
            if asyncio.get_running_loop().time() - step_started > self._slice():
                log.info("poll.baseline_progress", tasks=state.tasks, total=page.total_count, next_page=state.page)
                return PollResult(baseline=len(snaps), more=True)
            now = self.clock()

    async def _follow_feed(self, cursor: datetime, now: datetime) -> PollResult:
        """One feed window: normally [cursor − overlap, now]. A long window (a catch-up after downtime) is read at
        most `catchup_pages` pages at a time, oldest first; each such sub-window is diffed and committed with the
        cursor at its end, so a timeout or a restart continues from there."""
        partial = self.store.meta.get_meta(FEED_PARTIAL) == "1"
        # Dates have minute resolution and clocks differ: re-read an overlapping window, de-duplicate by id. A
        # sub-window's end comes from Planfix's own dates, so the next one starts exactly there.
        start = cursor if partial else cursor - self.overlap
        long_window = now - start > self.catchup_after
        with priority(Priority.FEED):
            if long_window:
                read = await self.client.action_list_by_period(start, now, max_pages=self.catchup_pages)
                capped = len(read) > (self.catchup_pages - 1) * MAX_PAGE_SIZE  # maybe cut short by the cap
                actions, reached = subwindow(read, start, capped=capped)
                if capped and reached is None:  # one minute holds more than the cap: read that minute whole
                    minute = _minute(read[-1].at)
                    actions = await self.client.action_list_by_period(minute, minute)
                    reached = minute + timedelta(minutes=1)
            else:
                actions, reached = await self.client.action_list_by_period(start, now), None
        more = reached is not None and reached < now
        unseen = self.store.tasks.unseen_action_ids(a.id for a in actions)
        fresh = [a for a in actions if a.id in unseen]
        if self.attribute is not None:
            fresh = self.attribute(fresh)
        # Tasks held back last time are fetched again even if the feed shows nothing new for them. During a
        # catch-up, a card read after a task's actions already shows them: it is not read again, and a card held
        # back for want of its action waits in memory for the sub-window that has the action.
        reuse = self._held_cards if more else {}
        touched = [a.task_id for a in fresh if a.task_id and not self._card_covers(a)]
        touched = list(dict.fromkeys([*(t for t in self._held if t not in reuse), *touched]))
        with priority(Priority.ENRICH):
            fetched = await self.detector.read(touched)
            tasks = fetched.tasks
        read_at = self.clock()
        cards = {t.id: t for t in tasks}
        for task_id, card in reuse.items():
            cards.setdefault(task_id, card)
        # No await below: the diff and the commit see one consistent state.
        changes = Changes(seen_actions=[(a.id, a.task_id, a.at) for a in fresh])
        changes.add_cards(fetched, self.detector.stored_ids(fetched.gone))
        # Until a catch-up's last sub-window, a change without its action stays held: a later one may name it. The
        # actions of a held task are kept for it, so each change is told with its own author once all are read.
        earlier = [a for task_id in cards for a in self._held_actions.get(task_id, ())]
        changes.diffs, held = hold_unattributed(self.detector.diff_cards(list(cards.values()), [*earlier, *fresh], now),
                                                already_held=set() if more else self._held)
        handled = {d.snapshot.task_id for d in changes.diffs} | held
        changes.diffs += self.detector.deadline_diffs(now, skip=handled)
        changes.notes = self.comments(fresh, cards, changes)
        catchup = not self.caught_up or now - cursor > self.catchup_after
        end = reached if more and reached is not None else now
        result = self.detector.commit(changes, now, catchup=catchup,
                             meta={CURSOR: end.isoformat(), FEED_PARTIAL: "1" if more else ""})
        # Keep what the sweep handed over during this poll.
        self._held = held | (self._held - set(touched) - set(reuse))
        self._held_cards = {task_id: cards[task_id] for task_id in held if task_id in cards} if more else {}
        self._held_actions = {task_id: [a for a in [*earlier, *fresh] if a.task_id == task_id]
                              for task_id in self._held_cards}
        if more:
            self._cards_read.update((t.id, read_at) for t in tasks)
            done = (self.progress.done if self.progress and self.progress.kind == CATCH_UP else 0) + len(fresh)
            self.progress = Progress(CATCH_UP, done, reached=end, behind=now - end)
        else:
            self._cards_read.clear()
        if now.minute == 0:
            self.store.tasks.prune_seen_actions(now - SEEN_ACTIONS_KEPT)
        result.actions, result.tasks, result.more = len(fresh), len(tasks), more
        if fresh or result.events or result.forgotten or fetched.set_aside:
            log.info(
                "poll.done", actions=len(fresh), tasks=len(tasks), events=len(result.events), queued=result.queued,
                digests=result.digests, forgotten=result.forgotten, set_aside=len(fetched.set_aside), catchup=catchup,
                **({"read_up_to": end.isoformat()} if more else {}),
            )
        return result

    def _slice(self) -> float:
        return self.poll_timeout / 2 if self.slice_seconds is None else self.slice_seconds

    def _card_covers(self, action: Action) -> bool:
        """Whether this catch-up already read the task's card after the action (with the overlap as margin)."""
        read = self._cards_read.get(action.task_id)
        return read is not None and action.at + self.overlap < read

    # --- shared steps -----------------------------------------------------------------------------------------

    def comments(self, fresh: Sequence[Action], cards: dict[int, Task], changes: Changes) -> list[Event]:
        """The comments among the fresh actions, told with the task as last read (or remembered). They never wait
        for a held change: their action is read once."""
        commented = {a.task_id for a in fresh if comment_verdict(a) is None} - set(changes.set_aside) - set(changes.forget)
        if not commented:
            return []
        snaps = {d.snapshot.task_id: d.snapshot for d in changes.diffs if d.snapshot.task_id in commented}
        snaps |= {t: snapshot_of(cards[t], self.statuses) for t in commented - snaps.keys() if t in cards}
        stored = self.store.tasks.snapshots(commented - snaps.keys())
        snaps |= {t: Snapshot.from_data(row.data) for t, row in stored.items()}
        return [e for t in sorted(snaps) for e in comment_events(snaps[t], fresh)]

    def check_deadlines(self) -> PollResult:
        """The cheap job: overdue and reminders from stored snapshots, no Planfix request at all."""
        return self.detector.check_deadlines(caught_up=self.caught_up)

    def resume_progress(self) -> Progress | None:
        """What the state file says is unfinished, before any step ran (for /status and systemd right after a
        restart)."""
        if self.progress is not None:
            return self.progress
        state = BaselineState.parse(self.store.meta.get_meta(BASELINE))
        if state is not None:
            return Progress(FIRST_START, state.tasks, state.total)
        if self.store.meta.get_meta(CURSOR) is None:
            return Progress(FIRST_START, 0)
        return None

MERGED_EVENTS_KEPT = 1000  # a long catch-up's events are committed as it goes; its result keeps only the latest


def _merge(a: PollResult, b: PollResult) -> PollResult:
    """Two steps of one call as one result."""
    return PollResult(
        baseline=a.baseline + b.baseline, more=b.more, actions=a.actions + b.actions, tasks=a.tasks + b.tasks,
        events=(a.events + b.events)[-MERGED_EVENTS_KEPT:], queued=a.queued + b.queued, digests=a.digests + b.digests,
        forgotten=a.forgotten + b.forgotten, set_aside=a.set_aside + b.set_aside, catchup=a.catchup or b.catchup,
    )
