"""Schema versions of the state file; each step is one function, registered in order, applied forward on open."""

from __future__ import annotations

import json

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
def m002_detection_sweep(db: Database) -> None:
    """The task ids the current reconciliation pass has seen in Planfix's active list (the rest are
    checked one by one at the end of the pass: closed, deleted or no longer visible)."""
    db.execute("CREATE TABLE IF NOT EXISTS sweep_seen (task_id INTEGER PRIMARY KEY)")


@migrations()
def m003_delivery_coalescing(db: Database) -> None:
    """Outbox rows folded into one Telegram message (coalescing) point at the row that sent it."""
    db.execute("ALTER TABLE outbox ADD COLUMN group_id INTEGER")
    db.execute("CREATE INDEX IF NOT EXISTS outbox_chat_due ON outbox (chat_id, status, not_before, id)")
    db.execute("CREATE INDEX IF NOT EXISTS events_task ON events (task_id)")


@migrations()
def m004_chat_prefs(db: Database) -> None:
    """What chats asked for — language, mute, subscriptions, followed tasks, snoozes — plus the daily
    digest log, saved list queries (for paging buttons) and the cache of each task's latest actions."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS chat_settings (chat_id INTEGER PRIMARY KEY, language TEXT, muted_until REAL, "
        "updated_at TEXT NOT NULL)"
    )
    db.execute(
        """CREATE TABLE IF NOT EXISTS chat_subscriptions (
            chat_id INTEGER NOT NULL,
            project_id INTEGER NOT NULL,  -- 0: every project
            kinds TEXT NOT NULL,          -- comma-separated event kinds
            created_by INTEGER NOT NULL,  -- Telegram user id: the subscription shows only what they may see
            created_at TEXT NOT NULL,
            PRIMARY KEY (chat_id, project_id)
        )"""
    )
    db.execute(
        """CREATE TABLE IF NOT EXISTS chat_follows (
            chat_id INTEGER NOT NULL,
            task_id INTEGER NOT NULL,
            general INTEGER NOT NULL,
            created_by INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (chat_id, task_id)
        )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS chat_follows_task ON chat_follows (task_id)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS chat_snoozes (chat_id INTEGER NOT NULL, task_id INTEGER NOT NULL, "
        "until REAL NOT NULL, PRIMARY KEY (chat_id, task_id))"
    )
    db.execute("CREATE TABLE IF NOT EXISTS chat_digests (chat_id INTEGER PRIMARY KEY, day TEXT NOT NULL, at TEXT NOT NULL)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS chat_lists (id INTEGER PRIMARY KEY AUTOINCREMENT, chat_id INTEGER NOT NULL, "
        "user_id INTEGER NOT NULL, kind TEXT NOT NULL, query TEXT NOT NULL, created_at REAL NOT NULL)"
    )
    db.execute(
        "CREATE TABLE IF NOT EXISTS task_history (task_id INTEGER PRIMARY KEY, newest_action_id INTEGER NOT NULL, "
        "fetched_at REAL NOT NULL, actions TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX IF NOT EXISTS seen_actions_task ON seen_actions (task_id, action_id)")


