"""Schema versions of the state file; each step is one function, applied forward automatically on open."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("planfix-bot")


@migrations()
def m001_initial(db: Database) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(
        """CREATE TABLE tasks (
            task_id INTEGER PRIMARY KEY,
            general INTEGER,
            revision INTEGER NOT NULL,
            data TEXT NOT NULL,
            deadline TEXT,
            deadline_due REAL,
            is_active INTEGER NOT NULL DEFAULT 1,
            overdue_for TEXT,
            updated_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX tasks_general ON tasks (general)")
    db.execute("CREATE INDEX tasks_due ON tasks (deadline_due) WHERE is_active = 1")
    db.execute("CREATE TABLE seen_actions (action_id INTEGER PRIMARY KEY, task_id INTEGER, at REAL NOT NULL)")
    db.execute("CREATE INDEX seen_actions_at ON seen_actions (at)")
    db.execute(
        """CREATE TABLE events (
            key TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            task_id INTEGER NOT NULL,
            payload TEXT NOT NULL,
            created_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            key TEXT NOT NULL UNIQUE,
            event_key TEXT NOT NULL REFERENCES events(key),
            chat_id INTEGER NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            not_before REAL NOT NULL,
            last_error TEXT,
            message_id INTEGER,
            created_at TEXT NOT NULL,
            delivered_at TEXT
        )"""
    )
    db.execute("CREATE INDEX outbox_due ON outbox (status, not_before)")
    db.execute(
        """CREATE TABLE chats (
            chat_id INTEGER PRIMARY KEY,
            active INTEGER NOT NULL,
            reason TEXT,
            updated_at TEXT NOT NULL
        )"""
    )
    db.execute(
        "CREATE TABLE chat_migrations (old_chat_id INTEGER PRIMARY KEY, new_chat_id INTEGER NOT NULL, at TEXT NOT NULL)"
    )


@migrations()
def m003_delivery_coalescing(db: Database) -> None:
    """Issue 5: outbox rows folded into one Telegram message (coalescing) point at the row that sent it."""
    db.execute("ALTER TABLE outbox ADD COLUMN group_id INTEGER")
    db.execute("CREATE INDEX IF NOT EXISTS outbox_chat_due ON outbox (chat_id, status, not_before, id)")
    db.execute("CREATE INDEX IF NOT EXISTS events_task ON events (task_id)")


@migrations()
def m002_detection_sweep(db: Database) -> None:
    """Issue 4: the task ids the current reconciliation pass has seen in Planfix's active list (the rest are
    checked one by one at the end of the pass: closed, deleted or no longer visible)."""
    db.execute("CREATE TABLE IF NOT EXISTS sweep_seen (task_id INTEGER PRIMARY KEY)")
