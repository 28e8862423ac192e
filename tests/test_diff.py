"""The diff as a pure function: stored snapshot + task now + actions → events."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.events import DEADLINE, OVERDUE, STATUS, Assigned, DeadlineMove, Event, StatusMove
from bot.planfix.models import Action, DateChange, Deadline, PersonRef, ProjectRef, Status, StatusChange, Task
from bot.watch.diff import Snapshot, baseline, diff_task, overdue_event

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
STATUSES = {
    1: Status(1, "Новая"),
    2: Status(2, "В работе"),
    3: Status(3, "Завершенная", is_active=False),
}
ALICE = PersonRef(10, "Alice")
BOB = PersonRef(11, "Bob")


def task(**changes) -> Task:
    base = Task(
        id=100, general=5001, title="Fix <the> bug", status=1, owner=ALICE, workers=(BOB,),
        project=ProjectRef(7, "Site"), deadline=Deadline(NOW + timedelta(days=2)),
    )
    return dataclasses.replace(base, **changes)


def stored(t: Task) -> Snapshot:
    return baseline(t, STATUSES, NOW)


def test_first_sight_is_silent():
    """A task seen for the first time gives a snapshot and no events."""
    result = diff_task(None, 0, task(), statuses=STATUSES, now=NOW)
    assert result.events == []
    assert result.snapshot.status_name == "Новая"
    assert result.snapshot.participants == (10, 11)


def test_first_sight_of_an_overdue_task_does_not_announce_it_later():
    """A task already overdue at first sight is marked as told, so the overdue sweep stays silent."""
    late = task(deadline=Deadline(NOW - timedelta(hours=1)))
    snap = diff_task(None, 0, late, statuses=STATUSES, now=NOW).snapshot
    assert snap.overdue_for == snap.deadline
    assert overdue_event(snap, NOW + timedelta(hours=1)).events == []


def test_unchanged_task_gives_no_events():
    """Polling a task that did not change yields nothing, even with unrelated actions."""
    t = task()
    comment = Action(id=1, type="COMMENT", task_id=100, at=NOW, owner=ALICE)
    assert diff_task(stored(t), 3, t, statuses=STATUSES, actions=[comment], now=NOW).events == []


def test_status_change_names_old_new_and_who():
    """A status change gives one `status` event with status names and the author of the changing action."""
    old = task()
    act = Action(id=9, type="ACTION", task_id=100, at=NOW, owner=BOB, status_change=StatusChange(1, 2))
    result = diff_task(stored(old), 3, task(status=2), statuses=STATUSES, actions=[act], now=NOW)
    [event] = result.events
    assert (event.kind, event.payload) == (STATUS, StatusMove(1, 2, "Новая", "В работе"))
    assert (event.actor_id, event.actor_name) == (11, "Bob")
    assert event.key == "status:100:3:1>2"
    assert event.task_general == 5001 and event.project_id == 7


def test_status_change_without_action_is_still_detected():
    """The snapshot, not the feed, decides: a change with no matching action is reported, author unknown."""
    result = diff_task(stored(task()), 1, task(status=3), statuses=STATUSES, now=NOW)
    [event] = result.events
    assert event.kind == STATUS and event.actor_id is None
    assert result.snapshot.is_active is False


def test_unknown_status_id_is_shown_by_number():
    """A status missing from the status map is rendered as #id rather than failing."""
    [event] = diff_task(stored(task()), 1, task(status=42), statuses=STATUSES, now=NOW).events
    assert event.payload == StatusMove(1, 42, "Новая", "#42")


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (Deadline(NOW + timedelta(days=2)), Deadline(NOW + timedelta(days=5))),  # moved
        (None, Deadline(NOW + timedelta(days=1))),  # set
        (Deadline(NOW + timedelta(days=2)), None),  # removed
        (Deadline(NOW + timedelta(days=2)), Deadline(NOW + timedelta(days=2), date_only=True)),  # time dropped
    ],
)
def test_deadline_set_moved_or_removed(before, after):
    """Every kind of deadline change gives exactly one `deadline` event with old and new values."""
    act = Action(id=9, type="TASKEXPECTDATECHANGED", task_id=100, at=NOW, owner=ALICE,
                 deadline_change=DateChange(before, after))
    result = diff_task(stored(task(deadline=before)), 2, task(deadline=after), statuses=STATUSES,
                       actions=[act], now=NOW)
    [event] = result.events
    assert event.kind == DEADLINE
    assert event.payload == DeadlineMove(before.to_json() if before else None, after.to_json() if after else None)
    assert event.actor_id == ALICE.id


