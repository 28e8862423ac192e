"""Whether the state file takes writes: one object the sender and the poll jobs share, so both stop while it does not."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

# SQLite's words for a write the host refused (read-only file or mount, full disk, failing device).
_WRITE_FAILURES = ("disk i/o error", "database or disk is full", "readonly database", "read-only",
                   "unable to open database file")


def is_write_failure(exc: BaseException) -> bool:
    """A failed write caused by the host, not by our SQL: waiting (and trying again) is the cure."""
    return isinstance(exc, sqlite3.OperationalError) and any(m in str(exc).lower() for m in _WRITE_FAILURES)


@dataclass
class StoreHealth:
    """Set by the store when a write fails, cleared by the sender once a retried write succeeds; read by the poll
    jobs (they wait) and the sender (it stops sending: a message it could not record would be sent again)."""

    error: str | None = None
    since: datetime | None = None
    episodes: int = 0  # how many times the state file stopped taking writes since start

    @property
    def failing(self) -> bool:
        return self.error is not None

    def failed(self, exc: BaseException, now: datetime) -> bool:
        """Record a failed write; True when this starts a new episode."""
        new = self.error is None
        self.error = f"{type(exc).__name__}: {exc}"
        if new:
            self.since = now
            self.episodes += 1
        return new

    def recovered(self) -> bool:
        """The state file takes writes again; True when it had not."""
        was = self.error is not None
        self.error, self.since = None, None
        return was
