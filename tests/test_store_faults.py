"""Issue 11: a state file that cannot be written never turns into spam — the real sender and store against the fake
Telegram, with writes refused by SQLite itself (`PRAGMA query_only`, which stops root too) or by a full tmpfs."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.events import STATUS, Event, StatusMove
from bot.fakes.telegram import FakeTelegram
from bot.planfix.budget import Budget
from bot.watch.jobs import BackgroundJob, Health
from state.records import DeliveryRow, EventRow, PollCommit
from state.store import DELIVERED, Store
from tests.test_sender import ADMIN, ANNA, BORIS, GROUP, make_sender, queue

CHATS = (ANNA, BORIS, GROUP)
PER_CHAT = 3


_serial = iter(range(1, 1_000_000))


def event(task: int) -> Event:
    n = next(_serial)
    return Event(kind=STATUS, key=f"status:{task}:{n}", task_id=task, task_general=1000 + task,
                 task_title=f"Task {task}", occurred_at=datetime.now(UTC), payload=StatusMove(None, None, "Open", f"State {n}"),
                 actor_name="Anna")


def counts(fake: FakeTelegram) -> dict[int, int]:
    return {chat: len(fake.messages_to(chat)) for chat in CHATS}


def store_notices(fake: FakeTelegram) -> list[str]:
    return [m.plain_text for m in fake.messages_to(ADMIN) if "cannot write its state file" in m.plain_text]


async def test_a_read_only_state_file_pauses_sending_tells_admins_once_and_resumes(fake, bot, tmp_path):
    """Writes refused while sending: each chat gets its one in-flight message and nothing more (no resend), the
    admins hear once, and when the file takes writes again everything else goes out exactly once."""
    store = Store.open(tmp_path / "state.sqlite3")
    queue(store, [event(task=i) for i in range(PER_CHAT)], CHATS)
    store.db.execute("PRAGMA query_only = ON")  # SQLite refuses every write: "attempt to write a readonly database"
    sender = make_sender(bot, store, store_retry_first=0.05, store_retry_max=0.2)
    task = asyncio.create_task(sender.run())
    try:
        await asyncio.sleep(1.5)  # ≈ 15 retried writes, all refused
        assert max(counts(fake).values()) <= 1, counts(fake)
        assert store.health.failing and "readonly" in (store.health.error or "")
        assert len(store_notices(fake)) == 1
        assert all(r["attempts"] == 0 for r in store.outbox.outbox_rows()), "a refused write never costs an attempt"

        store.db.execute("PRAGMA query_only = OFF")  # the disk is back
        for chat in CHATS:
            await fake.wait_for_messages(PER_CHAT, chat_id=chat, timeout=10)
        await asyncio.sleep(0.3)
    finally:
        sender.stop()
        await task
    assert counts(fake) == dict.fromkeys(CHATS, PER_CHAT), "no duplicates: the accepted sends were recorded late"
    assert [r["status"] for r in store.outbox.outbox_rows()] == [DELIVERED] * PER_CHAT * len(CHATS)
    assert len(store_notices(fake)) == 1 and not store.health.failing
    store.close()


async def test_stopping_while_writes_fail_repeats_at_most_the_one_message_in_flight_per_chat(fake, bot, tmp_path):
    """As after a crash: a stop while the sends cannot be recorded costs at most one duplicate per chat."""
    path = tmp_path / "state.sqlite3"
    store = Store.open(path)
    queue(store, [event(task=i) for i in range(PER_CHAT)], CHATS)
    store.db.execute("PRAGMA query_only = ON")
    sender = make_sender(bot, store, store_retry_first=0.05)
    task = asyncio.create_task(sender.run())
    await asyncio.sleep(1.0)
    sender.stop()
    await task
    store.close()

    store = Store.open(path)
    sender = make_sender(bot, store)
    await asyncio.wait_for(sender.drain(), 20)
    assert all(PER_CHAT <= n <= PER_CHAT + 1 for n in counts(fake).values()), counts(fake)
    assert [r["status"] for r in store.outbox.outbox_rows()] == [DELIVERED] * PER_CHAT * len(CHATS)
    store.close()


async def test_poll_jobs_wait_while_the_state_file_refuses_writes(tmp_path):
    """A poll whose results cannot be stored marks the shared health; the jobs then wait instead of polling (and
    spending Planfix requests) and run again once the sender's retried write has cleared it."""
    store = Store.open(tmp_path / "state.sqlite3")
    runs = []

    async def step() -> None:
        runs.append(1)
        e = event(task=7)
        store.commit_poll(PollCommit(now=datetime.now(UTC), events=[EventRow(e.key, e.kind, e.task_id, e.to_json())],
                                     deliveries=[DeliveryRow(e.key, ANNA)], meta={"cursor": str(len(runs))}))

    job = BackgroundJob("poll", step, interval=lambda: 0.0, health=Health(), budget=Budget(),
                        store_health=store.health)
    store.db.execute("PRAGMA query_only = ON")
    assert await job.run_once()
    assert store.health.failing and job.results["store_error"] == 1
    assert not await job.run_once() and len(runs) == 1, "no poll while the state file refuses writes"
    assert store.meta.get_meta("cursor") is None, "the failed poll committed nothing: the cursor did not move"

    store.db.execute("PRAGMA query_only = OFF")
    store.probe_write(datetime.now(UTC))
    store.health.recovered()
    assert await job.run_once() and job.results["ok"] == 1 and store.meta.get_meta("cursor") == "2"
    store.close()


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "2m"):
    where.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                            capture_output=True, check=False)
    if result.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): the query_only tests cover the same path")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system up to the last byte; the filler file is returned so the test can free the space."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as out:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    out.write(chunk[:size])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return filler


