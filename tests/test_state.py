"""The state file: one transaction per poll, idempotent outbox, migrations, chats."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from state.records import DeliveryRow, EventRow, PollCommit, StoredSnapshot
from state.store import DELIVERED, FAILED, PENDING, Store

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def commit(store, key="status:1:1", chats=(10,), now=NOW):
    return store.commit_poll(
        PollCommit(
            now=now,
            snapshots=[StoredSnapshot(1, 2, {"general": 5, "deadline": None, "is_active": True})],
            seen_actions=[(77, 1, now)],
            events=[EventRow(key, "status", 1, {"kind": "status"})],
            deliveries=[DeliveryRow(key, c) for c in chats],
            meta={"feed_cursor": now.isoformat()},
        )
    )


def test_same_event_is_never_queued_twice(store):
    """Re-committing the same event for the same chats adds no outbox rows (idempotency key event × chat)."""
    assert commit(store, chats=(10, 20)) == 2
    assert commit(store, chats=(10, 20)) == 0
    assert len(store.outbox.outbox_rows()) == 2


def test_commit_is_all_or_nothing(store):
    """A failure inside the transaction leaves neither snapshot, event, outbox row nor cursor behind."""
    bad = PollCommit(
        now=NOW,
        snapshots=[StoredSnapshot(1, 1, {"general": 5})],
        events=[EventRow("e", "status", 1, {})],
        deliveries=[DeliveryRow("missing-event", 10)],  # violates the foreign key → whole commit rolls back
        meta={"feed_cursor": NOW.isoformat()},
    )
    with pytest.raises(sqlite3.IntegrityError):
        store.commit_poll(bad)
    assert store.tasks.snapshots([1]) == {} and store.outbox.outbox_rows() == [] and store.meta.get_meta("feed_cursor") is None


def test_outbox_lifecycle(store):
    """Rows go pending → retry later → delivered; a delay hides the row until its time."""
    commit(store)
    [row] = store.outbox.due_outbox(NOW)
    store.outbox.mark_retry(row.id, not_before=NOW + timedelta(seconds=30), reason="429")
    assert store.outbox.due_outbox(NOW) == []
    assert store.outbox.next_outbox_time() == NOW + timedelta(seconds=30)
    [again] = store.outbox.due_outbox(NOW + timedelta(seconds=31))
    assert again.attempts == 1
    store.outbox.mark_sent([again.id], 555, NOW)
    assert store.outbox.outbox_rows()[0]["status"] == DELIVERED and store.outbox.outbox_rows()[0]["message_id"] == 555
    assert store.outbox.due_outbox(NOW + timedelta(days=1)) == []


def test_state_survives_reopen(tmp_path):
    """Everything written is there after closing and reopening the file (and migrations do not rerun)."""
    s = Store.open(tmp_path / "x.sqlite3")
    commit(s)
    s.close()
    s = Store.open(tmp_path / "x.sqlite3")
    assert s.meta.get_meta("feed_cursor") == NOW.isoformat()
    assert s.outbox.outbox_counts() == {PENDING: 1}
    assert s.tasks.unseen_action_ids([77, 78]) == {78}
    s.close()


def test_chat_deactivation_reports_change_once(store):
    """Marking a chat inactive twice reports a change only the first time; /start makes it active again."""
    assert store.chats.set_chat_active(10, False, "blocked", NOW) is True
    assert store.chats.set_chat_active(10, False, "blocked", NOW) is False
    assert store.chats.inactive_chats()[0].reason == "blocked"
    assert store.chats.set_chat_active(10, True, None, NOW) is True
    assert store.chats.inactive_chats() == []


def test_chat_migration_moves_pending_rows(store):
    """A migrated group's pending rows are re-addressed to the new chat id."""
    commit(store, chats=(-5,))
    store.chats.migrate_chat(-5, -1005, NOW)
    [row] = store.outbox.due_outbox(NOW)
    assert row.chat_id == -1005 and store.chats.chat_migrations() == {-5: -1005}


def test_overdue_candidates(store):
    """Only active tasks past their deadline and not yet told are overdue candidates."""
    due = (NOW - timedelta(minutes=1)).timestamp()
    store.commit_poll(PollCommit(now=NOW, snapshots=[
        StoredSnapshot(1, 1, {"general": 1, "deadline": "a", "deadline_due": due, "is_active": True}),
        StoredSnapshot(2, 1, {"general": 2, "deadline": "a", "deadline_due": due, "is_active": False}),
        StoredSnapshot(3, 1, {"general": 3, "deadline": "a", "deadline_due": due, "is_active": True,
                              "overdue_for": "a"}),
        StoredSnapshot(4, 1, {"general": 4, "deadline": "b", "deadline_due": NOW.timestamp() + 60,
                              "is_active": True}),
    ]))
    assert [s.task_id for s in store.tasks.overdue_candidates(NOW)] == [1]


def test_failed_rows_are_visible(store):
    """A given-up row keeps its reason."""
    commit(store)
    [row] = store.outbox.due_outbox(NOW)
    store.outbox.mark_failed(row.id, "telegram refused: bad", NOW)
    assert store.outbox.outbox_rows()[0]["status"] == FAILED
    assert store.outbox.outbox_rows()[0]["last_error"] == "telegram refused: bad"


def test_the_store_owns_small_repositories_on_one_connection():
    """Store opens the file and owns its repositories (one connection, one health), each small."""
    store = Store.open(":memory:")
    try:
        repos = [store.meta, store.tasks, store.outbox, store.counters, store.chats, store.upkeep]
        assert all(r.db is store.db and r.health is store.health for r in repos)
        assert all(len([n for n in vars(type(r)) if not n.startswith("__")]) <= 20 for r in repos)
        assert store.outbox.pending_count() == 0
        store.meta.set_meta("k", "v")
        assert store.meta.get_meta("k") == "v"
        with pytest.raises(AttributeError):
            store.pending_count  # noqa: B018 - the one-class names are gone
    finally:
        store.close()
