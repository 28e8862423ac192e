"""The SQLite state file: task snapshots, seen actions, the feed cursor, events, the outbox and chats."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils
import structlog

from bot.redact import redact
from state.health import StoreHealth, is_write_failure
from state.migrations import migrations
from state.reasons import failure_reason
from state.records import ChatState, DeliveryRow, EventRow, OutboxItem, PollCommit, StoredSnapshot, task_columns

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
SUPERSEDED = "superseded"  # a migrated chat's row whose twin was already queued for the new chat id

log = structlog.get_logger(__name__)
_RESTRICTED_KEY = "chat_restricted_since:"


class StateFileError(Exception):
    """The state file cannot be used at all (not a database, damaged, unreadable): a person must act."""

    def __init__(self, path: Path, problem: str, fix: str):
        super().__init__(f"{path}: {problem}; {fix}")
        self.path, self.problem, self.fix = path, problem, fix


_RESTORE = ("stop the service, copy your latest backup over it (remove any -wal/-shm files next to it) and "
            "start it again (README: Backup); or move it away to start from scratch, which announces nothing old")


def _ts(moment: datetime) -> float:
    if moment.tzinfo is None:
        raise ValueError("naive datetime given to the state store")
    return moment.timestamp()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


@dataclass
class Store:
    """All reads and writes of the state file. One instance per process; not shared across threads."""

    db: sqlite_utils.Database
    path: Path
    health: StoreHealth = field(default_factory=StoreHealth)  # shared with the sender and the poll jobs

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open (creating and migrating as needed) the state file; StateFileError if it cannot be used."""
        path = Path(path)
        try:
            return cls._open(path)
        except sqlite3.DatabaseError as exc:
            # Restarting cannot repair a damaged file: say once what it is and what to do (issue 11, item 3).
            text = " ".join(str(exc).split())  # one line: quick_check reports span several
            if "not a database" in text or "malformed" in text:
                raise StateFileError(path, f"damaged or not a planfix-bot state file ({text})", _RESTORE) from None
            raise StateFileError(path, f"cannot be used ({text})", "check state.path and the file's owner and "
                                 "permissions") from None

    @classmethod
    def _open(cls, path: Path) -> Store:
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=10)
        conn.row_factory = sqlite3.Row  # rows are read by column name
        db = sqlite_utils.Database(conn)
        try:
            if not db.table_names():  # a new file: free pages go back to the disk (set before anything is written)
                db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            if str(path) != ":memory:":
                db.enable_wal()
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA synchronous = NORMAL")
            # Damage deep inside the file would otherwise surface only at some later poll's commit, over and over.
            problem = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed: {problem}")
            migrations.apply(db)
        except BaseException:
            conn.close()
            raise
        return cls(db=db, path=path)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """One transaction; a write the host refuses (read-only, disk full, I/O error) is recorded in `health`
        before it is raised, so the sender and the poll jobs stop until a retried write succeeds."""
        try:
            with self.db.atomic():
                yield
        except sqlite3.OperationalError as exc:
            if is_write_failure(exc):
                self.health.failed(exc, datetime.now(UTC))
            raise

    def probe_write(self, now: datetime) -> None:
        """A small real write (the sender's test that the state file takes writes again)."""
        self.set_meta("store_probe", _iso(now))

    # -- meta ----------------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._atomic():
            self._set_meta(key, value)

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )

    # -- snapshots and actions -------------------------------------------------------------------------------

    def snapshots(self, task_ids: Iterable[int]) -> dict[int, StoredSnapshot]:
        ids = list(dict.fromkeys(task_ids))
        found: dict[int, StoredSnapshot] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(
                f"SELECT task_id, revision, data FROM tasks WHERE task_id IN ({marks})", chunk
            ).fetchall():
                found[row["task_id"]] = _snapshot(row)
        return found

    def snapshot_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM tasks").fetchone()[0]

    def overdue_candidates(self, now: datetime) -> list[StoredSnapshot]:
        """Active tasks whose deadline has passed and whose overdue notice for that deadline is not yet made."""
        rows = self.db.execute(
            "SELECT task_id, revision, data FROM tasks WHERE is_active = 1 AND deadline_due IS NOT NULL "
            "AND deadline_due <= ? AND (overdue_for IS NULL OR overdue_for <> deadline)",
            [_ts(now)],
        ).fetchall()
        return [_snapshot(r) for r in rows]

    def unseen_action_ids(self, action_ids: Iterable[int]) -> set[int]:
        ids = list(dict.fromkeys(action_ids))
        seen: set[int] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            seen.update(
                r["action_id"] for r in self.db.execute(f"SELECT action_id FROM seen_actions WHERE action_id IN ({marks})", chunk)
            )
        return set(ids) - seen

    def commit_poll(self, commit: PollCommit) -> int:
        """Write a poll's results in one transaction; returns how many new outbox rows were queued.

        Snapshots, seen actions, events, outbox rows and the cursor go together or not at all, so a crash at
        any point either leaves the change to be detected again or has it fully queued — never half."""
        now = commit.now
        queued = 0
        with self._atomic():
            for snap in commit.snapshots:
                title, people = task_columns(snap.data)
                self.db.execute(
                    "INSERT INTO tasks (task_id, general, revision, data, deadline, deadline_due, is_active, "
                    "overdue_for, updated_at, title) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(task_id) DO UPDATE SET general = excluded.general, revision = excluded.revision, "
                    "data = excluded.data, deadline = excluded.deadline, deadline_due = excluded.deadline_due, "
                    "is_active = excluded.is_active, overdue_for = excluded.overdue_for, "
                    "updated_at = excluded.updated_at, title = excluded.title",
                    [
                        snap.task_id,
                        snap.data.get("general"),
                        snap.revision,
                        json.dumps(snap.data, ensure_ascii=False, sort_keys=True),
                        snap.data.get("deadline"),
                        # A status without `hasDeadline` keeps the date for display but never falls due: leave it
                        # out of the column every overdue, reminder and "due today" query reads.
                        snap.data.get("deadline_due") if snap.data.get("has_deadline", True) else None,
                        1 if snap.data.get("is_active", True) else 0,
                        snap.data.get("overdue_for"),
                        _iso(now),
                        title,
                    ],
                )
                self.db.execute("DELETE FROM task_people WHERE task_id = ?", [snap.task_id])
                self.db.conn.executemany(
                    "INSERT OR IGNORE INTO task_people (task_id, role, planfix_id) VALUES (?, ?, ?)",
                    [(snap.task_id, role, person) for role, ids in people.items() for person in ids],
                )
            for task_id in commit.forget_tasks:
                self.db.execute("DELETE FROM tasks WHERE task_id = ?", [task_id])
                self.db.execute("DELETE FROM task_people WHERE task_id = ?", [task_id])
            if commit.seen_actions:
                self.db.conn.executemany(
                    "INSERT OR IGNORE INTO seen_actions (action_id, task_id, at) VALUES (?, ?, ?)",
                    [(a, t, _ts(at)) for a, t, at in commit.seen_actions],
                )
            for event in commit.events:
                added = self.db.execute(
                    "INSERT OR IGNORE INTO events (key, kind, task_id, payload, created_at) VALUES (?, ?, ?, ?, ?)",
                    [event.key, event.kind, event.task_id, json.dumps(event.payload, ensure_ascii=False), _iso(now)],
                ).rowcount
                self._count("events", event.kind, added)
            for delivery in commit.deliveries:
                cursor = self.db.execute(
                    "INSERT OR IGNORE INTO outbox (key, event_key, chat_id, status, attempts, not_before, "
                    "created_at) VALUES (?, ?, ?, ?, 0, ?, ?)",
                    [
                        f"{delivery.event_key}@{delivery.chat_id}",
                        delivery.event_key,
                        delivery.chat_id,
                        PENDING,
                        _ts(delivery.not_before or now),
                        _iso(now),
                    ],
                )
                queued += cursor.rowcount
            for key, value in commit.meta.items():
                self._set_meta(key, value)
            self._write_set_aside(commit)
        return queued

    def _write_set_aside(self, commit: PollCommit) -> None:
        cleared = [*commit.readable, *commit.forget_tasks]
        for start in range(0, len(cleared), 500):
            chunk = cleared[start : start + 500]
            self.db.execute(f"DELETE FROM set_aside WHERE task_id IN ({','.join('?' * len(chunk))})", chunk)
        if commit.set_aside:
            self.db.conn.executemany(
                "INSERT INTO set_aside (task_id, code, since, checked_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(task_id) DO UPDATE SET code = excluded.code, checked_at = excluded.checked_at",
                [(task_id, code, _iso(commit.now), _iso(commit.now)) for task_id, code in commit.set_aside.items()],
            )

    def set_aside(self, limit: int = -1) -> dict[int, str]:
        """Tasks set aside (task id → the code Planfix answered for it), lowest id first; at most `limit` of them."""
        rows = self.db.execute("SELECT task_id, code FROM set_aside ORDER BY task_id LIMIT ?", [limit])
        return {r["task_id"]: r["code"] for r in rows}

    def set_aside_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM set_aside").fetchone()[0]

    def prune_seen_actions(self, older_than: datetime) -> int:
        with self._atomic():
            return self.db.execute("DELETE FROM seen_actions WHERE at < ?", [_ts(older_than)]).rowcount

    # -- outbox ----------------------------------------------------------------------------------------------

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
            self._count("failed", failure_reason(reason), failed)

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

    # -- health and metrics (read-only) ------------------------------------------------------------------------
    # Request paths (/metrics, /status, the systemd status line) read only these: each is bounded by what is
    # waiting now or by a small counters table, never by how much history the file holds (issue 11).

    def pending_count(self) -> int:
        """Messages waiting to be sent (an index range over pending rows only)."""
        return self.db.execute("SELECT count(*) FROM outbox WHERE status = ?", [PENDING]).fetchone()[0]

    def oldest_pending_created(self) -> datetime | None:
        """When the oldest message still waiting to be sent was queued."""
        row = self.db.execute("SELECT min(created_at) FROM outbox WHERE status = ?", [PENDING]).fetchone()
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    def events_by_kind(self) -> dict[str, int]:
        """Every event ever detected, by kind (kept in `counters`: pruning the events does not lower it)."""
        return self._counters("events")

    def failures_by_reason(self) -> dict[str, int]:
        """Every outbox row ever given up, by reason label (state.reasons.failure_reason)."""
        return self._counters("failed")

    def _counters(self, name: str) -> dict[str, int]:
        return {r["label"]: r["value"] for r in self.db.execute("SELECT label, value FROM counters WHERE name = ?", [name])}

    def _count(self, name: str, label: str, n: int) -> None:
        if n:
            self.db.execute(
                "INSERT INTO counters (name, label, value) VALUES (?, ?, ?) "
                "ON CONFLICT(name, label) DO UPDATE SET value = value + excluded.value",
                [name, label, n],
            )

    # -- pruning (issue 11: the state file stays small) --------------------------------------------------------

    def prune_batch(self, older_than: datetime, limit: int = 500) -> int:
        """One small transaction of pruning: settled outbox rows (delivered, given up, superseded) settled before
        `older_than`, then (once those are gone) events older than that which no outbox row points at any more.
        Returns the rows deleted; 0 means nothing is left to prune. Pending rows and their events are kept."""
        cutoff = _iso(older_than)
        with self._atomic():
            # `status <> 'pending'` is spelled out so the partial index outbox_settled serves the query.
            rows = self.db.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE status <> 'pending' "
                "AND delivered_at < ? ORDER BY delivered_at LIMIT ?)",
                [cutoff, limit],
            ).rowcount
            if rows >= limit:
                return rows  # events go once their rows are gone: scanning past still-referenced ones is O(n²)
            events = self.db.execute(
                "DELETE FROM events WHERE key IN (SELECT key FROM events e WHERE created_at < ? AND NOT EXISTS "
                "(SELECT 1 FROM outbox o WHERE o.event_key = e.key) ORDER BY created_at LIMIT ?)",
                [cutoff, limit],
            ).rowcount
        return rows + events

    def ensure_incremental_vacuum(self) -> bool:
        """A file made before issue 11 needs one VACUUM to switch to auto_vacuum=INCREMENTAL; done after its first
        pruning, when it is small. False (logged) if that failed — a full disk: freed pages are then reused, not
        returned, and the next pruning tries again."""
        if self.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            return True
        try:
            self.db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            self.db.execute("VACUUM")
        except sqlite3.OperationalError as exc:
            log.warning("state.vacuum_failed", error=str(exc), effect="space freed by pruning is reused, not returned")
            return False
        log.info("state.auto_vacuum_enabled", pages=self.file_pages()[1])
        return True

    def reclaim_space(self, pages: int = 1000) -> int:
        """Give up to `pages` free pages back to the file system (incremental vacuum); returns the free pages left."""
        self.db.execute(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()
        return self.db.execute("PRAGMA freelist_count").fetchone()[0]

    def file_pages(self) -> tuple[int, int, int]:
        """(page size, pages in the file, free pages): how big the state file is and how much of it is reusable."""
        return (self.db.execute("PRAGMA page_size").fetchone()[0], self.db.execute("PRAGMA page_count").fetchone()[0],
                self.db.execute("PRAGMA freelist_count").fetchone()[0])

    # -- chats -----------------------------------------------------------------------------------------------

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
                self._set_meta(f"{_RESTRICTED_KEY}{chat_id}", _iso(since))

    def chat_migrations(self) -> dict[int, int]:
        rows = self.db.execute("SELECT old_chat_id, new_chat_id FROM chat_migrations")
        return {r["old_chat_id"]: r["new_chat_id"] for r in rows}

    # -- detection (issue 4: reminders, the reconciliation sweep) ----------------------------------------------

    def deadline_window(self, after: datetime, until: datetime) -> list[StoredSnapshot]:
        """Active tasks whose deadline falls due in (after, until]: the candidates for reminders."""
        rows = self.db.execute(
            "SELECT task_id, revision, data FROM tasks WHERE is_active = 1 AND deadline_due > ? "
            "AND deadline_due <= ?",
            [_ts(after), _ts(until)],
        ).fetchall()
        return [_snapshot(r) for r in rows]

    def commit_sweep(self, commit: PollCommit, seen: Iterable[int], *, new_pass: bool = False) -> int:
        """One sweep step in one transaction: its poll commit plus the task ids it saw in Planfix's active list
        (`new_pass` forgets the previous pass's ids first). Returns how many outbox rows were queued."""
        with self._atomic():
            if new_pass:
                self.db.execute("DELETE FROM sweep_seen")
            queued = self.commit_poll(commit)
            self.db.conn.executemany(
                "INSERT OR IGNORE INTO sweep_seen (task_id) VALUES (?)", [(task_id,) for task_id in seen]
            )
        return queued

    def unswept_active(self, limit: int = 100) -> list[int]:
        """Tasks stored as active that the current sweep pass has not seen in the active list (closed, deleted
        or hidden since), lowest id first."""
        return [
            r[0]
            for r in self.db.execute(
                "SELECT task_id FROM tasks t WHERE is_active = 1 AND NOT EXISTS "
                "(SELECT 1 FROM sweep_seen s WHERE s.task_id = t.task_id) ORDER BY task_id LIMIT ?",
                [limit],
            )
        ]

    # -- end of detection block --------------------------------------------------------------------------------


    # -- delivery (issue 5: per-chat sending, coalescing, problems for admins) ----------------------------------

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
            self._count("failed", failure_reason(reason), failed)
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


def _snapshot(r: sqlite3.Row) -> StoredSnapshot:
    return StoredSnapshot(task_id=r["task_id"], revision=r["revision"], data=json.loads(r["data"]))


__all__ = [
    "DELIVERED",
    "FAILED",
    "PENDING",
    "SUPERSEDED",
    "ChatState",
    "DeliveryRow",
    "EventRow",
    "OutboxItem",
    "PollCommit",
    "Store",
    "StoredSnapshot",
]
