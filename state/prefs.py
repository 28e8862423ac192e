"""The chat side's SQL: what chats asked for (language, mute, subscriptions, follows, snoozes), the daily digest
log, saved list queries, the cache of each task's latest actions, and read-only queries over the task snapshots.

It works on the same `sqlite_utils.Database` as `Store` (one connection, one process); the tables come from
migration m004. Every write is its own short transaction. Times are stored as UTC epoch seconds (REAL) or ISO
text, as in the store.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from state.records import PARTICIPANT, WORKER
from state.store import _iso, _ts  # one definition of how moments are stored

ALL_PROJECTS = 0  # chat_subscriptions.project_id for "every project"
LIST_QUERIES_KEPT = 7 * 24 * 3600.0  # seconds: paging buttons of older /find lists say "expired"


def _when(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


@dataclass(frozen=True)
class Subscription:
    chat_id: int
    project_id: int  # ALL_PROJECTS = every project
    kinds: tuple[str, ...]
    created_by: int


@dataclass(frozen=True)
class Follow:
    chat_id: int
    task_id: int
    general: int
    created_by: int


@dataclass(frozen=True)
class ListQuery:
    id: int
    chat_id: int
    user_id: int
    kind: str
    query: str


@dataclass(frozen=True)
class History:
    """The newest actions of a task as last read from Planfix (JSON-safe dicts, oldest first)."""

    task_id: int
    newest_action_id: int
    fetched_at: datetime
    actions: list[dict[str, Any]]


@dataclass
class Prefs:
    """Chat preferences and the chat side's caches, over the state file's database."""

    db: sqlite_utils.Database

    # -- language and mute -------------------------------------------------------------------------------------

    def language(self, chat_id: int) -> str | None:
        row = self.db.execute("SELECT language FROM chat_settings WHERE chat_id = ?", [chat_id]).fetchone()
        return row[0] if row else None

    def set_language(self, chat_id: int, language: str, now: datetime) -> None:
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO chat_settings (chat_id, language, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(chat_id) DO UPDATE SET language = excluded.language, updated_at = excluded.updated_at",
                [chat_id, language, _iso(now)],
            )

    def languages(self) -> dict[int, str]:
        rows = self.db.execute("SELECT chat_id, language FROM chat_settings WHERE language IS NOT NULL")
        return {r["chat_id"]: r["language"] for r in rows}

    def muted_until(self, chat_id: int, now: datetime) -> datetime | None:
        """When the chat's mute ends, or None if it is not muted (an expired mute counts as none)."""
        row = self.db.execute("SELECT muted_until FROM chat_settings WHERE chat_id = ?", [chat_id]).fetchone()
        if not row or row[0] is None or row[0] <= _ts(now):
            return None
        return _when(row[0])

    def set_mute(self, chat_id: int, until: datetime | None, now: datetime) -> None:
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO chat_settings (chat_id, muted_until, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(chat_id) DO UPDATE SET muted_until = excluded.muted_until, "
                "updated_at = excluded.updated_at",
                [chat_id, _ts(until) if until else None, _iso(now)],
            )

    def release_pending(self, chat_id: int, now: datetime) -> int:
        """Make the chat's deferred outbox rows due now (after /unmute or a shorter mute); the sender defers again
        whatever must still wait (quiet hours, the new mute, snoozes). Returns how many rows moved."""
        with self.db.atomic():
            return self.db.execute(
                "UPDATE outbox SET not_before = ? WHERE chat_id = ? AND status = 'pending' AND not_before > ?",
                [_ts(now), chat_id, _ts(now)],
            ).rowcount

    # -- subscriptions and follows -----------------------------------------------------------------------------

    def subscribe(self, chat_id: int, project_id: int, kinds: Sequence[str], created_by: int, now: datetime) -> None:
        """Subscribe the chat to a project (ALL_PROJECTS = every project); again = replace kinds and creator."""
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO chat_subscriptions (chat_id, project_id, kinds, created_by, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(chat_id, project_id) DO UPDATE SET kinds = excluded.kinds, "
                "created_by = excluded.created_by, created_at = excluded.created_at",
                [chat_id, project_id, ",".join(kinds), created_by, _iso(now)],
            )

    def unsubscribe(self, chat_id: int, project_id: int | None) -> int:
        """Remove one subscription, or every one of the chat (project_id None); returns how many."""
        with self.db.atomic():
            if project_id is None:
                return self.db.execute("DELETE FROM chat_subscriptions WHERE chat_id = ?", [chat_id]).rowcount
            return self.db.execute(
                "DELETE FROM chat_subscriptions WHERE chat_id = ? AND project_id = ?", [chat_id, project_id]
            ).rowcount

    def subscriptions(self, chat_id: int | None = None) -> list[Subscription]:
        sql = "SELECT chat_id, project_id, kinds, created_by FROM chat_subscriptions"
        params: list[Any] = []
        if chat_id is not None:
            sql, params = sql + " WHERE chat_id = ?", [chat_id]
        return [_subscription(r) for r in self.db.execute(sql + " ORDER BY chat_id, project_id", params)]

    def subscriptions_for(self, project_id: int | None) -> list[Subscription]:
        """Subscriptions that cover a project: to it, or to every project."""
        rows = self.db.execute(
            "SELECT chat_id, project_id, kinds, created_by FROM chat_subscriptions WHERE project_id IN (?, ?) "
            "ORDER BY chat_id",
            [ALL_PROJECTS, project_id if project_id is not None else ALL_PROJECTS],
        )
        return [_subscription(r) for r in rows]

    def follow(self, chat_id: int, task_id: int, general: int, created_by: int, now: datetime) -> bool:
        """Follow a task in a chat; False if the chat already did."""
        with self.db.atomic():
            return self.db.execute(
                "INSERT OR IGNORE INTO chat_follows (chat_id, task_id, general, created_by, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [chat_id, task_id, general, created_by, _iso(now)],
            ).rowcount > 0

    def unfollow(self, chat_id: int, task_id: int) -> bool:
        with self.db.atomic():
            return self.db.execute(
                "DELETE FROM chat_follows WHERE chat_id = ? AND task_id = ?", [chat_id, task_id]
            ).rowcount > 0

    def is_following(self, chat_id: int, task_id: int) -> bool:
        return self.db.execute(
            "SELECT 1 FROM chat_follows WHERE chat_id = ? AND task_id = ?", [chat_id, task_id]
        ).fetchone() is not None

    def follows(self, chat_id: int) -> list[Follow]:
        rows = self.db.execute(
            "SELECT chat_id, task_id, general, created_by FROM chat_follows WHERE chat_id = ? ORDER BY general",
            [chat_id],
        )
        return [Follow(*r) for r in rows]

    def followers(self, task_id: int) -> list[Follow]:
        rows = self.db.execute(
            "SELECT chat_id, task_id, general, created_by FROM chat_follows WHERE task_id = ? ORDER BY chat_id",
            [task_id],
        )
        return [Follow(*r) for r in rows]

    # -- snoozes -----------------------------------------------------------------------------------------------

    def snooze(self, chat_id: int, task_id: int, until: datetime) -> None:
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO chat_snoozes (chat_id, task_id, until) VALUES (?, ?, ?) "
                "ON CONFLICT(chat_id, task_id) DO UPDATE SET until = excluded.until",
                [chat_id, task_id, _ts(until)],
            )

    def snoozed_until(self, chat_id: int, task_id: int, now: datetime) -> datetime | None:
        row = self.db.execute(
            "SELECT until FROM chat_snoozes WHERE chat_id = ? AND task_id = ?", [chat_id, task_id]
        ).fetchone()
        if not row or row[0] <= _ts(now):
            return None
        return _when(row[0])

    def prune(self, now: datetime) -> None:
        """Forget expired snoozes and old list queries."""
        with self.db.atomic():
            self.db.execute("DELETE FROM chat_snoozes WHERE until <= ?", [_ts(now)])
            self.db.execute("DELETE FROM chat_lists WHERE created_at < ?", [_ts(now) - LIST_QUERIES_KEPT])

    # -- chats that moved --------------------------------------------------------------------------------------

    def adopt(self, old_chat_id: int, new_chat_id: int) -> None:
        """A group became a supergroup: its preferences move to the new chat id (the new id's own ones win)."""
        with self.db.atomic():
            for table in ("chat_settings", "chat_subscriptions", "chat_follows", "chat_snoozes", "chat_digests",
                          "chat_makers"):
                self.db.execute(f"UPDATE OR IGNORE {table} SET chat_id = ? WHERE chat_id = ?", [new_chat_id, old_chat_id])
                self.db.execute(f"DELETE FROM {table} WHERE chat_id = ?", [old_chat_id])

    # -- the people who made a group's subscriptions and follows -------------------------------------

    def group_makers(self, chat_id: int | None = None) -> list[tuple[int, int]]:
        """(group chat, person) for everyone who made a subscription or follow in a group (chat id < 0)."""
        where, params = ("chat_id = ?", [chat_id]) if chat_id is not None else ("chat_id < 0", [])
        rows = self.db.execute(
            f"SELECT chat_id, created_by FROM chat_subscriptions WHERE {where} "
            f"UNION SELECT chat_id, created_by FROM chat_follows WHERE {where} ORDER BY chat_id, created_by",
            params * 2,
        )
        return [(r["chat_id"], r["created_by"]) for r in rows]

    def maker_checked_at(self, chat_id: int, user_id: int) -> datetime | None:
        row = self.db.execute(
            "SELECT checked_at FROM chat_makers WHERE chat_id = ? AND user_id = ?", [chat_id, user_id]
        ).fetchone()
        return _when(row[0]) if row else None

    def record_maker(self, chat_id: int, user_id: int, *, qualifies: bool, reason: str, now: datetime) -> str:
        """Store a maker's standing; returns "suspended" or "resumed" when that changed, else "unchanged"."""
        with self.db.atomic():
            row = self.db.execute(
                "SELECT suspended FROM chat_makers WHERE chat_id = ? AND user_id = ?", [chat_id, user_id]
            ).fetchone()
            was_suspended = bool(row and row[0])
            self.db.execute(
                "INSERT INTO chat_makers (chat_id, user_id, suspended, reason, checked_at, told) "
                "VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT(chat_id, user_id) DO UPDATE SET "
                "suspended = excluded.suspended, reason = excluded.reason, checked_at = excluded.checked_at, "
                "told = CASE WHEN chat_makers.suspended = excluded.suspended THEN chat_makers.told ELSE 0 END",
                [chat_id, user_id, 0 if qualifies else 1, reason, _ts(now)],
            )
        if was_suspended == (not qualifies):
            return "unchanged"
        return "resumed" if qualifies else "suspended"

    def suspended_makers(self) -> set[tuple[int, int]]:
        rows = self.db.execute("SELECT chat_id, user_id FROM chat_makers WHERE suspended = 1")
        return {(r["chat_id"], r["user_id"]) for r in rows}

    def untold_suspensions(self) -> list[tuple[int, int, str]]:
        """Suspensions the group has not been told about yet: (chat, person, reason)."""
        rows = self.db.execute(
            "SELECT chat_id, user_id, reason FROM chat_makers WHERE suspended = 1 AND told = 0 ORDER BY 1, 2"
        )
        return [(r["chat_id"], r["user_id"], r["reason"] or "") for r in rows]

    def mark_told(self, chat_id: int, user_id: int) -> None:
        with self.db.atomic():
            self.db.execute("UPDATE chat_makers SET told = 1 WHERE chat_id = ? AND user_id = ?", [chat_id, user_id])

    # -- daily digest ------------------------------------------------------------------------------------------

    def digest_day(self, chat_id: int) -> str | None:
        """The local day (YYYY-MM-DD) of the chat's last digest, sent or skipped as empty."""
        row = self.db.execute("SELECT day FROM chat_digests WHERE chat_id = ?", [chat_id]).fetchone()
        return row[0] if row else None

    def mark_digest(self, chat_id: int, day: str, now: datetime) -> None:
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO chat_digests (chat_id, day, at) VALUES (?, ?, ?) "
                "ON CONFLICT(chat_id) DO UPDATE SET day = excluded.day, at = excluded.at",
                [chat_id, day, _iso(now)],
            )

    # -- list queries (paging buttons carry their id) ----------------------------------------------------------

    def save_list(self, chat_id: int, user_id: int, kind: str, query: str, now: datetime) -> int:
        with self.db.atomic():
            cursor = self.db.execute(
                "INSERT INTO chat_lists (chat_id, user_id, kind, query, created_at) VALUES (?, ?, ?, ?, ?)",
                [chat_id, user_id, kind, query, _ts(now)],
            )
            return int(cursor.lastrowid or 0)

    def list_query(self, query_id: int) -> ListQuery | None:
        row = self.db.execute(
            "SELECT id, chat_id, user_id, kind, query FROM chat_lists WHERE id = ?", [query_id]
        ).fetchone()
        return ListQuery(*row) if row else None

    # -- the latest actions of a task --------------------------------------------------------------------------

    def history(self, task_id: int) -> History | None:
        row = self.db.execute(
            "SELECT task_id, newest_action_id, fetched_at, actions FROM task_history WHERE task_id = ?", [task_id]
        ).fetchone()
        if not row:
            return None
        return History(row["task_id"], row["newest_action_id"], datetime.fromtimestamp(row["fetched_at"], UTC),
                       json.loads(row["actions"]))

    def save_history(self, task_id: int, actions: list[dict[str, Any]], newest_action_id: int, now: datetime) -> None:
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO task_history (task_id, newest_action_id, fetched_at, actions) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(task_id) DO UPDATE SET newest_action_id = excluded.newest_action_id, "
                "fetched_at = excluded.fetched_at, actions = excluded.actions",
                [task_id, newest_action_id, _ts(now), json.dumps(actions, ensure_ascii=False)],
            )

    def newest_seen_action(self, task_id: int) -> int | None:
        """The newest action of the task the feed has seen (the poller's seen_actions, kept for days)."""
        row = self.db.execute("SELECT max(action_id) FROM seen_actions WHERE task_id = ?", [task_id]).fetchone()
        return row[0] if row else None