@migrations()
def m005_set_aside(db: Database) -> None:
    """Tasks Planfix refuses to show one by one (no access, a malformed card, an unknown code for that
    task alone). Their snapshots stay; these rows say why they are not read, since when, and last checked."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS set_aside (task_id INTEGER PRIMARY KEY, code TEXT NOT NULL, since TEXT NOT NULL, "
        "checked_at TEXT NOT NULL)"
    )


@migrations()
def m007_history_pruning(db: Database) -> None:
    """Delivered rows and their events are pruned after `state.keep_days`, so the totals /metrics shows
    move to a small counters table (seeded from the rows kept so far), and the pruning gets its indexes."""
    from state.reasons import failure_reason

    db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT NOT NULL, label TEXT NOT NULL, "
               "value INTEGER NOT NULL, PRIMARY KEY (name, label))")
    db.execute("INSERT OR IGNORE INTO counters (name, label, value) SELECT 'events', kind, count(*) FROM events "
               "GROUP BY kind")
    failed: dict[str, int] = {}
    for text, count in db.execute("SELECT last_error, count(*) FROM outbox WHERE status = 'failed' GROUP BY 1"):
        label = failure_reason(text or "")
        failed[label] = failed.get(label, 0) + count
    for label, count in failed.items():
        db.execute("INSERT OR IGNORE INTO counters (name, label, value) VALUES ('failed', ?, ?)", [label, count])
    db.execute("CREATE INDEX IF NOT EXISTS outbox_event ON outbox (event_key)")
    db.execute("CREATE INDEX IF NOT EXISTS outbox_settled ON outbox (delivered_at) WHERE status <> 'pending'")
    db.execute("CREATE INDEX IF NOT EXISTS events_created ON events (created_at)")


@migrations()
def m008_group_makers(db: Database) -> None:
    """The standing of each person who made a group's subscription or follow — still linked, still in
    the group, still its administrator? — checked from chat_member updates and at least daily; when they no
    longer qualify their subscriptions there are suspended and the group is told once (`told`)."""
    db.execute(
        """CREATE TABLE IF NOT EXISTS chat_makers (
            chat_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            suspended INTEGER NOT NULL DEFAULT 0,
            reason TEXT,
            checked_at REAL,
            told INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (chat_id, user_id)
        )"""
    )


@migrations()
def m009_chat_actions(db: Database) -> None:
    """Which task each message the bot sent directly is about (cards, confirmations; notifications are
    found through the outbox), and every write to Planfix made from Telegram: its intent before the call, its
    result after, so a redelivered update never writes twice and the feed can tell our own actions."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS bot_messages (chat_id INTEGER NOT NULL, message_id INTEGER NOT NULL, "
        "task_id INTEGER NOT NULL, general INTEGER NOT NULL, at REAL NOT NULL, PRIMARY KEY (chat_id, message_id))"
    )
    db.execute("CREATE INDEX IF NOT EXISTS bot_messages_at ON bot_messages (at)")
    db.execute("CREATE INDEX IF NOT EXISTS outbox_message ON outbox (chat_id, message_id)")
    db.execute(
        """CREATE TABLE IF NOT EXISTS chat_actions (
            key TEXT PRIMARY KEY,          -- "u:<update_id>" or "c:<callback query id>": one Telegram update
            chat_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,      -- the Telegram user who acted
            planfix_id INTEGER,            -- their Planfix user, if linked
            actor_name TEXT NOT NULL,
            task_id INTEGER NOT NULL,
            general INTEGER NOT NULL,
            description TEXT NOT NULL,     -- exactly what was sent (Planfix HTML)
            owner INTEGER,                 -- the `owner` sent, or NULL for the API user
            new_status INTEGER,
            state TEXT NOT NULL,           -- intent | done | failed
            action_id INTEGER,
            error TEXT,
            created_at REAL NOT NULL,
            done_at REAL
        )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS chat_actions_action ON chat_actions (action_id)")
    db.execute("CREATE INDEX IF NOT EXISTS chat_actions_state ON chat_actions (state, created_at)")


@migrations()
def m010_task_columns(db: Database) -> None:
    """What SQL selects tasks by — the title, the assignees and the participants — as columns and rows of
    their own, so no query depends on the JSON layout of a snapshot (json_extract, json_each). Filled from the
    stored snapshots here, in Python (the layout known today), then by every snapshot write."""
    db.execute("ALTER TABLE tasks ADD COLUMN title TEXT")
    db.execute(
        "CREATE TABLE IF NOT EXISTS task_people (task_id INTEGER NOT NULL, role TEXT NOT NULL, "
        "planfix_id INTEGER NOT NULL, PRIMARY KEY (task_id, role, planfix_id)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX IF NOT EXISTS task_people_person ON task_people (planfix_id, role)")
    from state.records import task_columns  # the one reader of the snapshot layout, shared with the store

    cursor = db.execute("SELECT task_id, data FROM tasks")
    while batch := cursor.fetchmany(1000):
        titles, people = [], []
        for task_id, data in batch:
            title, roles = task_columns(json.loads(data))
            titles.append((title, task_id))
            people += [(task_id, role, person) for role, ids in roles.items() for person in ids]
        db.conn.executemany("UPDATE tasks SET title = ? WHERE task_id = ?", titles)
        db.conn.executemany("INSERT OR IGNORE INTO task_people (task_id, role, planfix_id) VALUES (?, ?, ?)", people)
