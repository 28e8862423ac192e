"""The poll job: action feed → touched tasks → fresh cards → diff → one state transaction with the outbox.

Also the shared steps the other detection jobs build on: fetching cards with per-item errors isolated, diffing
against stored snapshots, the clock-only checks (overdue, reminders), routing with catch-up folding, and the
commit. Rule for every step: all store reads that a diff depends on happen after the step's last `await`, so
nothing another job commits in between can be overwritten by stale data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from bot.events import DEADLINE, STATUS, Event
from bot.planfix.budget import Priority, priority
from bot.planfix.client import MAX_PAGE_SIZE, PlanfixClient, is_last_page
from bot.planfix.errors import TASK_GONE, PlanfixItemError, PlanfixRequestError
from bot.planfix.models import Action, Status, Task
from bot.watch.catchup import BURST, CATCHUP, Split, fold
from bot.watch.diff import (
    Lead,
    Snapshot,
    TaskDiff,
    baseline,
    comment_events,
    comment_verdict,
    deadline_events,
    diff_task,
    first_sight,
    snapshot_of,
)
from state.records import DeliveryRow, EventRow, PollCommit, StoredSnapshot
from state.store import Store

log = structlog.get_logger(__name__)

CURSOR = "feed_cursor"
FEED_PARTIAL = "feed_partial"  # "1": the cursor ends a catch-up sub-window exactly (read on from it, no overlap)
BASELINE = "baseline_state"  # the first start in progress: JSON of BaselineState; "" or absent when none
API_USER_ID = "api_user_id"
API_TIMEZONE = "api_timezone"
BUDGET = "planfix_budget"
SEEN_ACTIONS_KEPT = timedelta(days=3)
STATUS_REFRESH_EVERY = 3600.0  # seconds: an unknown status id re-reads the status names at most this often

Router = Callable[[Event, datetime], list[DeliveryRow]]


def hold_unattributed(diffs: list[TaskDiff], *, already_held: set[int]) -> tuple[list[TaskDiff], set[int]]:
    """Hold back, for one poll, a status or deadline change whose action is not in the feed yet.

    A change made between reading the feed and fetching the card shows up in the card first; announcing it then
    would lose who made it (and tell that person about their own change). The next poll re-fetches the task and
    sees the action. A task already held once is announced as it is, so a change no action explains (an edit
    Planfix does not log) is late by one poll, never lost."""
    kept, held = [], set()
    for diff in diffs:
        unexplained = any(e.kind in (STATUS, DEADLINE) and e.actor_id is None for e in diff.events)
        if unexplained and diff.snapshot.task_id not in already_held:
            held.add(diff.snapshot.task_id)
        else:
            kept.append(diff)
    return kept, held


def utc_now() -> datetime:
    return datetime.now(UTC)


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
class PollResult:
    """What one poll did, for logs, tests and health reporting."""

    baseline: int = 0
    more: bool = False  # a first start or catch-up stopped at its time slice with more to do (progress kept)
    actions: int = 0
    tasks: int = 0
    events: list[Event] = field(default_factory=list)
    queued: int = 0
    digests: int = 0
    forgotten: int = 0
    set_aside: int = 0  # tasks newly set aside by this step
    catchup: bool = False


@dataclass
class Cards:
    """What fetch_cards learnt: the cards read, the tasks Planfix says were deleted (3001: forget them), and the
    tasks set aside (task id → code: no access, a malformed card, a code unknown for that one task)."""

    tasks: list[Task] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)
    set_aside: dict[int, str] = field(default_factory=dict)


@dataclass
class Changes:
    """What a detection step found, ready to commit: diffs, tasks to forget, actions seen, tasks set aside and
    tasks read (which are then no longer set aside)."""

    diffs: list[TaskDiff] = field(default_factory=list)
    forget: list[int] = field(default_factory=list)
    seen_actions: list[tuple[int, int, datetime]] = field(default_factory=list)
    set_aside: dict[int, str] = field(default_factory=dict)
    readable: list[int] = field(default_factory=list)
    notes: list[Event] = field(default_factory=list)  # comments: events that change no snapshot

    def add_cards(self, cards: Cards, forget: list[int]) -> Changes:
        self.forget, self.set_aside, self.readable = forget, cards.set_aside, [t.id for t in cards.tasks]
        return self

    @property
    def events(self) -> list[Event]:
        return [e for d in self.diffs for e in d.events] + self.notes


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
    statuses: dict[int, Status] = field(default_factory=dict)
    # Issue 13: who really made the actions we wrote from Telegram (Planfix may record the API user).
    attribute: Callable[[list[Action]], list[Action]] | None = None
    _held: set[int] = field(default_factory=set)  # changes seen before their action: decided on the next poll
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
    _statuses_read_at: float = 0.0

    # --- start-up ---------------------------------------------------------------------------------------------

    def restore_budget(self) -> None:
        """Requests used today survive a restart: take the count back before the first request."""
        if self._budget_restored:
            return
        self._budget_restored = True
        saved = self.store.get_meta(BUDGET)
        if saved:
            try:
                self.client.budget.restore(json.loads(saved))
            except ValueError:
                log.warning("planfix.budget_restore_ignored")

    def budget_meta(self) -> dict[str, str]:
        return {BUDGET: json.dumps(self.client.budget.snapshot())}

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
            await self._read_statuses()
        self.store.set_meta(API_USER_ID, str(user.id))
        self.store.set_meta(API_TIMEZONE, zone_name)
        self._prepared = True
        log.info("planfix.ready", api_user=user.id, timezone=zone_name, statuses=len(self.statuses))

    async def _read_statuses(self) -> None:
        statuses = await self.client.task_statuses()
        self.statuses = {sid: dataclasses.replace(s, name=s.name_in(self.language)) for sid, s in statuses.items()}
        self._statuses_read_at = time.monotonic()

    async def _learn_new_statuses(self, tasks: Iterable[Task]) -> None:
        """A status id we have no name for (a new status in Planfix): re-read the names, at most hourly."""
        unknown = {t.status for t in tasks} - set(self.statuses)
        if unknown and time.monotonic() - self._statuses_read_at > STATUS_REFRESH_EVERY:
            log.info("planfix.unknown_status", ids=sorted(unknown))
            with priority(Priority.FEED):
                await self._read_statuses()

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
                cursor = self.store.get_meta(CURSOR)
                if cursor is None:
                    result = await self._baseline(now, started)
                else:
                    result = await self._follow_feed(datetime.fromisoformat(cursor), now)
                total = _merge(total, result)
                if not result.more or loop.time() - started > self._slice():
                    break
        self.more = total.more
        if total.queued and self.on_queued:
            self.on_queued(total.queued)
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
        state = BaselineState.parse(self.store.get_meta(BASELINE)) or BaselineState(started=now.isoformat())
        while True:
            number = state.page
            with priority(Priority.ENRICH):
                page = await self.client.task_list_page(number, target="all")
                items = list(page.items)
                shrank = state.total is not None and page.total_count is not None and page.total_count < state.total
                if number > 1 and shrank:
                    items = list((await self.client.task_list_page(number - 1, target="all")).items) + items
            # No await below: the page and its position are committed together.
            stored = self.store.snapshots(t.id for t in items)
            fresh = {t.id: t for t in items if t.id not in stored}  # seen earlier in this first start: keep
            snaps = [baseline(t, self.statuses, now, self.leads) for t in fresh.values()]
            last = is_last_page(page, number, MAX_PAGE_SIZE)
            state = BaselineState(started=state.started, page=number + 1, total=page.total_count,
                                  tasks=state.tasks + len(snaps))
            meta = {BASELINE: "", CURSOR: state.started} if last else {BASELINE: state.to_json()}
            self.store.commit_poll(PollCommit(
                now=now, snapshots=[StoredSnapshot(s.task_id, 1, s.to_data()) for s in snaps],
                meta={**meta, **self.budget_meta()},
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
        partial = self.store.get_meta(FEED_PARTIAL) == "1"
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
        unseen = self.store.unseen_action_ids(a.id for a in actions)
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
            fetched = await self.fetch_cards(touched)
            tasks = fetched.tasks
            await self._learn_new_statuses(tasks)
        read_at = self.clock()
        cards = {t.id: t for t in tasks}
        for task_id, card in reuse.items():
            cards.setdefault(task_id, card)
        # No await below: the diff and the commit see one consistent state.
        changes = Changes(seen_actions=[(a.id, a.task_id, a.at) for a in fresh])
        changes.add_cards(fetched, self.stored_ids(fetched.gone))
        # Until a catch-up's last sub-window, a change without its action stays held: a later one may name it. The
        # actions of a held task are kept for it, so each change is told with its own author once all are read.
        earlier = [a for task_id in cards for a in self._held_actions.get(task_id, ())]
        changes.diffs, held = hold_unattributed(self.diff_cards(list(cards.values()), [*earlier, *fresh], now),
                                                already_held=set() if more else self._held)
        handled = {d.snapshot.task_id for d in changes.diffs} | held
        changes.diffs += self.deadline_diffs(now, skip=handled)
        changes.notes = self.comments(fresh, cards, changes)
        catchup = not self.caught_up or now - cursor > self.catchup_after
        end = reached if more and reached is not None else now
        result = self.commit(changes, now, catchup=catchup,
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
            self.store.prune_seen_actions(now - SEEN_ACTIONS_KEPT)
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

    async def fetch_cards(self, ids: Sequence[int]) -> Cards:
        """Current cards of these tasks (task.getMulti, ≤100 per request); one task never fails the rest.

        A batch failing with one task's error code (3002, 3008, 4001, …), or with a code we do not know, is
        narrowed down by halving, and each id left alone is read by task.get. An id task.getMulti simply leaves
        out is double-checked by task.get too (PLANFIX-API.md §16). Only 3001 means deleted (`gone`); any other
        per-task answer sets the task aside (`set_aside`: its snapshot stays, it is not diffed, and every later
        read retries it). An unknown code that both halves of a batch answer is the request's fault: raised."""
        unique = list(dict.fromkeys(ids))
        cards = Cards()
        for start in range(0, len(unique), MAX_PAGE_SIZE):
            await self._cards(unique[start : start + MAX_PAGE_SIZE], cards)
        found = {t.id for t in cards.tasks}
        for task_id in unique:
            if task_id not in found and task_id not in cards.set_aside and task_id not in cards.gone:
                await self._one_card(task_id, cards)  # left out of task.getMulti's answer: ask for it alone
        cards.tasks = list({t.id: t for t in cards.tasks}.values())
        return cards

    async def _cards(self, ids: list[int], cards: Cards, *, narrowed: bool = False) -> None:
        if not ids:
            return
        if narrowed and len(ids) == 1:
            await self._one_card(ids[0], cards)
            return
        try:
            cards.tasks += await self.client.task_get_multi(ids)
            return
        except PlanfixItemError:
            unknown = None
        except PlanfixRequestError as exc:
            unknown = exc  # maybe one task's code we do not know, maybe our bug: narrow down before deciding
        if len(ids) == 1:
            await self._one_card(ids[0], cards)  # task.get says what is wrong with this one
            return
        middle = len(ids) // 2
        read_before = len(cards.tasks)
        await self._cards(ids[:middle], cards, narrowed=True)
        if unknown is not None and len(cards.tasks) == read_before:
            try:
                cards.tasks += await self.client.task_get_multi(ids[middle:])
                return
            except PlanfixRequestError as again:
                if again.code == unknown.code:
                    raise unknown from None  # both halves answer it: the request is wrong, not one task
            except PlanfixItemError:
                pass
        await self._cards(ids[middle:], cards, narrowed=True)

    async def _one_card(self, task_id: int, cards: Cards) -> None:
        try:
            cards.tasks.append(await self.client.task_get(id=task_id))
        except PlanfixItemError as exc:
            if exc.code == TASK_GONE:
                cards.gone.append(task_id)
            else:
                cards.set_aside[task_id] = exc.code or "malformed"
        except PlanfixRequestError as exc:
            cards.set_aside[task_id] = exc.code or "unknown"
            log.error("planfix.task_unknown_error", task_id=task_id, code=exc.code, error=str(exc),
                      effect="this task is set aside; the others go on")

    def hand_to_feed(self, diffs: list[TaskDiff]) -> list[TaskDiff]:
        """For the sweep, which reads cards without actions: leave its status and deadline changes, and tasks it
        sees for the first time, to the next feed poll, which fetches those tasks again with their actions (so the
        author is known) and announces them even if no action ever explains them. Returns the diffs the sweep may
        commit itself."""
        kept, handed = hold_unattributed(diffs, already_held=set())
        # A task never seen before goes to the feed too: if it was created since the last feed poll, the feed's
        # actions tell what changed since its creation (first_sight); stored now, those changes would be lost.
        known = self.store.snapshots(d.snapshot.task_id for d in kept)
        new = {d.snapshot.task_id for d in kept if d.snapshot.task_id not in known}
        self._held |= handed | new
        return [d for d in kept if d.snapshot.task_id not in new]

    def comments(self, fresh: Sequence[Action], cards: dict[int, Task], changes: Changes) -> list[Event]:
        """The comments among the fresh actions, told with the task as last read (or remembered). They never wait
        for a held change: their action is read once."""
        commented = {a.task_id for a in fresh if comment_verdict(a) is None} - set(changes.set_aside) - set(changes.forget)
        if not commented:
            return []
        snaps = {d.snapshot.task_id: d.snapshot for d in changes.diffs if d.snapshot.task_id in commented}
        snaps |= {t: snapshot_of(cards[t], self.statuses) for t in commented - snaps.keys() if t in cards}
        stored = self.store.snapshots(commented - snaps.keys())
        snaps |= {t: Snapshot.from_data(row.data) for t, row in stored.items()}
        return [e for t in sorted(snaps) for e in comment_events(snaps[t], fresh)]

    def stored_ids(self, ids: Iterable[int]) -> list[int]:
        """Which of these tasks have a stored snapshot (to forget when Planfix no longer shows them)."""
        return sorted(self.store.snapshots(ids))

    def diff_cards(self, tasks: Sequence[Task], actions: Sequence[Action], now: datetime) -> list[TaskDiff]:
        stored = self.store.snapshots(t.id for t in tasks)
        diffs = []
        for task in tasks:
            old = stored.get(task.id)
            if old is None:  # after the first start a new task's changes in the feed are announced like any other
                diffs.append(first_sight(task, statuses=self.statuses, actions=actions, now=now, leads=self.leads))
                continue
            previous = Snapshot.from_data(old.data)
            diffs.append(
                diff_task(
                    previous, old.revision if old else 0, task, statuses=self.statuses, actions=actions, now=now,
                    leads=self.leads,
                )
            )
        return diffs

    def deadline_diffs(self, now: datetime, *, skip: Iterable[int] = ()) -> list[TaskDiff]:
        """Overdue and reminders, computed locally from stored deadlines: no Planfix request, on time."""
        skip = set(skip) | set(self.store.set_aside())  # stale snapshots of set-aside tasks announce nothing
        candidates = {s.task_id: s for s in self.store.overdue_candidates(now)}
        if self.leads:
            for stored in self.store.deadline_window(now, now + self.leads[-1].length):
                candidates.setdefault(stored.task_id, stored)
        diffs = []
        for task_id, stored in sorted(candidates.items()):
            if task_id in skip:
                continue
            diff = deadline_events(Snapshot.from_data(stored.data), now, leads=self.leads, revision=stored.revision)
            if diff.events or diff.snapshot.to_data() != stored.data:
                diffs.append(diff)
        return diffs

    def commit(self, changes: Changes, now: datetime, *, catchup: bool = False, meta: dict[str, str] | None = None,
               write: Callable[[PollCommit], int] | None = None) -> PollResult:
        """Route the events (folding a catch-up into digests), then write everything in one transaction."""
        events = changes.events
        newly_set_aside = self._note_set_aside(changes)
        deliveries = [row for e in events for row in self.route(e, now)]
        digests, deliveries = fold(
            events, deliveries, now, threshold=self.catchup_threshold if catchup else (self.burst_threshold or None),
            max_age=self.max_event_age, why=CATCHUP if catchup else BURST, split=self.split_digest,
        )
        stored = self.store.snapshots(d.snapshot.task_id for d in changes.diffs)
        snapshots = [self._stored(d.snapshot, stored.get(d.snapshot.task_id)) for d in changes.diffs]
        commit = PollCommit(
            now=now,
            snapshots=[s for s in snapshots if s is not None],
            forget_tasks=changes.forget,
            seen_actions=changes.seen_actions,
            events=[EventRow(e.key, e.kind, e.task_id, e.to_json()) for e in [*events, *digests]],
            deliveries=deliveries,
            meta={**(meta or {}), **self.budget_meta()},
            set_aside=changes.set_aside,
            readable=changes.readable,
        )
        queued = (write or self.store.commit_poll)(commit)
        if changes.forget:
            log.info("watch.tasks_forgotten", task_ids=changes.forget[:20], count=len(changes.forget))
        if digests:
            log.info("watch.digest", chats=len(digests), folded=sum(len(getattr(d.payload, "items", ())) for d in digests))
        return PollResult(events=events, queued=queued, digests=len(digests), forgotten=len(changes.forget),
                          set_aside=newly_set_aside, catchup=catchup)

    def _note_set_aside(self, changes: Changes) -> int:
        """Log each task once when it is set aside and once when it can be read again; returns how many are new."""
        if not changes.set_aside and not changes.readable:
            return 0
        before = self.store.set_aside()
        new = {t: c for t, c in changes.set_aside.items() if t not in before}
        for task_id, code in sorted(new.items()):
            log.warning("planfix.task_set_aside", task_id=task_id, code=code,
                        effect="not read until Planfix shows it again; its last snapshot is kept")
        for task_id in sorted(set(changes.readable) & set(before)):
            log.info("planfix.task_readable_again", task_id=task_id, was=before[task_id])
        return len(new)

    def check_deadlines(self) -> PollResult:
        """The cheap job: overdue and reminders from stored snapshots, no Planfix request at all."""
        now = self.clock()
        changes = Changes(diffs=self.deadline_diffs(now))
        if not changes.diffs:
            return PollResult()
        result = self.commit(changes, now, catchup=not self.caught_up)
        if result.events:
            log.info("deadlines.done", events=len(result.events), queued=result.queued, digests=result.digests)
        if result.queued and self.on_queued:
            self.on_queued(result.queued)
        return result

    def resume_progress(self) -> Progress | None:
        """What the state file says is unfinished, before any step ran (for /status and systemd right after a
        restart)."""
        if self.progress is not None:
            return self.progress
        state = BaselineState.parse(self.store.get_meta(BASELINE))
        if state is not None:
            return Progress(FIRST_START, state.tasks, state.total)
        if self.store.get_meta(CURSOR) is None:
            return Progress(FIRST_START, 0)
        return None

    @staticmethod
    def _stored(snap: Snapshot, old: StoredSnapshot | None) -> StoredSnapshot | None:
        data = snap.to_data()
        if old is None:
            return StoredSnapshot(snap.task_id, 1, data)
        if old.data == data:
            return None
        return StoredSnapshot(snap.task_id, old.revision + 1, data)


MERGED_EVENTS_KEPT = 1000  # a long catch-up's events are committed as it goes; its result keeps only the latest


def _merge(a: PollResult, b: PollResult) -> PollResult:
    """Two steps of one call as one result."""
    return PollResult(
        baseline=a.baseline + b.baseline, more=b.more, actions=a.actions + b.actions, tasks=a.tasks + b.tasks,
        events=(a.events + b.events)[-MERGED_EVENTS_KEPT:], queued=a.queued + b.queued, digests=a.digests + b.digests,
        forgotten=a.forgotten + b.forgotten, set_aside=a.set_aside + b.set_aside, catchup=a.catchup or b.catchup,
    )
