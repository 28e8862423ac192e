"""The SQL of writing to Planfix from Telegram: which task a bot message is about, and each write's intent/result."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlite_utils

from state.store import _ts

INTENT, DONE, FAILED = "intent", "done", "failed"
KEPT = timedelta(days=30)  # writes and card records older than this are forgotten (redeliveries come in minutes)


@dataclass(frozen=True)
class MessageTask:
    task_id: int
    general: int


@dataclass(frozen=True)
class Write:
    """One write to Planfix asked for from Telegram, keyed by the update that asked for it."""

    key: str
    chat_id: int
    user_id: int
    planfix_id: int | None
    actor_name: str
    task_id: int
    general: int
    description: str
    owner: int | None
    new_status: int | None
    state: str = INTENT
    action_id: int | None = None
    error: str | None = None
    created_at: datetime | None = None


_COLUMNS = ("key, chat_id, user_id, planfix_id, actor_name, task_id, general, description, owner, new_status, state, "
            "action_id, error, created_at")


def _write(row: Sequence[Any]) -> Write:
    return Write(*row[:13], created_at=datetime.fromtimestamp(row[13], UTC))


class Actions:
    """Works on the Store's database (one connection, one process); tables from migration m009."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    # which task a message is about

    def remember_message(self, chat_id: int, message_id: int, task_id: int, general: int, now: datetime) -> None:
        with self.db.atomic():
            self.db.execute("DELETE FROM bot_messages WHERE at < ?", [_ts(now - KEPT)])
            self.db.execute(
                "INSERT OR REPLACE INTO bot_messages (chat_id, message_id, task_id, general, at) VALUES (?, ?, ?, ?, ?)",
                [chat_id, message_id, task_id, general, _ts(now)],
            )

    def task_of_message(self, chat_id: int, message_id: int) -> MessageTask | None:
        """The one task a bot message is about: a card or confirmation, or a notification (outbox rows that went
        out as that message, possibly several coalesced ones of one task). A digest spans many tasks: None."""
        row = self.db.execute(
            "SELECT task_id, general FROM bot_messages WHERE chat_id = ? AND message_id = ?", [chat_id, message_id]
        ).fetchone()
        if row:
            return MessageTask(row["task_id"], row["general"])
        rows = self.db.execute(
            "SELECT e.task_id, e.payload FROM outbox o JOIN events e ON e.key = o.event_key "
            "WHERE o.chat_id = ? AND o.message_id = ?",
            [chat_id, message_id],
        ).fetchall()
        found = {(r["task_id"], json.loads(r["payload"]).get("task_general")) for r in rows if r["task_id"] > 0}
        if len(found) != 1:
            return None
        task_id, general = found.pop()
        return MessageTask(task_id, int(general)) if general else None

    # writes: the intent before the call, the result after

    def begin(self, write: Write, now: datetime) -> Write:
        """Record the intent; if this update was seen before, the record made then (whatever its state)."""
        with self.db.atomic():
            self.db.execute("DELETE FROM chat_actions WHERE created_at < ?", [_ts(now - KEPT)])
            self.db.execute(
                f"INSERT OR IGNORE INTO chat_actions ({_COLUMNS}) VALUES ({', '.join('?' * 14)})",
                [write.key, write.chat_id, write.user_id, write.planfix_id, write.actor_name, write.task_id,
                 write.general, write.description, write.owner, write.new_status, INTENT, None, None, _ts(now)],
            )
        found = self.get(write.key)
        assert found is not None
        return found

    def get(self, key: str) -> Write | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM chat_actions WHERE key = ?", [key]).fetchone()
        return _write(row) if row else None

    def revise(self, key: str, *, description: str, owner: int | None) -> None:
        """A definite refusal of the first try (e.g. `owner`): what the second try sends instead."""
        with self.db.atomic():
            self.db.execute("UPDATE chat_actions SET description = ?, owner = ? WHERE key = ? AND state = ?",
                            [description, owner, key, INTENT])

    def finish(self, key: str, action_id: int, now: datetime) -> None:
        with self.db.atomic():
            self.db.execute("UPDATE chat_actions SET state = ?, action_id = ?, error = NULL, done_at = ? WHERE key = ?",
                            [DONE, action_id, _ts(now), key])

    def fail(self, key: str, error: str, now: datetime) -> None:
        """Planfix refused: nothing was written (a retried update may try again)."""
        with self.db.atomic():
            self.db.execute("UPDATE chat_actions SET state = ?, error = ?, done_at = ? WHERE key = ?",
                            [FAILED, error, _ts(now), key])

    def forget(self, key: str) -> None:
        with self.db.atomic():
            self.db.execute("DELETE FROM chat_actions WHERE key = ?", [key])

    def unfinished(self, since: datetime) -> list[Write]:
        """Intents without a result (the process died, or Planfix did not answer), newer than `since`."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM chat_actions WHERE state = ? AND created_at >= ? ORDER BY created_at",
            [INTENT, _ts(since)],
        ).fetchall()
        return [_write(r) for r in rows]

    def recorded_action_ids(self, task_id: int) -> set[int]:
        rows = self.db.execute(
            "SELECT action_id FROM chat_actions WHERE task_id = ? AND action_id IS NOT NULL", [task_id]
        ).fetchall()
        return {r["action_id"] for r in rows}

    def authors(self, action_ids: Iterable[int]) -> dict[int, Write]:
        """Our own writes among these action ids: action id → who made it from Telegram."""
        ids = list(dict.fromkeys(action_ids))
        found: dict[int, Write] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM chat_actions WHERE action_id IN ({', '.join('?' * len(chunk))})", chunk
            ).fetchall()
            found.update({r[11]: _write(r) for r in rows})
        return found
