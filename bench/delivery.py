"""Delivery benchmark: 1,000 events to 50 chats through the real Sender against a fake Telegram enforcing its limits.

    python bench/delivery.py            # ~75 s; prints the table
    python bench/delivery.py --events 200 --groups 4 --privates 16

The fake Telegram runs in a child process with strict_limits=True: token buckets of 30 messages/s overall and 1/s
per chat (burst 3), and for groups a sliding window of 20 messages in any 60 s (as Telegram counts them); a
request over any of them gets a 429 with retry_after.
The parent runs the Sender (rendering, SQLite outbox, aiogram over HTTP) exactly as the daemon does, so its CPU
time is the sender's alone.

Theoretical minimum: a lower bound on the time any sender obeying the limits the issue sets for ours — at most
25 messages/s overall, 1 message/s in any chat, and 20/min in a group — needs for the same messages, each bucket
allowing its full burst at t = 0:
    global:     (N - 25) / 25 s
    per chat:   (n_chat - 1) × 1 s for a private chat; for a group the greedy schedule under both its 1/s and
                its window: 1/s until 20 went out, then the 21st 60 s after the 1st, and so on
    minimum = the largest of these.
The chat mix keeps the run short but representative: 10 groups get 30 messages each (so each runs into the
20-in-60-s window: 20 in the first 20 s, the other 10 from t = 60 s — the binding bound, 69 s), 40 private chats
share the other 700 (17-18 each), and the global 25/s bound (39 s) makes the sender keep all 50 lanes busy.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import random
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GLOBAL_PER_SECOND, PRIVATE_PER_SECOND, GROUP_PER_MINUTE = 25, 1, 20


# ── the fake Telegram, in its own process ────────────────────────────────────────────────────────────────────


def _serve_fake(conn) -> None:  # runs in the child process
    from bot.fakes.telegram import FakeTelegram

    async def main() -> None:
        fake = FakeTelegram(strict_limits=True)
        conn.send(await fake.start())
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "stats":
                per_chat = Counter(m.chat_id for m in fake.sent)
                conn.send({"rate_limit_hits": fake.rate_limit_hits, "sent": len(fake.sent),
                           "per_chat": dict(per_chat), "calls": len(fake.calls_of("sendMessage"))})
            elif command == "stop":
                await fake.stop()
                conn.send("stopped")
                return

    asyncio.run(main())


# ── the workload ─────────────────────────────────────────────────────────────────────────────────────────────


def chat_mix(events: int, groups: int, privates: int, per_group: int) -> list[int]:
    """The chat of every message: `per_group` for each group, the rest spread evenly over the private chats."""
    group_ids = [-1001000000000 - i for i in range(groups)]
    private_ids = [700_000 + i for i in range(privates)]
    targets = [chat for chat in group_ids for _ in range(per_group)]
    rest = events - len(targets)
    targets += [private_ids[i % privates] for i in range(rest)]
    random.Random(5).shuffle(targets)  # arrival order mixed, as a real poll would queue them
    return targets


def chat_minimum(n: int, group: bool) -> float:
    """When the n-th message to one chat can go out at the earliest: 1/s in every chat, and in a group also at
    most 20 in any 60 s — each message as early as both allow (greedy is optimal here)."""
    times: list[float] = []
    for k in range(n):
        at = times[-1] + 1 / PRIVATE_PER_SECOND if times else 0.0
        if group and k >= GROUP_PER_MINUTE:
            at = max(at, times[k - GROUP_PER_MINUTE] + 60)
        times.append(at)
    return times[-1] if times else 0.0


def theoretical_minimum(per_chat: Counter[int]) -> tuple[float, str]:
    total = sum(per_chat.values())
    bounds = {"global 25/s": max(0.0, (total - GLOBAL_PER_SECOND) / GLOBAL_PER_SECOND)}
    private = [n for chat, n in per_chat.items() if chat > 0]
    groups = [n for chat, n in per_chat.items() if chat < 0]
    if private:
        bounds["1/s per chat"] = chat_minimum(max(private), group=False)
    if groups:
        bounds["group 1/s + 20 in any 60 s"] = chat_minimum(max(groups), group=True)
    name = max(bounds, key=bounds.__getitem__)
    return bounds[name], name


def queue_events(store, targets: list[int]) -> None:
    from bot.events import STATUS, Event, StatusMove
    from state.records import DeliveryRow, EventRow, PollCommit

    now = datetime.now(UTC)
    events, rows = [], []
    for n, chat in enumerate(targets):
        event = Event(kind=STATUS, key=f"bench:{n}", task_id=10_000 + n, task_general=50_000 + n,
                      task_title=f"Benchmark task <{n}> & friends 😀", occurred_at=now, payload=StatusMove(None, None, "In progress", "Done"),
                      actor_name="Анна Петрова", project_title="Bench", participants=(1, 2))
        events.append(EventRow(event.key, event.kind, event.task_id, event.to_json()))
        rows.append(DeliveryRow(event.key, chat))
    store.commit_poll(PollCommit(now=now, events=events, deliveries=rows))


async def run_sender(base_url: str, state: Path, total: int) -> tuple[float, float, dict[str, int]]:
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

    from bot import logs
    from bot.config import parse_settings
    from bot.notify.compose import build_sender
    from state.store import Store

    logs.configure(level="warning", fmt="console", stream=sys.stderr)  # the table stays readable; errors show

    settings = parse_settings({
        "planfix": {"account": "bench", "api_key": "k", "token": "t"},
        "telegram": {"token": "123456:TEST-TOKEN", "api_base": base_url},
        "display": {"language": "ru", "timezone": "Europe/Moscow"},
    }, environ={})
    store = Store.open(state)
    bot = Bot(settings.telegram.token.get_secret_value(),
              session=AiohttpSession(api=TelegramAPIServer.from_base(base_url)))
    sender = build_sender(settings, store, bot, zone=lambda: ZoneInfo("Europe/Moscow"), open_button_text="Открыть")
    all_sent, delivered, record = asyncio.Event(), [0], store.outbox.mark_sent

    def mark_sent(row_ids, *args, **kwargs):  # the moment the last row is recorded as delivered ends the clock
        record(row_ids, *args, **kwargs)
        delivered[0] += len(row_ids)
        if delivered[0] >= total:
            all_sent.set()

    store.outbox.mark_sent = mark_sent  # type: ignore[method-assign]
    cpu0, t0 = time.process_time(), time.perf_counter()
    task = asyncio.create_task(sender.run())
    await all_sent.wait()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    sender.stop()
    await task
    counts = store.outbox.outbox_counts()
    await bot.session.close()
    store.close()
    return elapsed, cpu, {"sent": sender.sent, "rate_limited": sender.rate_limited, **counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--privates", type=int, default=40)
    parser.add_argument("--per-group", type=int, default=30)
    args = parser.parse_args(argv)
    if args.groups * args.per_group > args.events or (args.privates == 0 and args.groups * args.per_group != args.events):
        parser.error("the groups' messages must fit into --events, and the rest needs private chats")

    targets = chat_mix(args.events, args.groups, args.privates, args.per_group)
    per_chat = Counter(targets)
    minimum, binding = theoretical_minimum(per_chat)

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    fake = ctx.Process(target=_serve_fake, args=(child,), daemon=True)
    fake.start()
    base_url = parent.recv()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            from state.store import Store

            state = Path(tmp) / "state.sqlite3"
            store = Store.open(state)
            queue_events(store, targets)
            store.close()
            elapsed, cpu, counts = asyncio.run(run_sender(base_url, state, len(targets)))
        parent.send("stats")
        stats = parent.recv()
        parent.send("stop")
        parent.recv()
    finally:
        fake.join(timeout=5)
        if fake.is_alive():
            fake.kill()

    wrong = {chat for chat, n in per_chat.items() if stats["per_chat"].get(chat) != n}
    rows = [
        ("messages", f"{len(targets)} to {len(per_chat)} chats ({args.groups} groups × {args.per_group}, "
                     f"{args.privates} private × {min(n for c, n in per_chat.items() if c > 0)}–"
                     f"{max(n for c, n in per_chat.items() if c > 0)})"),
        ("delivered (fake Telegram)", f"{stats['sent']} ({'all' if not wrong else f'{len(wrong)} chats wrong'})"),
        ("429 answers (target 0)", str(stats["rate_limit_hits"])),
        ("total time", f"{elapsed:.2f} s"),
        ("theoretical minimum", f"{minimum:.2f} s (bound by {binding})"),
        ("time / minimum (target ≤ 1.10)", f"{elapsed / minimum:.3f}" if minimum else "n/a"),
        ("sender CPU time", f"{cpu:.2f} s ({cpu / len(targets) * 1000:.2f} ms per message)"),
        ("sendMessage requests", str(stats["calls"])),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'metric'.ljust(width)} | value")
    print(f"{'-' * width}-|-{'-' * 60}")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")
    ok = not wrong and stats["rate_limit_hits"] == 0 and (not minimum or elapsed / minimum <= 1.10)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
