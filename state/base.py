"""What the state file's repositories share: one connection, one transaction helper, how moments are stored."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlite_utils

from state.health import StoreHealth, is_write_failure

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
SUPERSEDED = "superseded"  # a migrated chat's row whose twin was already queued for the new chat id


def _ts(moment: datetime) -> float:
    if moment.tzinfo is None:
        raise ValueError("naive datetime given to the state store")
    return moment.timestamp()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


@contextlib.contextmanager
def atomic(db: sqlite_utils.Database, health: StoreHealth) -> Iterator[None]:
    """One transaction; a write the host refuses (read-only, disk full, I/O error) is recorded in `health`
    before it is raised, so the sender and the poll jobs stop until a retried write succeeds."""
    try:
        with db.atomic():
            yield
    except sqlite3.OperationalError as exc:
        if is_write_failure(exc):
            health.failed(exc, datetime.now(UTC))
        raise


def put_meta(db: sqlite_utils.Database, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )


def count(db: sqlite_utils.Database, name: str, label: str, n: int) -> None:
    """Add `n` to a running total kept in `counters` (survives restarts and pruning)."""
    if n:
        db.execute(
            "INSERT INTO counters (name, label, value) VALUES (?, ?, ?) "
            "ON CONFLICT(name, label) DO UPDATE SET value = value + excluded.value",
            [name, label, n],
        )


@dataclass
class Repository:
    """One part of the state file's reads and writes, on the connection (and the health) its Store owns."""

    db: sqlite_utils.Database
    health: StoreHealth

    def _atomic(self) -> contextlib.AbstractContextManager[None]:
        return atomic(self.db, self.health)