def test_overdue_fires_once_per_deadline_and_rearms_on_move():
    """Overdue fires when the deadline passes, never twice for it, and again after the deadline moves."""
    snap = stored(task(deadline=Deadline(NOW + timedelta(minutes=5))))
    assert overdue_event(snap, NOW).events == []
    later = NOW + timedelta(minutes=6)
    fired = overdue_event(snap, later)
    [event] = fired.events
    assert event.kind == OVERDUE and event.key == f"overdue:100:{snap.deadline}"
    assert overdue_event(fired.snapshot, later + timedelta(hours=1)).events == []
    moved = task(deadline=Deadline(later + timedelta(minutes=10)))
    after_move = diff_task(fired.snapshot, 2, moved, statuses=STATUSES, now=later)
    assert [e.kind for e in after_move.events] == [DEADLINE]
    [again] = overdue_event(after_move.snapshot, later + timedelta(minutes=11)).events
    assert again.key != event.key


def test_closed_task_never_goes_overdue():
    """Closing the task disarms the overdue notice."""
    snap = stored(task(status=3, deadline=Deadline(NOW + timedelta(minutes=1))))
    assert overdue_event(snap, NOW + timedelta(days=1)).events == []


def test_planfix_overdue_flag_fires_when_deadline_unchanged():
    """Planfix's isOverdued flag triggers the notice even if the local clock disagrees by a little."""
    t = task(deadline=Deadline(NOW + timedelta(seconds=30)))
    result = diff_task(stored(t), 1, dataclasses.replace(t, is_overdue=True), statuses=STATUSES, now=NOW)
    assert [e.kind for e in result.events] == [OVERDUE]


def test_stale_overdue_flag_after_a_move_is_ignored():
    """Right after the deadline moves into the future, a stale isOverdued flag does not fire."""
    old = task(deadline=Deadline(NOW - timedelta(minutes=1)))
    snap = diff_task(None, 0, old, statuses=STATUSES, now=NOW).snapshot
    moved = task(deadline=Deadline(NOW + timedelta(days=1)), is_overdue=True)
    assert [e.kind for e in diff_task(snap, 1, moved, statuses=STATUSES, now=NOW).events] == [DEADLINE]


def test_close_and_reopen_are_two_status_events_with_distinct_keys():
    """Closing then reopening gives two events whose keys differ, so neither is deduplicated away."""
    s1 = stored(task(status=2))
    closed = diff_task(s1, 1, task(status=3), statuses=STATUSES, now=NOW)
    reopened = diff_task(closed.snapshot, 2, task(status=2), statuses=STATUSES, now=NOW)
    keys = [closed.events[0].key, reopened.events[0].key]
    assert len(set(keys)) == 2


def test_project_move_is_remembered_without_an_event():
    """Moving a task to another project updates the snapshot (for routing) but is not one of the three kinds."""
    result = diff_task(stored(task()), 1, task(project=ProjectRef(8, "Other")), statuses=STATUSES, now=NOW)
    assert result.events == [] and result.snapshot.project_id == 8


def test_event_survives_json_round_trip():
    """Events are stored as JSON in the outbox and come back equal."""
    [event] = diff_task(stored(task()), 1, task(status=2), statuses=STATUSES, now=NOW).events
    assert Event.from_json(event.to_json()) == event


def test_snapshot_round_trip():
    """Snapshots are stored as JSON and come back equal."""
    snap = stored(task())
    assert Snapshot.from_data(snap.to_data()) == snap


# --- hasDeadline (issue 10, item 3) -----------------------------------------------------------------------------

REJECTED = {**STATUSES, 6: Status(6, "Отклоненная", is_active=True, has_deadline=False)}