def _subscription(row: sqlite3.Row) -> Subscription:
    kinds = tuple(k for k in str(row["kinds"]).split(",") if k)
    return Subscription(row["chat_id"], row["project_id"], kinds, row["created_by"])


@dataclass
class TaskIndex:
    """Read-only queries over the stored task snapshots (the `tasks` table the watcher writes). The SQL only
    narrows the candidates; who may see a task is decided by the caller, in one place."""

    db: sqlite_utils.Database

    def by_general(self, general: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT data FROM tasks WHERE general = ? ORDER BY task_id LIMIT 1", [general]).fetchone()
        return json.loads(row["data"]) if row else None

    def by_ids(self, task_ids: Iterable[int]) -> list[dict[str, Any]]:
        ids = list(dict.fromkeys(task_ids))
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found += [json.loads(r["data"]) for r in self.db.execute(f"SELECT data FROM tasks WHERE task_id IN ({marks})", chunk)]
        return found

    def active_of_worker(self, planfix_id: int) -> list[dict[str, Any]]:
        """Active tasks with this Planfix user among the assignees."""
        rows = self.db.execute(
            "SELECT t.data FROM task_people p JOIN tasks t ON t.task_id = p.task_id "
            "WHERE p.planfix_id = ? AND p.role = ? AND t.is_active = 1 ORDER BY t.task_id",
            [planfix_id, WORKER],
        )
        return [json.loads(r["data"]) for r in rows]

    def active_due_by(self, moment: datetime) -> list[dict[str, Any]]:
        """Active tasks whose deadline falls due at or before `moment` (everyone's)."""
        rows = self.db.execute(
            "SELECT data FROM tasks WHERE is_active = 1 AND deadline_due IS NOT NULL AND deadline_due <= ?",
            [_ts(moment)],
        )
        return [json.loads(r["data"]) for r in rows]

    def titles(self, participant: int | None = None) -> list[tuple[int, str]]:
        """(task_id, title) of every stored task, or of those with this Planfix user among the participants."""
        if participant is None:
            rows = self.db.execute("SELECT task_id, title FROM tasks")
        else:
            rows = self.db.execute(
                "SELECT t.task_id, t.title FROM task_people p JOIN tasks t ON t.task_id = p.task_id "
                "WHERE p.planfix_id = ? AND p.role = ?",
                [participant, PARTICIPANT],
            )
        return [(r["task_id"], r["title"] or "") for r in rows]
