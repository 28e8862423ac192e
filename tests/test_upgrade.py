"""Upgrades: a state file made by the first released schema opens with today's code and nothing is lost."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database

from state.migrations import migrations
from state.store import Store

V1_DUMP = Path(__file__).parent / "fixtures" / "state-v1.sql"


def make_v1_database(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.executescript(V1_DUMP.read_text(encoding="utf-8"))
    con.close()
    return path


def test_v1_state_migrates_forward_without_loss(tmp_path):
    """Snapshots, cursor, seen actions, pending and delivered outbox rows, inactive chats and chat migrations
    made by schema m001 are all still there after every later migration has been applied."""
    store = Store.open(make_v1_database(tmp_path / "state.sqlite3"))
    try:
        applied = [m.name for m in migrations.applied(store.db)]
        assert applied[0] == "m001_initial" and not migrations.pending(store.db)
        assert store.meta.get_meta("feed_cursor") == "2026-11-20T10:00:00+00:00"
        assert store.meta.get_meta("api_timezone") == "Asia/Yekaterinburg"
        snap = store.tasks.snapshots([1128468])[1128468]
        assert snap.revision == 2 and snap.data["title"] == "Интеграция с toggl <b>"
        assert snap.data["participants"] == [9230, 9231]
        assert store.tasks.unseen_action_ids([6379544, 1]) == {1}
        rows = store.outbox.outbox_rows()
        assert [(r["chat_id"], r["status"], r["message_id"]) for r in rows] == [(-1001, "delivered", 77),
                                                                                 (222, "pending", None)]
        [due] = store.outbox.due_outbox(datetime(2026, 11, 21, tzinfo=UTC))
        assert due.chat_id == 222 and due.payload["new_value"] == "В работе"
        assert [(c.chat_id, c.reason) for c in store.chats.inactive_chats()] == [
            (-1002, "Forbidden: bot was kicked from the group chat")
        ]
        assert store.chats.chat_migrations() == {-5: -1005}
    finally:
        store.close()


def test_reopening_a_migrated_file_applies_nothing_twice(tmp_path):
    """Opening an already-upgraded file again runs no migration a second time."""
    path = make_v1_database(tmp_path / "state.sqlite3")
    Store.open(path).close()
    store = Store.open(path)
    names = [m.name for m in migrations.applied(store.db)]
    store.close()
    assert len(names) == len(set(names))


def test_migrations_are_registered_in_order():
    """Each migration is named mNNN_*, registered (and so applied to a new file) in the order of its number."""
    names = [m.name for m in migrations.pending(Database(memory=True))]
    assert names == sorted(names) and len({n[:4] for n in names}) == len(names)


def test_a_file_upgraded_in_the_old_order_opens_with_nothing_pending(tmp_path):
    """Files upgraded while m003 was registered before m002 (both applied, or only m001 and m003 when a start
    was stopped in between) open cleanly: migrations are told apart by name, so none runs twice or is skipped."""
    for applied in (["m001_initial", "m003_delivery_coalescing", "m002_detection_sweep"],
                    ["m001_initial", "m003_delivery_coalescing"]):
        path = make_v1_database(tmp_path / f"state-{len(applied)}.sqlite3")
        db = Database(path)
        by_name = {m.name: m for m in migrations._migrations}
        for name in applied[1:]:
            by_name[name].fn(db)
            db["_sqlite_migrations"].insert({"migration_set": migrations.name, "name": name,
                                             "applied_at": "2026-11-01 00:00:00+00:00"})
        db.close()
        store = Store.open(path)
        try:
            names = [m.name for m in migrations.applied(store.db)]
            assert not migrations.pending(store.db) and len(names) == len(set(names))
            assert names[:len(applied)] == applied
            assert store.db["sweep_seen"].exists() and "group_id" in store.db["outbox"].columns_dict
        finally:
            store.close()


def test_m010_fills_title_and_people_from_the_stored_snapshots(tmp_path):
    """Titles, assignees and participants of tasks stored before m010 become columns and rows of their own, so
    /find, /my and access checks select them without reading the JSON layout in SQL."""
    from state.prefs import TaskIndex

    path = make_v1_database(tmp_path / "state.sqlite3")
    con = sqlite3.connect(path)
    con.execute("INSERT INTO tasks (task_id, general, revision, data, deadline, deadline_due, is_active, overdue_for, "
                "updated_at) VALUES (7, 70, 1, ?, NULL, NULL, 1, NULL, '2026-11-20T10:00:00+00:00')",
                ['{"title": "Second", "workers": [9231], "participants": [9231, 9300], "is_active": true}'])
    con.commit()
    con.close()
    store = Store.open(path)
    try:
        tasks = TaskIndex(store.db)
        assert sorted(tasks.titles()) == [(7, "Second"), (1128468, "Интеграция с toggl <b>")]
        assert sorted(t for t, _ in tasks.titles(participant=9231)) == [7, 1128468]
        assert [t["title"] for t in tasks.active_of_worker(9231)] == ["Second"]
        assert tasks.active_of_worker(9230) == []
        sql = " ".join(r["sql"] or "" for r in store.db.execute("SELECT sql FROM sqlite_master"))
        assert "json_" not in sql
    finally:
        store.close()
