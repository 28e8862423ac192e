"""Issue 10 over real HTTP against the fake Planfix: statuses without deadlines, resumable first start and
catch-up on a large account, new tasks announced, assignments, bursts folded into one message per chat."""

from __future__ import annotations

from datetime import timedelta

from bot.events import OVERDUE, STATUS
from bot.watch.diff import parse_leads
from tests.test_detection import ANNA, BORIS, world  # noqa: F401  (the fixture)

__all__ = ["world"]


# --- item 3: deadlines only where Planfix tracks them ----------------------------------------------------------

async def test_a_rejected_task_that_planfix_keeps_active_never_becomes_overdue(world):  # noqa: F811
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
