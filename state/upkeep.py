"""Keeping the state file small: pruning settled history in small batches and giving free pages back."""

from __future__ import annotations

import sqlite3
from datetime import datetime

import structlog

from state.base import Repository, _iso

log = structlog.get_logger(__name__)


class UpkeepRepository(Repository):
    """Pruning and vacuuming."""

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
        """A file made before pruning existed needs one VACUUM to switch to auto_vacuum=INCREMENTAL; done after its first
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
