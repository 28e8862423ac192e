"""The reconciliation sweep: a slow pass over Planfix's active tasks, spread over the day inside the budget, that
catches whatever the action feed missed (DESIGN.md rule 4).

A pass reads `task.getList filter=ACTIVE` one page per step, steps spaced so that one pass takes `period`
(24 h by default: 101 requests a day for 10,000 tasks). Each page is compared with the stored snapshots on
status, deadline and project; only tasks that differ (or that we have never seen) cost a `task.getMulti`, and
their full cards go through the same pure diff as the feed's, so a missed status change, deadline move or
project move comes out exactly as if the feed had seen it (without the actor, who is unknown). Tasks never
seen before are remembered silently (first sight is silent).

Pages are read minutes apart, so the list can shift under the pass: when `totalCount` shrank since the previous
page, the previous page is read again as well (items may have moved onto it). A pass ends on a short or empty
page (or 0015 past the end), never on `totalCount` alone. At the end of a pass, every task stored as active
that the pass did not see is fetched by id: closed ones give their `status` event, deleted ones (3001) are
forgotten, ones Planfix refuses to show (no access, a malformed card) are set aside (Detector.fetch_cards). The pass position
lives in the state file, so a restart continues where it stopped.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import structlog

from bot.planfix.budget import Priority, priority
from bot.planfix.client import MAX_PAGE_SIZE, MAX_PAGES, is_last_page
from bot.planfix.models import Task
from bot.watch.detector import Changes, Detector, PollResult
from bot.watch.diff import Snapshot
from bot.watch.poller import Poller
from state.records import StoredSnapshot
from state.store import Store

log = structlog.get_logger(__name__)

SWEEP_STATE = "sweep_state"
PAGES, VERIFY = "pages", "verify"


@dataclass
class SweepState:
    """Where the current pass is; kept in the state file."""

    page: int = 1  # the next page to read
    total: int | None = None  # totalCount of the active list at the last page read
    phase: str = PAGES  # PAGES: reading the active list; VERIFY: checking stored active tasks it did not show
    passes: int = 0  # completed passes


@dataclass
class Sweep:
    poller: Poller
    period: timedelta = timedelta(hours=24)
    page_size: int = MAX_PAGE_SIZE
    state: SweepState = field(default_factory=SweepState)
    _loaded: bool = False

    @property
    def store(self) -> Store:
        return self.poller.store

    @property
    def detector(self) -> Detector:
        return self.poller.detector

    def load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        saved = self.store.meta.get_meta(SWEEP_STATE)
        if saved:
            try:
                self.state = SweepState(**json.loads(saved))
            except (TypeError, ValueError):
                log.warning("sweep.state_ignored", saved=saved[:200])

    # --- pacing -----------------------------------------------------------------------------------------------

    def steps_per_pass(self) -> int:
        """Pages of the active list plus one step to verify what the list did not show."""
        total = self.state.total if self.state.total is not None else self.store.tasks.snapshot_count()
        return max(1, math.ceil(total / self.page_size)) + 1

    def step_interval(self) -> float:
        """Seconds between steps so that one pass takes `period`."""
        return self.period.total_seconds() / self.steps_per_pass()

    def requests_per_second(self) -> float:
        """The sweep's planned share of the request budget (for the poll interval's arithmetic)."""
        return 1.0 / self.step_interval() if self.period.total_seconds() > 0 else 0.0

    # --- one step ---------------------------------------------------------------------------------------------

    async def step(self) -> PollResult:
        """Read one page of the active list (or verify one chunk of unseen tasks) and commit what it shows."""
        self.load()
        if self.state.phase == VERIFY:
            return await self._verify()
        return await self._page()

    async def _page(self) -> PollResult:
        number = self.state.page
        client = self.detector.client
        with priority(Priority.SWEEP):
            page = await client.task_list_page(number, filter="ACTIVE", page_size=self.page_size)
            items = list(page.items)
            total = page.total_count
            if number > 1 and self.state.total is not None and total is not None and total < self.state.total:
                # The list shrank since the previous page: tasks may have moved onto pages already read.
                earlier = await client.task_list_page(number - 1, filter="ACTIVE", page_size=self.page_size)
                items = earlier.items + items
            seen = list(dict.fromkeys(t.id for t in items))
            stored = self.store.tasks.snapshots(seen)
            latest = {t.id: t for t in items}
            candidates = [t.id for t in latest.values() if _differs(t, stored.get(t.id))]
            cards = await self.detector.read(candidates)
        # No await below: the diff and the commit see one consistent state.
        now = self.detector.clock()
        changes = self.detector.without_actions(cards, now)
        last = is_last_page(page, number, self.page_size)
        if not last and number >= MAX_PAGES:
            log.warning("sweep.list_capped", pages=number, effect="this pass ends here; the rest is verified by id")
            last = True
        state = SweepState(page=1 if last else number + 1, total=total, phase=VERIFY if last else PAGES,
                           passes=self.state.passes)
        result = self._commit(changes, now, state, seen=seen, new_pass=number == 1)
        log.debug("sweep.page", page=number, items=len(seen), candidates=len(candidates), events=len(result.events))
        return result

    async def _verify(self) -> PollResult:
        ids = self.store.tasks.unswept_active(self.page_size)
        if not ids:
            state = SweepState(page=1, total=self.state.total, phase=PAGES, passes=self.state.passes + 1)
            self.store.meta.set_meta(SWEEP_STATE, json.dumps(asdict(state)))
            self.state = state
            log.info("sweep.pass_done", passes=state.passes, active=state.total)
            return PollResult()
        with priority(Priority.SWEEP):
            cards = await self.detector.read(ids)
        now = self.detector.clock()
        changes = self.detector.without_actions(cards, now)
        result = self._commit(changes, now, self.state, seen=ids, new_pass=False)
        log.info("sweep.verified", tasks=len(ids), events=len(result.events), forgotten=len(changes.forget))
        return result

    def _commit(self, changes: Changes, now: datetime, state: SweepState, *, seen: list[int], new_pass: bool) -> PollResult:
        # Whatever the sweep finds was missed by the feed: fold it like a catch-up if one chat would get many.
        result = self.detector.commit(
            changes, now, catchup=True, meta={SWEEP_STATE: json.dumps(asdict(state))},
            write=lambda commit: self.store.commit_sweep(commit, seen, new_pass=new_pass),
        )
        self.state = state
        self.detector.wake(result.queued)
        return result


def _differs(task: Task, stored: StoredSnapshot | None) -> bool:
    """Whether a list item needs its full card: never seen, or status, deadline or project differ."""
    if stored is None:
        return True
    snap = Snapshot.from_data(stored.data)
    deadline = task.deadline.to_json() if task.deadline else None
    project = task.project.id if task.project else None
    return (task.status, deadline, project) != (snap.status, snap.deadline, snap.project_id)