def test_an_active_status_without_has_deadline_never_falls_due():
    """A status Planfix keeps active but tracks no deadline in (a real account's "rejected") gives no overdue
    notice and no reminder, however long ago the deadline passed."""
    from bot.watch.diff import Lead, deadline_events

    snap = baseline(task(status=6, deadline=Deadline(NOW + timedelta(minutes=30))), REJECTED, NOW)
    assert snap.is_active and not snap.has_deadline and not snap.tracks_deadline
    later = deadline_events(snap, NOW + timedelta(days=3), leads=[Lead.parse("1h")])
    assert later.events == []
    assert deadline_events(snap, NOW, leads=[Lead.parse("1h")]).events == []


def test_moving_a_task_into_a_status_without_deadlines_disarms_overdue_and_back_rearms_it():
    """Rejecting a task with a passed deadline announces the status change only; reopening it announces the
    status change and then the overdue notice, as the deadline counts again."""
    late = task(deadline=Deadline(NOW - timedelta(hours=1)))
    snap = diff_task(stored(task()), 1, task(status=6), statuses=REJECTED, now=NOW).snapshot
    rejected = diff_task(snap, 2, dataclasses.replace(late, status=6), statuses=REJECTED, now=NOW)
    assert [e.kind for e in rejected.events] == [DEADLINE]
    reopened = diff_task(rejected.snapshot, 3, dataclasses.replace(late, status=2), statuses=REJECTED, now=NOW)
    assert [e.kind for e in reopened.events] == [STATUS, OVERDUE]


# --- new tasks and assignments (issue 10, item 7) ---------------------------------------------------------------

def test_a_task_created_and_moved_on_between_two_polls_is_announced_with_its_changes():
    """First seen in the feed after the first start: the state before the feed's actions is rebuilt from them
    (status before the first change, deadline before the first move, no assignees before creation), so its
    status and deadline changes and its assignee come out, each with its author."""
    from bot.events import ASSIGNED
    from bot.watch.diff import first_sight

    due = Deadline(NOW + timedelta(days=1))
    moved = Deadline(NOW + timedelta(days=3))
    now_task = task(status=2, deadline=moved)
    actions = [
        Action(id=1, type="TASKCREATED", task_id=100, at=NOW - timedelta(minutes=3), owner=ALICE,
               deadline_change=DateChange(due, due)),
        Action(id=2, type="ACTION", task_id=100, at=NOW - timedelta(minutes=2), owner=BOB,
               status_change=StatusChange(1, 2)),
        Action(id=3, type="TASKCHANGED", task_id=100, at=NOW - timedelta(minutes=1), owner=ALICE,
               deadline_change=DateChange(due, moved)),
    ]
    result = first_sight(now_task, statuses=STATUSES, actions=actions, now=NOW)
    got = [(e.kind, e.payload, e.actor_id) for e in result.events]
    assert got == [
        (STATUS, StatusMove(1, 2, "Новая", "В работе"), 11),
        (DEADLINE, DeadlineMove(due.to_json(), moved.to_json()), 10),
        (ASSIGNED, Assigned(11, "Bob"), 10),
    ]
    assert result.snapshot.status == 2 and result.snapshot.deadline == moved.to_json()


def test_first_sight_without_actions_stays_silent():
    """The sweep's first sight (no actions) and a task shown to us without changes say nothing."""
    from bot.watch.diff import first_sight

    assert first_sight(task(status=2), statuses=STATUSES, actions=[], now=NOW).events == []


def test_a_new_assignee_of_an_existing_task_gives_one_assigned_event_each():
    """Adding assignees gives one `assigned` per new assignee (payload: their id and name); removing one gives none."""
    from bot.events import ASSIGNED

    carol = PersonRef(12, "Carol")
    act = Action(id=5, type="TASKCHANGED", task_id=100, at=NOW, owner=ALICE)
    result = diff_task(stored(task()), 4, task(workers=(BOB, carol)), statuses=STATUSES, actions=[act], now=NOW)
    [event] = result.events
    assert (event.kind, event.payload, event.actor_id) == (ASSIGNED, Assigned(12, "Carol"), 10)
    assert event.key == "assigned:100:4:12"
    assert diff_task(stored(task()), 4, task(workers=()), statuses=STATUSES, now=NOW).events == []
