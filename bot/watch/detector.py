"""What the feed poll, the sweep and the deadline check share: read cards, diff them, route, commit."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from bot.events import DEADLINE, STATUS, Event
from bot.planfix.budget import Priority, priority
from bot.planfix.client import MAX_PAGE_SIZE, PlanfixClient
from bot.planfix.errors import TASK_GONE, PlanfixItemError, PlanfixRequestError
from bot.planfix.models import Action, Status, Task
from bot.watch.catchup import BURST, CATCHUP, Split, fold
from bot.watch.diff import Lead, Snapshot, TaskDiff, deadline_events, diff_task, first_sight
from state.records import DeliveryRow, EventRow, PollCommit, StoredSnapshot
from state.store import Store

log = structlog.get_logger(__name__)

BUDGET = "planfix_budget"
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
class Detector:
    """One object every detection job calls. Rule for every step: all store reads that a diff depends on happen
    after the step's last `await`, so nothing another job commits in between can be overwritten by stale data."""

    client: PlanfixClient
    store: Store
    route: Router
    clock: Callable[[], datetime]
    on_queued: Callable[[int], None] | None = None  # wakes the sender when new rows are queued
    language: str = "ru"  # status names in this language where Planfix has a translation
    leads: tuple[Lead, ...] = ()  # reminder lead times (poll.remind_before), shortest first
    catchup_threshold: int | None = None  # catch-up steps fold more rows than this per chat into a digest
    burst_threshold: int | None = None  # other steps (and deadline checks) fold more rows than this per chat
    split_digest: Split | None = None  # where a long digest must be split into several messages (notify layer)
    max_event_age: timedelta | None = None  # older events are folded into a digest, never replayed
    statuses: dict[int, Status] = field(default_factory=dict)
    held: set[int] = field(default_factory=set)  # changes seen before their action: decided on the next feed poll
    _statuses_read_at: float = 0.0

    # --- reading Planfix --------------------------------------------------------------------------------------

    async def read_statuses(self) -> None:
        statuses = await self.client.task_statuses()
        self.statuses = {sid: dataclasses.replace(s, name=s.name_in(self.language)) for sid, s in statuses.items()}
        self._statuses_read_at = time.monotonic()

    async def learn_new_statuses(self, tasks: Iterable[Task]) -> None:
        """A status id we have no name for (a new status in Planfix): re-read the names, at most hourly."""
        unknown = {t.status for t in tasks} - set(self.statuses)
        if unknown and time.monotonic() - self._statuses_read_at > STATUS_REFRESH_EVERY:
            log.info("planfix.unknown_status", ids=sorted(unknown))
            with priority(Priority.FEED):
                await self.read_statuses()

    async def read(self, ids: Sequence[int]) -> Cards:
        """The current cards of these tasks (`fetch_cards`), with the names of any status new to us."""
        cards = await self.fetch_cards(ids)
        await self.learn_new_statuses(cards.tasks)
        return cards

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

    # --- deciding and committing -------------------------------------------------------------------------------

    def without_actions(self, cards: Cards, now: datetime) -> Changes:
        """What cards read without their actions (the sweep's) may commit: the rest goes to the next feed poll."""
        changes = Changes(diffs=self.hand_to_feed(self.diff_cards(cards.tasks, [], now)))
        return changes.add_cards(cards, self.stored_ids(cards.gone))

    def budget_meta(self) -> dict[str, str]:
        return {BUDGET: json.dumps(self.client.budget.snapshot())}

    def wake(self, queued: int) -> None:
        if queued and self.on_queued:
            self.on_queued(queued)

    def hand_to_feed(self, diffs: list[TaskDiff]) -> list[TaskDiff]:
        """For the sweep, which reads cards without actions: leave its status and deadline changes, and tasks it
        sees for the first time, to the next feed poll, which fetches those tasks again with their actions (so the
        author is known) and announces them even if no action ever explains them. Returns the diffs the sweep may
        commit itself."""
        kept, handed = hold_unattributed(diffs, already_held=set())
        # A task never seen before goes to the feed too: if it was created since the last feed poll, the feed's
        # actions tell what changed since its creation (first_sight); stored now, those changes would be lost.
        known = self.store.tasks.snapshots(d.snapshot.task_id for d in kept)
        new = {d.snapshot.task_id for d in kept if d.snapshot.task_id not in known}
        self.held |= handed | new
        return [d for d in kept if d.snapshot.task_id not in new]

    def stored_ids(self, ids: Iterable[int]) -> list[int]:
        """Which of these tasks have a stored snapshot (to forget when Planfix no longer shows them)."""
        return sorted(self.store.tasks.snapshots(ids))

    def diff_cards(self, tasks: Sequence[Task], actions: Sequence[Action], now: datetime) -> list[TaskDiff]:
        stored = self.store.tasks.snapshots(t.id for t in tasks)
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
        skip = set(skip) | set(self.store.tasks.set_aside())  # stale snapshots of set-aside tasks announce nothing
        candidates = {s.task_id: s for s in self.store.tasks.overdue_candidates(now)}
        if self.leads:
            for stored in self.store.tasks.deadline_window(now, now + self.leads[-1].length):
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
        stored = self.store.tasks.snapshots(d.snapshot.task_id for d in changes.diffs)
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
        before = self.store.tasks.set_aside()
        new = {t: c for t, c in changes.set_aside.items() if t not in before}
        for task_id, code in sorted(new.items()):
            log.warning("planfix.task_set_aside", task_id=task_id, code=code,
                        effect="not read until Planfix shows it again; its last snapshot is kept")
        for task_id in sorted(set(changes.readable) & set(before)):
            log.info("planfix.task_readable_again", task_id=task_id, was=before[task_id])
        return len(new)

    def check_deadlines(self, *, caught_up: bool) -> PollResult:
        """The cheap job: overdue and reminders from stored snapshots, no Planfix request at all."""
        now = self.clock()
        changes = Changes(diffs=self.deadline_diffs(now))
        if not changes.diffs:
            return PollResult()
        result = self.commit(changes, now, catchup=not caught_up)
        if result.events:
            log.info("deadlines.done", events=len(result.events), queued=result.queued, digests=result.digests)
        self.wake(result.queued)
        return result

    @staticmethod
    def _stored(snap: Snapshot, old: StoredSnapshot | None) -> StoredSnapshot | None:
        data = snap.to_data()
        if old is None:
            return StoredSnapshot(snap.task_id, 1, data)
        if old.data == data:
            return None
        return StoredSnapshot(snap.task_id, old.revision + 1, data)
