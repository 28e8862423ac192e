"""Task snapshots as the watcher remembers them, the feed's seen actions, and tasks set aside."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import datetime

from state.base import Repository, _ts
from state.records import StoredSnapshot


class TaskRepository(Repository):
    """Reads of the `tasks`, `seen_actions`, `sweep_seen` and `set_aside` tables (Store.commit_poll writes them)."""

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

    def deadline_window(self, after: datetime, until: datetime) -> list[StoredSnapshot]:
        """Active tasks whose deadline falls due in (after, until]: the candidates for reminders."""
        rows = self.db.execute(
            "SELECT task_id, revision, data FROM tasks WHERE is_active = 1 AND deadline_due > ? "
            "AND deadline_due <= ?",
            [_ts(after), _ts(until)],
        ).fetchall()
        return [_snapshot(r) for r in rows]

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

    def prune_seen_actions(self, older_than: datetime) -> int:
        with self._atomic():
            return self.db.execute("DELETE FROM seen_actions WHERE at < ?", [_ts(older_than)]).rowcount

    def set_aside(self, limit: int = -1) -> dict[int, str]:
        """Tasks set aside (task id → the code Planfix answered for it), lowest id first; at most `limit` of them."""
        rows = self.db.execute("SELECT task_id, code FROM set_aside ORDER BY task_id LIMIT ?", [limit])
        return {r["task_id"]: r["code"] for r in rows}

    def set_aside_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM set_aside").fetchone()[0]


def _snapshot(r: sqlite3.Row) -> StoredSnapshot:
    return StoredSnapshot(task_id=r["task_id"], revision=r["revision"], data=json.loads(r["data"]))
