"""The coalescing plan (DESIGN rule 6, "quiet, but never late"): which rows one message carries, new or an edit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from bot.events import Event
from state.records import OutboxItem


class Shape(Enum):
    """Why the message looks the way it does."""

    ALONE = "alone"  # coalescing is off, or a digest: the row is its own message
    NEW = "new"  # the first message about the task within the window (rows queued soon after may join it)
    EDIT = "edit"  # a message about the task went out within the window: it is updated in place


@dataclass(frozen=True)
class Sent:
    """The newest message sent to the chat about the task: its first outbox row, Telegram id, when it was queued."""

    head_id: int
    message_id: int
    queued_at: datetime


@dataclass(frozen=True)
class Plan:
    """What one Telegram request delivers: these rows, showing these events, as a new message or an edit."""

    rows: list[OutboxItem]
    events: list[Event]
    head_id: int  # the outbox row whose message this is (rows folded in point at it)
    edit_id: int | None = None  # Telegram message id to edit in place, or None for a new message
    shape: Shape = Shape.ALONE


def coalesces(event: Event, window: timedelta) -> bool:
    """Digests span many tasks and always go out alone; a window of 0 turns coalescing off."""
    return event.coalesces and window > timedelta(0)


def edit_target(queued_at: datetime, last: Sent | None, window: timedelta) -> Sent | None:
    """The message this row updates in place: the task's last message, if this row was queued within `window`
    after it (the first change always goes out at once; later ones within the window edit it)."""
    if last is not None and timedelta(0) <= queued_at - last.queued_at <= window:
        return last
    return None


def plan(row: OutboxItem, event: Event, *, now: datetime, window: timedelta, target: Sent | None = None,
         shown: Sequence[Event] = (), later: Sequence[tuple[OutboxItem, Event]] = ()) -> Plan:
    """The message for `row`: alone, or new with the same task's rows queued within `window` of it folded in, or
    an edit of `target` (which already shows `shown`) with this row and those within `window` of the target."""
    if not coalesces(event, window):
        return Plan([row], [event], head_id=row.id)
    anchor = target.queued_at if target is not None else (row.created_at or now)
    rows = [row]
    events = [*shown, event] if target is not None else [event]
    for later_row, later_event in later:
        if later_row.created_at is None or later_row.created_at - anchor > window:
            break
        if not later_event.coalesces:
            continue
        rows.append(later_row)
        events.append(later_event)
    if target is None:
        return Plan(rows, events, head_id=row.id, shape=Shape.NEW)
    return Plan(rows, events, head_id=target.head_id, edit_id=target.message_id, shape=Shape.EDIT)
