"""A state file that refuses writes: sending stops, accepted sends wait in memory, writes are retried with back-off."""

from __future__ import annotations

import asyncio
import contextvars
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from bot.notify import admin_notices as notices
from bot.notify.admin_notices import AdminNotices
from state.store import Store

log = structlog.get_logger("bot.notify.sender")

STORE_RETRY_FIRST = 1.0  # seconds before the first retried write once the state file refused one; doubles
STORE_RETRY_MAX = 60.0


@dataclass
class StoreGuard:
    """Read-only, full or failing (I/O error): a send Telegram accepted but the store could not record is kept in
    memory and written first when a retried write succeeds, and nothing else is sent until then — so a refused
    write never turns into the same message sent again. The admins are told once per episode; the poll jobs wait
    on the same `StoreHealth`, which this clears on recovery."""

    store: Store
    clock: Callable[[], datetime]
    notices: AdminNotices
    on_recovered: Callable[[], None]  # wakes the sender
    retry_first: float = STORE_RETRY_FIRST
    retry_max: float = STORE_RETRY_MAX
    _unrecorded: list[Callable[[], None]] = field(default_factory=list)
    _recovery: asyncio.Task[None] | None = None
    _told: bool = False
    _stopping: bool = False

    def blocked(self) -> bool:
        """True while the state file refuses writes or a send is still unrecorded: then nothing is sent."""
        if self.store.health.failing or self._unrecorded:
            self._start_recovery()
            return True
        return False

    def failed(self, exc: BaseException, *, unrecorded: Callable[[], None] | None = None) -> None:
        """A write was refused; `unrecorded` is the record of a send Telegram accepted, to write first."""
        if unrecorded is not None:
            self._unrecorded.append(unrecorded)
        self.store.health.failed(exc, self.clock())
        self._start_recovery()

    def _start_recovery(self) -> None:
        if self._recovery is not None and not self._recovery.done():
            return
        if not self._told:
            self._told = True
            error = self.store.health.error or "a write failed"
            log.error("store.write_failed", error=error, path=str(self.store.path),
                      effect="sending and Planfix polling paused; retrying the write with back-off")
            self.notices.tell(notices.store_refused(error))
        # In a fresh context: the recovery belongs to no chat's lane.
        self._recovery = asyncio.create_task(self._recover(), name="store-recovery", context=contextvars.Context())

    async def _recover(self) -> None:
        """Retry the refused writes with back-off (first the sends Telegram accepted, then a probe); on success
        clear the shared health, so the poll jobs and the lanes resume by themselves."""
        delay = self.retry_first
        while not self._stopping:
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            try:
                self._write_unrecorded()
                self.store.probe_write(self.clock())
            except sqlite3.Error as exc:
                self.store.health.failed(exc, self.clock())
                delay = min(self.retry_max, delay * 2)
                log.warning("store.still_failing", error=str(exc), retry_in_s=round(delay, 1))
                continue
            since = self.store.health.since
            self.store.health.recovered()
            self._told = False
            log.info("store.recovered", failing_for_s=round((self.clock() - since).total_seconds(), 1) if since
                     else None)
            self.on_recovered()
            return

    def _write_unrecorded(self) -> None:
        while self._unrecorded:
            self._unrecorded[0]()
            self._unrecorded.pop(0)

    def stop(self) -> None:
        """The sender is stopping: no more retries after the one under way."""
        self._stopping = True

    def close(self) -> None:
        """At exit: stop retrying and make a last attempt to record the sends still in memory."""
        self._stopping = True
        if self._recovery is not None:
            self._recovery.cancel()
        try:
            self._write_unrecorded()
        except sqlite3.Error as exc:
            # As after a crash: each of these chats may get its last message once more after the restart.
            log.error("store.unrecorded_at_exit", sends=len(self._unrecorded), error=str(exc))
