"""Small keyed values (the feed cursor, the API zone, progress markers) and the running totals behind /metrics."""

from __future__ import annotations

from state.base import Repository, put_meta


class MetaRepository(Repository):
    """The `meta` table: one text value per key."""

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._atomic():
            put_meta(self.db, key, value)


class CounterRepository(Repository):
    """Totals kept in `counters`, so they survive restarts and pruning (/metrics)."""

    def events_by_kind(self) -> dict[str, int]:
        """Every event ever detected, by kind (kept in `counters`: pruning the events does not lower it)."""
        return self._counters("events")

    def failures_by_reason(self) -> dict[str, int]:
        """Every outbox row ever given up, by reason label (state.reasons.failure_reason)."""
        return self._counters("failed")

    def _counters(self, name: str) -> dict[str, int]:
        return {r["label"]: r["value"] for r in self.db.execute("SELECT label, value FROM counters WHERE name = ?", [name])}
