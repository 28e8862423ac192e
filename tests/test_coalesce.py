"""The coalescing plan on its own: which rows one message carries, and whether it is new or an edit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.events import DIGEST
from bot.notify.coalesce import Sent, Shape, coalesces, edit_target, plan
from state.records import OutboxItem
from tests.test_sender import event

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=10)
CHAT = 501


def row(row_id: int, at: float | None, ev) -> OutboxItem:
    created = None if at is None else T0 + timedelta(seconds=at)
    return OutboxItem(row_id, f"{ev.key}:{CHAT}", ev.key, CHAT, 0, ev.to_json(), created_at=created)


def test_a_digest_or_a_zero_window_goes_out_alone():
    """Digests span many tasks and are never merged; a window of 0 turns coalescing off."""
    digest = event(kind=DIGEST)
    status = event()
    assert not coalesces(digest, WINDOW) and not coalesces(status, timedelta(0)) and coalesces(status, WINDOW)
    first = row(1, 0, status)
    later = [(row(2, 1, e), e) for e in [event()]]
    result = plan(first, status, now=T0, window=timedelta(0), later=later)
    assert (result.rows, result.head_id, result.edit_id, result.shape) == ([first], 1, None, Shape.ALONE)


def test_the_first_change_is_a_new_message_with_rows_queued_within_the_window_folded_in():
    """Rows of the same task queued within the window of the first join it; the first beyond it and all after
    stay for their own message; a digest among them is skipped."""
    events = [event(task=1) for _ in range(4)] + [event(task=1, kind=DIGEST), event(task=1)]
    first = row(1, 0, events[0])
    later = [(row(2, 3, events[1]), events[1]), (row(3, 10, events[2]), events[2]),
             (row(4, 10, events[4]), events[4]), (row(5, 11, events[3]), events[3]),
             (row(6, 12, events[5]), events[5])]
    result = plan(first, events[0], now=T0, window=WINDOW, later=later)
    assert result.shape == Shape.NEW and result.edit_id is None and result.head_id == 1
    assert [r.id for r in result.rows] == [1, 2, 3]
    assert result.events == [events[0], events[1], events[2]]


def test_a_row_without_a_queue_time_stops_the_folding():
    """A row whose queue time is unknown is never folded in (nor anything after it)."""
    a, b, c = event(), event(), event()
    result = plan(row(1, 0, a), a, now=T0, window=WINDOW, later=[(row(2, None, b), b), (row(3, 1, c), c)])
    assert [r.id for r in result.rows] == [1]


def test_a_change_within_the_window_of_the_last_message_edits_it():
    """The edit shows what the message showed plus this change and the ones queued within the window of the
    message's first row (not of this row)."""
    shown, now_ev, soon, late = event(), event(), event(), event()
    last = Sent(head_id=7, message_id=4242, queued_at=T0)
    this = row(9, 6, now_ev)
    target = edit_target(this.created_at, last, WINDOW)
    assert target == last
    later = [(row(10, 9, soon), soon), (row(11, 12, late), late)]
    result = plan(this, now_ev, now=T0, window=WINDOW, target=target, shown=[shown], later=later)
    assert (result.shape, result.head_id, result.edit_id) == (Shape.EDIT, 7, 4242)
    assert [r.id for r in result.rows] == [9, 10] and result.events == [shown, now_ev, soon]


def test_only_a_message_queued_within_the_window_before_the_row_is_edited():
    """Too old a message, or one queued after this row (a clock step), gets a new message instead."""
    last = Sent(head_id=7, message_id=4242, queued_at=T0)
    assert edit_target(T0 + WINDOW, last, WINDOW) == last
    assert edit_target(T0 + WINDOW + timedelta(seconds=1), last, WINDOW) is None
    assert edit_target(T0 - timedelta(seconds=1), last, WINDOW) is None
    assert edit_target(T0, None, WINDOW) is None


def test_a_row_without_a_queue_time_is_measured_from_now():
    """An old row without a queue time starts its window now."""
    a, b = event(), event()
    result = plan(row(1, None, a), a, now=T0 + timedelta(seconds=100), window=WINDOW, later=[(row(2, 105, b), b)])
    assert [r.id for r in result.rows] == [1, 2]
