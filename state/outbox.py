"""The outbox: every message to send, per chat, in order; coalescing, retries, and what was given up."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bot.redact import redact
from state.base import DELIVERED, FAILED, PENDING, Repository, _iso, _ts, count
from state.reasons import failure_reason
from state.records import OutboxItem


class OutboxRepository(Repository):
    """The `outbox` table (joined with the events it sends). Request paths (/metrics, /status, STATUS=) read only
    bounded queries here: by what is waiting now, never by how much history the file holds."""

    def due_outbox(self, now: datetime, limit: int = 50) -> list[OutboxItem]:
        """Pending rows whose time has come, oldest first."""
        rows = self.db.execute(
            f"{_OUTBOX_SELECT} WHERE o.status = ? AND o.not_before <= ? ORDER BY o.id LIMIT ?",
            [PENDING, _ts(now), limit],
        ).fetchall()
        return [_outbox_item(r) for r in rows]

    def next_outbox_time(self) -> datetime | None:
        row = self.db.execute("SELECT min(not_before) FROM outbox WHERE status = ?", [PENDING]).fetchone()
        return datetime.fromtimestamp(row[0], UTC) if row and row[0] is not None else None

    def mark_retry(self, row_id: int, *, not_before: datetime, reason: str, count_attempt: bool = True) -> None:
        with self._atomic():
            self.db.execute(
                "UPDATE outbox SET not_before = ?, last_error = ?, attempts = attempts + ? WHERE id = ?",
                [_ts(not_before), redact(reason), 1 if count_attempt else 0, row_id],
            )

    def mark_failed(self, row_id: int, reason: str, now: datetime) -> None:
        with self._atomic():
            failed = self.db.execute(
                "UPDATE outbox SET status = ?, last_error = ?, delivered_at = ?, attempts = attempts + 1 "
                "WHERE id = ? AND status = ?",
                [FAILED, redact(reason), _iso(now), row_id, PENDING],
            ).rowcount
            count(self.db, "failed", failure_reason(reason), failed)

    def outbox_counts(self) -> dict[str, int]:
        return {r["status"]: r["n"] for r in self.db.execute("SELECT status, count(*) AS n FROM outbox GROUP BY status")}

    def outbox_rows(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        """Every outbox row as a dict (for `/status`, diagnostics and tests)."""
        sql = "SELECT id, key, event_key, chat_id, status, attempts, last_error, message_id FROM outbox"
        params: Sequence[Any] = []
        if chat_id is not None:
            sql, params = sql + " WHERE chat_id = ?", [chat_id]
        cur = self.db.execute(sql + " ORDER BY id", params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def pending_count(self) -> int:
        """Messages waiting to be sent (an index range over pending rows only)."""
        return self.db.execute("SELECT count(*) FROM outbox WHERE status = ?", [PENDING]).fetchone()[0]

    def oldest_pending_created(self) -> datetime | None:
        """When the oldest message still waiting to be sent was queued."""
        row = self.db.execute("SELECT min(created_at) FROM outbox WHERE status = ?", [PENDING]).fetchone()
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    def due_chats(self, now: datetime) -> list[int]:
        """Chats with at least one row due now, the chat with the oldest such row first."""
        rows = self.db.execute(
            "SELECT chat_id, min(id) AS first FROM outbox WHERE status = ? AND not_before <= ? "
            "GROUP BY chat_id ORDER BY first",
            [PENDING, _ts(now)],
        ).fetchall()
        return [r[0] for r in rows]

    def next_due_row(self, chat_id: int, now: datetime) -> OutboxItem | None:
        """The oldest row due now for one chat: a chat's messages go out in the order they were queued."""
        row = self.db.execute(
            f"{_OUTBOX_SELECT} WHERE o.chat_id = ? AND o.status = ? AND o.not_before <= ? ORDER BY o.id LIMIT 1",
            [chat_id, PENDING, _ts(now)],
        ).fetchone()
        return _outbox_item(row) if row else None

    def due_count(self, chat_id: int, now: datetime) -> int:
        """How many rows are due now for one chat (its backlog)."""
        return self.db.execute(
            "SELECT count(*) FROM outbox WHERE chat_id = ? AND status = ? AND not_before <= ?",
            [chat_id, PENDING, _ts(now)],
        ).fetchone()[0]

    def next_outbox_time_after(self, now: datetime) -> datetime | None:
        """When the next pending row that is not yet due becomes due (None if there is none)."""
        row = self.db.execute(
            "SELECT min(not_before) FROM outbox WHERE status = ? AND not_before > ?", [PENDING, _ts(now)]
        ).fetchone()
        return datetime.fromtimestamp(row[0], UTC) if row and row[0] is not None else None

    def pending_for_task(self, chat_id: int, task_id: int, now: datetime, *, after_id: int) -> list[OutboxItem]:
        """Due rows about the same task for the same chat queued after row `after_id` (to fold into one message)."""
        rows = self.db.execute(
            f"{_OUTBOX_SELECT} WHERE o.chat_id = ? AND e.task_id = ? AND o.status = ? AND o.not_before <= ? "
            "AND o.id > ? ORDER BY o.id",
            [chat_id, task_id, PENDING, _ts(now), after_id],
        ).fetchall()
        return [_outbox_item(r) for r in rows]

    def last_message_for_task(self, chat_id: int, task_id: int) -> tuple[int, int, datetime] | None:
        """The newest message sent to the chat about the task: (row id of its first row, message id, queued at)."""
        row = self.db.execute(
            "SELECT o.id, o.message_id, o.created_at FROM outbox o JOIN events e ON e.key = o.event_key "
            "WHERE o.chat_id = ? AND e.task_id = ? AND o.status = ? AND o.group_id IS NULL "
            "AND o.message_id IS NOT NULL ORDER BY o.id DESC LIMIT 1",
            [chat_id, task_id, DELIVERED],
        ).fetchone()
        return (row["id"], row["message_id"], datetime.fromisoformat(row["created_at"])) if row else None

    def message_payloads(self, head_id: int) -> list[dict[str, Any]]:
        """The events one message shows: its first row's and every row folded into it since, in order."""
        rows = self.db.execute(
            "SELECT e.payload FROM outbox o JOIN events e ON e.key = o.event_key "
            "WHERE (o.id = ? OR o.group_id = ?) AND o.status = ? ORDER BY o.id",
            [head_id, head_id, DELIVERED],
        ).fetchall()
        return [json.loads(r["payload"]) for r in rows]

    def mark_sent(self, row_ids: Sequence[int], message_id: int | None, now: datetime, *,
                  group_id: int | None = None) -> None:
        """Rows delivered as one message; every row but the message's first points at it (`group_id`)."""
        with self._atomic():
            for row_id in row_ids:
                group = group_id if group_id is not None and group_id != row_id else None
                self.db.execute(
                    "UPDATE outbox SET status = ?, message_id = ?, delivered_at = ?, last_error = NULL, group_id = ? "
                    "WHERE id = ?",
                    [DELIVERED, message_id, _iso(now), group, row_id],
                )

    def fail_pending_for_chat(self, chat_id: int, reason: str, now: datetime) -> int:
        """Give up every pending row of a chat (it will not take messages); returns how many."""
        with self._atomic():
            failed = self.db.execute(
                "UPDATE outbox SET status = ?, last_error = ?, delivered_at = ?, attempts = attempts + 1 "
                "WHERE chat_id = ? AND status = ?",
                [FAILED, redact(reason), _iso(now), chat_id, PENDING],
            ).rowcount
            count(self.db, "failed", failure_reason(reason), failed)
            return failed

    def outbox_problems(self, limit: int = 100) -> list[dict[str, Any]]:
        """Rows that are not simply delivered or waiting their turn: given up, or waiting after an error."""
        cur = self.db.execute(
            "SELECT id, event_key, chat_id, status, attempts, last_error, not_before FROM outbox "
            "WHERE status = ? OR (status = ? AND last_error IS NOT NULL) ORDER BY id DESC LIMIT ?",
            [FAILED, PENDING, limit],
        )
        names = [d[0] for d in cur.description]
        found = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        for item in found:
            item["not_before"] = datetime.fromtimestamp(item["not_before"], UTC)
        return found


_OUTBOX_SELECT = (
    "SELECT o.id, o.key, o.event_key, o.chat_id, o.attempts, e.payload, o.message_id, o.created_at "
    "FROM outbox o JOIN events e ON e.key = o.event_key"
)


def _outbox_item(r: sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        id=r["id"], key=r["key"], event_key=r["event_key"], chat_id=r["chat_id"], attempts=r["attempts"],
        payload=json.loads(r["payload"]), message_id=r["message_id"],
        created_at=datetime.fromisoformat(r["created_at"]) if r["created_at"] else None,
    )
