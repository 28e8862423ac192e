"""Chats the bot may not write to (and why), chats held for want of rights, and groups that became supergroups."""

from __future__ import annotations

from datetime import datetime

from bot.redact import redact
from state.base import PENDING, SUPERSEDED, Repository, _iso, put_meta
from state.records import ChatState

_RESTRICTED_KEY = "chat_restricted_since:"


class ChatRepository(Repository):
    """The `chats` and `chat_migrations` tables, and the restricted-since marks."""

    def chat(self, chat_id: int) -> ChatState | None:
        row = self.db.execute("SELECT chat_id, active, reason FROM chats WHERE chat_id = ?", [chat_id]).fetchone()
        return ChatState(chat_id=row["chat_id"], active=bool(row["active"]), reason=row["reason"]) if row else None

    def set_chat_active(self, chat_id: int, active: bool, reason: str | None, now: datetime) -> bool:
        """Mark a chat (in)active; returns True when that changed anything (so admins are told only once)."""
        with self._atomic():
            before = self.chat(chat_id)
            if before is not None and before.active == active:
                return False
            self.db.execute(
                "INSERT INTO chats (chat_id, active, reason, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(chat_id) DO UPDATE SET active = excluded.active, reason = excluded.reason, "
                "updated_at = excluded.updated_at",
                [chat_id, 1 if active else 0, redact(reason) if reason else reason, _iso(now)],
            )
            return before is not None or not active

    def inactive_chats(self) -> list[ChatState]:
        return [
            ChatState(chat_id=r["chat_id"], active=False, reason=r["reason"])
            for r in self.db.execute("SELECT chat_id, reason FROM chats WHERE active = 0 ORDER BY chat_id")
        ]

    def migrate_chat(self, old_chat_id: int, new_chat_id: int, now: datetime) -> None:
        """A group became a supergroup: send its pending rows to the new id and remember the mapping."""
        with self._atomic():
            self.db.execute(
                "INSERT INTO chat_migrations (old_chat_id, new_chat_id, at) VALUES (?, ?, ?) "
                "ON CONFLICT(old_chat_id) DO UPDATE SET new_chat_id = excluded.new_chat_id, at = excluded.at",
                [old_chat_id, new_chat_id, _iso(now)],
            )
            self.db.execute(
                "UPDATE outbox SET chat_id = ?, key = event_key || '@' || ? WHERE chat_id = ? AND status = ? "
                "AND NOT EXISTS (SELECT 1 FROM outbox o2 WHERE o2.key = outbox.event_key || '@' || ?)",
                [new_chat_id, new_chat_id, old_chat_id, PENDING, new_chat_id],
            )
            # A row that could not move already has its twin queued for the new id: settle it, or the sender would
            # keep addressing the old id (and keep getting "upgraded to a supergroup") forever.
            self.db.execute(
                "UPDATE outbox SET status = ?, last_error = ?, delivered_at = ? WHERE chat_id = ? AND status = ?",
                [SUPERSEDED, f"chat migrated to {new_chat_id}; already queued there", _iso(now), old_chat_id,
                 PENDING],
            )

    def restricted_chats(self) -> dict[int, datetime]:
        """Chats that answer "not enough rights to send", and since when (kept across restarts: the hold is
        bounded in time, not in attempts)."""
        return {
            int(r["key"][len(_RESTRICTED_KEY):]): datetime.fromisoformat(r["value"])
            for r in self.db.execute("SELECT key, value FROM meta WHERE key LIKE ?", [_RESTRICTED_KEY + "%"])
        }

    def set_restricted_since(self, chat_id: int, since: datetime | None) -> None:
        with self._atomic():
            if since is None:
                self.db.execute("DELETE FROM meta WHERE key = ?", [f"{_RESTRICTED_KEY}{chat_id}"])
            else:
                put_meta(self.db, f"{_RESTRICTED_KEY}{chat_id}", _iso(since))

    def chat_migrations(self) -> dict[int, int]:
        rows = self.db.execute("SELECT old_chat_id, new_chat_id FROM chat_migrations")
        return {r["old_chat_id"]: r["new_chat_id"] for r in rows}
