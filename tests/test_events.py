"""The typed change record: each kind's payload survives the state file, and rows of the previous release (a bag of
old_value/new_value/subject_id/items) are still read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.events import (
    Assigned,
    Comment,
    Daily,
    DeadlineMove,
    Digest,
    Event,
    Kind,
    Overdue,
    Reminder,
    StatusMove,
)

AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def event(kind: Kind, payload) -> Event:
    return Event(kind=kind, key=f"{kind}:1", task_id=1, task_general=5, task_title="T", occurred_at=AT,
                 payload=payload, participants=(1, 2))


@pytest.mark.parametrize(("kind", "payload"), [
    (Kind.STATUS, StatusMove(1, 2, "Новая", "В работе")),
    (Kind.DEADLINE, DeadlineMove(None, "2026-11-30")),
    (Kind.OVERDUE, Overdue("2026-11-23T10:00:00+03:00")),
    (Kind.REMINDER, Reminder("24h", "2026-11-24")),
    (Kind.ASSIGNED, Assigned(11, "Bob")),
    (Kind.COMMENT, Comment("<p>hi</p>", ("a.pdf",))),
    (Kind.DIGEST, Digest("burst", ({"kind": "status"},), part=2, parts=3, total=150)),
    (Kind.DAILY, Daily("2026-11-23", "Europe/Berlin", ({"general": 5},))),
])
def test_every_payload_survives_json(kind, payload):
    import json

    original = event(kind, payload)
    assert Event.from_json(json.loads(json.dumps(original.to_json()))) == original
    assert original.to_json()["kind"] == str(kind)  # the stored kind names stay exactly as they were


@pytest.mark.parametrize(("kind", "legacy", "payload"), [
    (Kind.STATUS, {"old_value": "Новая", "new_value": "В работе"}, StatusMove(None, None, "Новая", "В работе")),
    (Kind.DEADLINE, {"old_value": None, "new_value": "2026-11-30"}, DeadlineMove(None, "2026-11-30")),
    (Kind.OVERDUE, {"old_value": "2026-11-23", "new_value": "2026-11-23"}, Overdue("2026-11-23")),
    (Kind.REMINDER, {"old_value": "24h", "new_value": "2026-11-24"}, Reminder("24h", "2026-11-24")),
    (Kind.ASSIGNED, {"new_value": "Bob", "subject_id": 11}, Assigned(11, "Bob")),
    (Kind.DIGEST, {"old_value": "burst:2/3:150", "new_value": "50", "items": [{"kind": "status"}]},
     Digest("burst", ({"kind": "status"},), part=2, parts=3, total=150)),
    (Kind.DIGEST, {"old_value": "catchup", "new_value": "1", "items": []}, Digest("catchup")),
    (Kind.DAILY, {"old_value": "2026-11-23", "new_value": "Europe/Berlin", "items": [], "task_id": -20261123},
     Daily("2026-11-23", "Europe/Berlin")),
])
def test_rows_of_the_previous_release_are_read(kind, legacy, payload):
    data = {"kind": str(kind), "key": "k", "task_id": 1, "task_general": 5, "task_title": "T",
            "occurred_at": AT.isoformat(), "participants": [1], "items": [], **legacy}
    read = Event.from_json(data)
    assert read.kind is kind and read.payload == payload
    assert read.coalesces == (kind not in (Kind.DIGEST, Kind.DAILY))