async def test_a_full_disk_pauses_sending_and_delivery_resumes_when_space_is_freed(fake, bot, tmp_path):
    """The real thing on a tiny tmpfs: WAL checkpointed to zero, the disk filled — SQLite answers "database or disk
    is full"; freeing the space lets the retried write through and the queue drains, each message once."""
    with small_tmpfs(tmp_path / "disk") as disk:
        store = Store.open(disk / "state.sqlite3")
        queue(store, [event(task=i) for i in range(PER_CHAT)], CHATS)
        store.db.execute("PRAGMA journal_size_limit = 0")
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the next write has to grow the WAL file
        filler = fill(disk)
        sender = make_sender(bot, store, store_retry_first=0.05, store_retry_max=0.2)
        task = asyncio.create_task(sender.run())
        try:
            await asyncio.sleep(1.0)
            assert store.health.failing, "the disk is full: the first recorded send must fail"
            assert max(counts(fake).values()) <= 1, counts(fake)
            assert len(store_notices(fake)) == 1
            os.unlink(filler)
            for chat in CHATS:
                await fake.wait_for_messages(PER_CHAT, chat_id=chat, timeout=10)
            await asyncio.sleep(0.3)
        finally:
            sender.stop()
            await task
        assert counts(fake) == dict.fromkeys(CHATS, PER_CHAT)
        assert [r["status"] for r in store.outbox.outbox_rows()] == [DELIVERED] * PER_CHAT * len(CHATS)
        assert len(store_notices(fake)) == 1
        store.close()


async def test_the_daemon_wires_one_store_health_into_every_job_and_reports_it(tmp_path):
    """Every background job of the real daemon (poll, deadlines, sweep, digest, prune) waits on the store's health;
    /healthz answers 503 and /status names the problem while the state file refuses writes."""
    from bot.app import Daemon
    from bot.config import parse_settings

    settings = parse_settings({
        "planfix": {"account": "acme", "api_key": "k", "token": "t", "url": "http://127.0.0.1:9/xml/"},
        "telegram": {"token": "123456:TEST-TOKEN", "api_base": "http://127.0.0.1:9", "admin_ids": [ADMIN]},
        "state": {"path": str(tmp_path / "state.sqlite3"), "keep_days": 7},
    }, environ={})
    daemon = Daemon.build(settings)
    try:
        assert daemon.detection is not None
        names = {job.name for job in daemon.detection.jobs}
        assert {"poll", "deadlines", "digest", "prune"} <= names
        assert all(job.store_health is daemon.store.health for job in daemon.detection.jobs)
        assert daemon.status().health()[0] is False  # no poll yet: unhealthy for that reason
        daemon.store.health.failed(OSError("disk I/O error"), datetime.now(UTC))
        ok, detail = daemon.status().health()
        assert not ok and "state file cannot be written" in detail
    finally:
        await daemon.close()
