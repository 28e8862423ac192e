"""Daily pruning of the state file: settled messages and their events older than `state.keep_days`, in small batches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from state.store import Store

log = structlog.get_logger(__name__)

PRUNE_EVERY = 24 * 3600.0  # seconds between prunings (the first runs at start)
BATCH_ROWS = 500  # rows per transaction: a few milliseconds of the event loop each
RECLAIM_PAGES = 1000  # pages given back to the file system per step (4 MB with 4 KiB pages)


def prune_cutoff(now: datetime, keep_days: int) -> datetime:
    """Rows settled before this moment are pruned."""
    return now - timedelta(days=keep_days)


@dataclass(frozen=True)
class PruneResult:
    rows: int  # outbox rows and events deleted
    batches: int
    freed_pages: int  # pages returned to the file system
    seconds: float


async def prune_history(store: Store, *, keep_days: int, now: datetime, batch: int = BATCH_ROWS,
                        pause: Callable[[], float] = lambda: 0.0) -> PruneResult:
    """Prune in batches, yielding the event loop between them (commands and sends go on), then give the freed
    pages back in steps. A write failure stops it (the state file's health pauses the rest); tomorrow resumes."""
    started = time.perf_counter()
    cutoff = prune_cutoff(now, keep_days)
    rows = batches = 0
    while True:
        deleted = store.upkeep.prune_batch(cutoff, batch)
        if not deleted:
            break
        rows, batches = rows + deleted, batches + 1
        await asyncio.sleep(pause())
    _, before, free = store.upkeep.file_pages()
    if not store.upkeep.ensure_incremental_vacuum():
        free = 0
    while free:
        left = store.upkeep.reclaim_space(RECLAIM_PAGES)
        if left >= free:
            break  # auto_vacuum is off (switching it failed): the free pages are reused instead
        free = left
        await asyncio.sleep(0)
    _, after, _ = store.upkeep.file_pages()
    result = PruneResult(rows=rows, batches=batches, freed_pages=before - after,
                         seconds=round(time.perf_counter() - started, 3))
    if rows or result.freed_pages:
        log.info("state.pruned", keep_days=keep_days, rows=rows, batches=batches, freed_pages=result.freed_pages,
                 seconds=result.seconds)
    return result
