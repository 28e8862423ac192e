"""The SQLite state file: one connection owning its repositories (tasks, outbox, chats, meta, counters, upkeep),
and the transactions that span them (a poll's or a sweep's commit)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sqlite_utils
import structlog

from state.base import DELIVERED, FAILED, PENDING, SUPERSEDED, _iso, _ts, atomic, count, put_meta
from state.chats import ChatRepository
from state.health import StoreHealth
from state.meta import CounterRepository, MetaRepository
from state.migrations import migrations
from state.outbox import OutboxRepository
from state.records import ChatState, DeliveryRow, EventRow, OutboxItem, PollCommit, StoredSnapshot, task_columns
from state.tasks import TaskRepository
from state.upkeep import UpkeepRepository

log = structlog.get_logger(__name__)


class StateFileError(Exception):
    """The state file cannot be used at all (not a database, damaged, unreadable): a person must act."""

    def __init__(self, path: Path, problem: str, fix: str):
        super().__init__(f"{path}: {problem}; {fix}")
        self.path, self.problem, self.fix = path, problem, fix


_RESTORE = ("stop the service, copy your latest backup over it (remove any -wal/-shm files next to it) and "
            "start it again (README: Backup); or move it away to start from scratch, which announces nothing old")

_REPOSITORIES = {"meta": MetaRepository, "tasks": TaskRepository, "outbox": OutboxRepository,
                 "counters": CounterRepository, "chats": ChatRepository, "upkeep": UpkeepRepository}


@dataclass
class Store:
    """Opens the state file and owns its repositories, all on one connection and one StoreHealth. One instance
    per process; not shared across threads."""

    db: sqlite_utils.Database
    path: Path
    health: StoreHealth = field(default_factory=StoreHealth)  # shared with the sender and the poll jobs
    meta: MetaRepository = field(init=False)
    tasks: TaskRepository = field(init=False)
    outbox: OutboxRepository = field(init=False)
    counters: CounterRepository = field(init=False)
    chats: ChatRepository = field(init=False)
    upkeep: UpkeepRepository = field(init=False)

    def __post_init__(self) -> None:
        for name, cls in _REPOSITORIES.items():
            setattr(self, name, cls(self.db, self.health))

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open (creating and migrating as needed) the state file; StateFileError if it cannot be used."""
        path = Path(path)
        try:
            return cls._open(path)
        except sqlite3.DatabaseError as exc:
            # Restarting cannot repair a damaged file: say once what it is and what to do.
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

    def _atomic(self) -> contextlib.AbstractContextManager[None]:
        return atomic(self.db, self.health)

    def probe_write(self, now: datetime) -> None:
        """A small real write (the sender's test that the state file takes writes again)."""
        self.meta.set_meta("store_probe", _iso(now))

    # -- transactions that span the repositories ------------------------------------------------------------------

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
                count(self.db, "events", event.kind, added)
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
                put_meta(self.db, key, value)
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
    "StateFileError",
    "Store",
    "StoredSnapshot",
    "_iso",
    "_ts",
]
