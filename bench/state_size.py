"""State-file benchmark: a year of history at 1,000 changes a day (three recipients each), pruned to keep_days.

    python bench/state_size.py                  # about a minute; prints the table
    python bench/state_size.py --per-day 200    # quicker

Builds the history through the real store (commit_poll, then the rows marked delivered a minute later), then
measures the file, a /metrics scrape (bot.metrics over the store's readings, as the daemon serves it), the
daily pruning (bot.housekeeping.prune_history: total time and the longest single batch, which is how long the
event loop is held at most), and the file and the scrape again. The file starts without auto_vacuum, as one made
before pruning existed, so the one-time switch is included.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

END = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
CHATS = (501, 502, -100777)


def build(store, days: int, per_day: int) -> None:
    from bot.events import STATUS, Event, StatusMove
    from state.records import DeliveryRow, EventRow, PollCommit

    for day in range(days, 0, -1):
        at = END - timedelta(days=day)
        events = []
        for i in range(per_day):
            task = day * 10_000 + i
            event = Event(kind=STATUS, key=f"status:{day}:{i}", task_id=task, task_general=100_000 + task,
                          task_title=f"Подготовить отчёт по проекту №{task} для отдела продаж", occurred_at=at,
                          payload=StatusMove(None, None, "В работе", "Завершённая"), actor_name="Анна Смирнова",
                          project_title="Сайт: перезапуск", participants=(9230, 9231, 9232))
            events.append(EventRow(event.key, event.kind, event.task_id, event.to_json()))
        store.commit_poll(PollCommit(now=at, events=events,
                                     deliveries=[DeliveryRow(e.key, chat) for e in events for chat in CHATS]))
        store.db.execute("UPDATE outbox SET status = 'delivered', message_id = 1, delivered_at = ? "
                         "WHERE status = 'pending'", [(at + timedelta(minutes=1)).isoformat()])


def file_size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def scrape_ms(store) -> float:
    from datetime import UTC, datetime

    from bot.health import read_status
    from bot.metrics import Metrics, Readings

    metrics = Metrics(Readings(status=lambda: read_status(store, now=datetime.now(UTC)),
                               events_by_kind=store.counters.events_by_kind, failures_by_reason=store.counters.failures_by_reason))
    times = []
    for _ in range(50):
        started = time.perf_counter()
        metrics.exposition()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=1000)
    parser.add_argument("--keep-days", type=int, default=30)
    args = parser.parse_args(argv)

    from bot import logs
    from bot.housekeeping import prune_history
    from state.store import Store

    logs.configure(level="warning", fmt="console", stream=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.sqlite3"
        store = Store.open(path)
        store.db.execute("PRAGMA auto_vacuum = NONE")
        store.db.execute("VACUUM")
        started = time.perf_counter()
        build(store, args.days, args.per_day)
        built = time.perf_counter() - started
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size_before, ms_before = file_size(path), scrape_ms(store)

        batches: list[float] = []
        original = store.upkeep.prune_batch

        def timed_batch(*a, **kw):
            t0 = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                batches.append((time.perf_counter() - t0) * 1000)

        store.upkeep.prune_batch = timed_batch  # type: ignore[method-assign]
        result = asyncio.run(prune_history(store, keep_days=args.keep_days, now=END))
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size_after, ms_after = file_size(path), scrape_ms(store)
        store.close()

    changes = args.days * args.per_day
    rows = [
        ("history", f"{args.days} days × {args.per_day} changes × {len(CHATS)} recipients "
                    f"({changes:,} events, {changes * len(CHATS):,} outbox rows; built in {built:.0f} s)"),
        ("state file, a year unpruned", f"{size_before / 1e6:.1f} MB ({size_before / changes:.0f} bytes per change)"),
        ("/metrics scrape, unpruned", f"{ms_before:.3f} ms (median of 50; target ≤ 5 ms)"),
        ("pruning to keep_days", f"{args.keep_days} days: {result.rows:,} rows in {result.batches} batches, "
                                 f"{result.seconds:.1f} s (incl. the one-time VACUUM)"),
        ("longest batch (event loop held)", f"{max(batches):.1f} ms (median {statistics.median(batches):.1f} ms)"),
        ("state file, pruned", f"{size_after / 1e6:.1f} MB"),
        ("/metrics scrape, pruned", f"{ms_after:.3f} ms"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")
    return 0 if ms_before <= 5 and ms_after <= 5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
