"""Issue 11: the state file stays small — a year of history pruned to `state.keep_days`, the space given back, and
/metrics answering from counters and bounded queries whatever the history holds."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

from bot.events import STATUS, Event, StatusMove
from bot.health import read_status
from bot.housekeeping import prune_cutoff, prune_history
from bot.metrics import Metrics, Readings
from state.records import DeliveryRow, EventRow, PollCommit
from state.store import DELIVERED, FAILED, PENDING, Store

END = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
PER_DAY = 100  # changes a day (three recipients each): 36,500 events and 109,500 outbox rows in a year
CHATS = (501, 502, -100777)
KEEP_DAYS = 30


def payload(task: int, at: datetime) -> dict:
    return Event(kind=STATUS, key=f"status:{task}", task_id=task, task_general=10_000 + task,
                 task_title=f"Подготовить отчёт по проекту №{task} для отдела продаж", occurred_at=at,
                 payload=StatusMove(None, None, "В работе", "Завершённая"), actor_name="Анна Смирнова",
                 project_title="Сайт: перезапуск", participants=(9230, 9231, 9232)).to_json()


def simulate_year(store: Store, *, days: int = 365, per_day: int = PER_DAY) -> None:
    """`days` of history ending at END: every change queued for three chats and delivered a minute later; one
    message a day given up."""
    for day in range(days, 0, -1):
        at = END - timedelta(days=day)
        keys = [f"status:{day}:{i}" for i in range(per_day)]
        store.commit_poll(PollCommit(
            now=at,
            events=[EventRow(key, STATUS, day * 1000 + i, payload(day * 1000 + i, at)) for i, key in enumerate(keys)],
            deliveries=[DeliveryRow(key, chat) for key in keys for chat in CHATS],
        ))
        first = store.db.execute("SELECT min(id) FROM outbox WHERE status = ?", [PENDING]).fetchone()[0]
        store.outbox.mark_failed(first, "telegram refused: Bad Request: message thread not found", at)
        store.db.execute("UPDATE outbox SET status = ?, message_id = 1, delivered_at = ? WHERE status = ?",
                         [DELIVERED, (at + timedelta(minutes=1)).isoformat(), PENDING])


def readings(store: Store) -> Readings:
    """What the daemon's /metrics reads from the state file (bot/app.py Daemon.readings)."""
    return Readings(status=lambda: read_status(store, now=END), events_by_kind=store.counters.events_by_kind,
                    failures_by_reason=store.counters.failures_by_reason)


def scrape_ms(store: Store, runs: int = 30) -> float:
    metrics = Metrics(readings(store))
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        metrics.exposition()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def test_a_year_of_history_is_pruned_to_keep_days_and_metrics_stay_fast(tmp_path):
    path = tmp_path / "state.sqlite3"
    store = Store.open(path)
    store.db.execute("PRAGMA auto_vacuum = NONE")  # as a file made before issue 11: no incremental vacuum yet
    store.db.execute("VACUUM")
    simulate_year(store)
    # A message held for a muted chat since long ago, and one queued just now: pruning never touches waiting rows.
    held = EventRow("status:held", STATUS, 1, payload(1, END - timedelta(days=200)))
    store.commit_poll(PollCommit(now=END - timedelta(days=200), events=[held],
                                 deliveries=[DeliveryRow(held.key, CHATS[0])]))
    fresh = EventRow("status:fresh", STATUS, 2, payload(2, END))
    store.commit_poll(PollCommit(now=END, events=[fresh], deliveries=[DeliveryRow(fresh.key, CHATS[1])]))

    events_before, failed_before = store.counters.events_by_kind(), store.counters.failures_by_reason()
    assert events_before == {STATUS: 365 * PER_DAY + 2} and failed_before == {"other": 365}
    size_before = path.stat().st_size + (path.with_name(path.name + "-wal").stat().st_size)
    year_ms = scrape_ms(store)
    assert year_ms <= 5, f"/metrics took {year_ms:.2f} ms with a year of history"

    import asyncio

    result = asyncio.run(prune_history(store, keep_days=KEEP_DAYS, now=END, batch=2000))
    cutoff = prune_cutoff(END, KEEP_DAYS).isoformat()
    left = store.db.execute("SELECT count(*), min(delivered_at) FROM outbox WHERE status <> ?", [PENDING]).fetchone()
    assert left[0] == KEEP_DAYS * PER_DAY * len(CHATS) and left[1] >= cutoff
    assert store.db.execute("SELECT count(*) FROM events").fetchone()[0] == KEEP_DAYS * PER_DAY + 2
    assert {r["event_key"] for r in store.outbox.outbox_rows() if r["status"] == PENDING} == {held.key, fresh.key}
    assert store.db.execute("SELECT count(*) FROM outbox WHERE status = ?", [FAILED]).fetchone()[0] == KEEP_DAYS
    # Totals survive pruning (Prometheus counters must not go down), and a second run finds nothing to do.
    assert store.counters.events_by_kind() == events_before and store.counters.failures_by_reason() == failed_before
    assert asyncio.run(prune_history(store, keep_days=KEEP_DAYS, now=END)).rows == 0

    # The space went back to the disk: the old file was switched to incremental vacuum once, and shrank.
    assert store.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size_after = path.stat().st_size
    assert size_after < size_before * KEEP_DAYS / 365 * 1.6, (size_before, size_after)
    pruned_ms = scrape_ms(store)
    assert pruned_ms <= 5
    print(f"\nyear: {size_before / 1e6:.1f} MB, /metrics {year_ms:.2f} ms; pruned to {KEEP_DAYS} days in "
          f"{result.seconds:.2f} s ({result.batches} batches): {size_after / 1e6:.1f} MB, /metrics {pruned_ms:.2f} ms")
    store.close()


def test_request_paths_read_no_table_that_grows_with_history(tmp_path):
    """/metrics, /status and the systemd status line use index ranges over waiting rows or the counters table."""
    store = Store.open(tmp_path / "state.sqlite3")
    queries = {
        "pending_count": ("SELECT count(*) FROM outbox WHERE status = ?", [PENDING]),
        "oldest_pending_created": ("SELECT min(created_at) FROM outbox WHERE status = ?", [PENDING]),
        "counters": ("SELECT label, value FROM counters WHERE name = ?", ["events"]),
    }
    for name, (sql, params) in queries.items():
        plan = " ".join(str(r[-1]) for r in store.db.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall())
        assert "USING" in plan and not plan.startswith("SCAN"), (name, plan)
    store.close()


def test_a_new_state_file_gives_freed_pages_back_to_the_disk(tmp_path):
    store = Store.open(tmp_path / "state.sqlite3")
    assert store.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2, "set before the first table"
    simulate_year(store, days=40, per_day=50)
    pages_before = store.upkeep.file_pages()[1]
    import asyncio

    result = asyncio.run(prune_history(store, keep_days=10, now=END))
    assert result.rows > 0 and result.freed_pages > 0
    assert store.upkeep.file_pages()[2] == 0 and store.upkeep.file_pages()[1] < pages_before
    store.close()
