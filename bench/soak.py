"""Soak: the daemon for N minutes against the fakes with Planfix faults, Telegram 429/5xx and kill -9 every ~90 s.

    python bench/soak.py                 # 10 minutes (the issue's soak); prints the table
    python bench/soak.py --minutes 2     # a quick look

`planfix-bot run` runs as a real subprocess at Planfix's real limit (requests_per_second = 1). Every 2–4 s the
bench changes one of 60 tasks in the fake Planfix (a status change or a deadline move, round-robin so that no task
changes twice within the coalescing window) and records it. At random it injects Planfix errors (0011, 3014),
HTTP 500s, malformed XML and 5 s hangs, and Telegram 429s and 5xx. About every 90 s it kills the daemon with
SIGKILL and starts it again at once. After the last change it stops the faults and waits for the queue to drain.

It counts, per task and kind, the changes made against the notifications that reached the routed chat (a catch-up
digest after a restart counts one per change it lists). The daemon announces what a task's card shows against its
last snapshot, so changes to one task made while it could not poll (a fault storm, a restart) reach the chat as
one notice from the first value to the last: a change counts as announced when a notice about that task and kind
reached the chat after it was made, and a run of unannounced changes that ends where it began (a status moved
and moved back while the bot was away) has nothing to announce. lost = changes neither covered nor undone;
duplicates = announcements beyond the changes. It samples the daemon's RSS (VmRSS) every
5 s and reports growth within each process life after a 30 s warm-up, and checks from the fake Planfix's request
log that no one-second window ever held more than one request. Targets: 0 lost, duplicates <= kills, RSS growth
< 5 MB, at most 1 request in any second.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.fakes.harness import Daemon, wait_until, write_config  # noqa: E402
from bot.fakes.planfix import FakePlanfix  # noqa: E402
from bot.fakes.telegram import FakeTelegram  # noqa: E402

CHAT = -1009000
TASKS = 60
ACTOR = 11
KIND_MARK = {"status": "🔄", "deadline": "📅"}


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def max_requests_in_any_second(times: list[float]) -> int:
    """The most requests inside any window [t, t + 1 s), over the sorted arrival times."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


DIGEST_MARK = "🗂"
DIGEST_KIND = {"Status:": "status", "Deadline:": "deadline"}


def delivered_counts(tg: FakeTelegram) -> Counter[tuple[int, str]]:
    """(task number, kind) for each change that reached the routed chat: one per message (edits of a message count
    once), and one per line of a catch-up digest, which folds the changes made while the daemon was down."""
    return Counter(key for key, _ in announcements(tg))


def announcements(tg: FakeTelegram) -> list[tuple[tuple[int, str], float]]:
    """((task number, kind), when the chat got it) for each change notice, digest lines included."""
    seen: dict[tuple[int, int], tuple[tuple[int, str], float]] = {}
    for msg in tg.messages_to(CHAT):
        text = msg.plain_text
        if text.startswith(DIGEST_MARK):
            for index, line in enumerate(text.splitlines()[1:]):
                number = re.search(r"#(\d+)", line)
                kind = next((k for label, k in DIGEST_KIND.items() if label in line), None)
                if number and kind:
                    seen[(msg.message_id, index)] = ((int(number.group(1)), kind), msg.at)
            continue
        number = re.search(r"#(\d+)", text)
        kind = next((k for k, mark in KIND_MARK.items() if text.startswith(mark)), None)
        if number and kind:
            seen[(msg.message_id, -1)] = ((int(number.group(1)), kind), msg.at)
    return list(seen.values())


def uncovered(history: dict[tuple[int, str], list[tuple[float, object, object]]],
              heard: list[tuple[tuple[int, str], float]]) -> tuple[Counter[tuple[int, str]], int]:
    """(lost, undone): changes (made at, value before, value after) that no later notice about their task and kind
    covers — unless such a trailing run ends where it began, which leaves nothing to announce (undone)."""
    last_heard: dict[tuple[int, str], float] = {}
    for key, at in heard:
        last_heard[key] = max(at, last_heard.get(key, at))
    lost: Counter[tuple[int, str]] = Counter()
    undone = 0
    for key, changes in history.items():
        tail = [c for c in changes if c[0] > last_heard.get(key, float("-inf"))]
        if not tail:
            continue
        if tail[0][1] == tail[-1][2]:
            undone += len(tail)
        else:
            lost[key] += len(tail)
    return lost, undone


def digest_count(tg: FakeTelegram) -> int:
    return len({m.message_id for m in tg.messages_to(CHAT) if m.plain_text.startswith(DIGEST_MARK)})


async def inject_faults(pf: FakePlanfix, tg: FakeTelegram, rng: random.Random) -> Counter[str]:
    injected: Counter[str] = Counter()
    while True:
        await asyncio.sleep(rng.uniform(4, 10))
        fault = rng.choice(["0011", "3014", "http500", "malformed", "hang", "tg429", "tg500"])
        if fault in ("0011", "3014"):
            pf.inject_error(fault)
        elif fault == "hang":
            pf.inject_fault("hang", seconds=5)
        elif fault == "tg429":
            tg.inject_retry_after(rng.randint(1, 5), chat_id=CHAT)
        elif fault == "tg500":
            tg.inject_fault("http500")
        else:
            pf.inject_fault(fault)
        injected[fault] += 1


async def soak(minutes: float, seed: int, keep_log: str | None = None) -> int:
    rng = random.Random(seed)
    pf, tg = FakePlanfix(), FakeTelegram(strict_limits=True)
    await pf.start()
    await tg.start()
    pf.add_user(10, "Anna")
    pf.add_user(ACTOR, "Boris")
    today = pf.today()
    tasks = [pf.add_task(title=f"Soak task {i}", owner=10, workers=(10,), deadline=today + timedelta(days=30))
             for i in range(TASKS)]
    made: Counter[tuple[int, str]] = Counter()
    history: dict[tuple[int, str], list[tuple[float, object, object]]] = {}
    kills, lives, rss_growth = 0, [], []
    with tempfile.TemporaryDirectory(prefix="planfix-bot-soak-") as tmp_dir:
        tmp = Path(tmp_dir)
        config = write_config(tmp / "config.toml", {
            "planfix": {"url": pf.url, "account": pf.account, "api_key": pf.api_key, "token": pf.token,
                        "requests_per_second": 1.0, "timeout_seconds": 3},
            "telegram": {"token": tg.token, "api_base": tg.base_url},
            "state": {"path": str(tmp / "state.sqlite3")},
            "poll": {"interval_seconds": 2},
            "delivery": {"coalesce_seconds": 0},
            "display": {"language": "en"},
            "logging": {"level": "warning", "format": "json"},
            "routes": [{"chat_id": CHAT, "events": ["status", "deadline"]}],
        })
        daemon = await Daemon(config, tmp / "daemon.log").start()
        await wait_until(lambda: any(r.method == "action.getListByPeriod" for r in pf.requests), 60, "first poll")
        faults = asyncio.create_task(inject_faults(pf, tg, rng))
        started = time.monotonic()
        life_start, samples = time.monotonic(), []
        next_kill = started + rng.uniform(80, 100)
        next_sample = started
        index = 0
        print(f"soak: {minutes:g} min, {TASKS} tasks, kill -9 every ~90 s", flush=True)
        while time.monotonic() - started < minutes * 60:
            task = tasks[index % TASKS]
            index += 1
            if rng.random() < 0.6:
                before = pf.tasks[task.id].status
                pf.change_status(task.id, 2 if before != 2 else 1, by=ACTOR)
                key, after = (task.general, "status"), pf.tasks[task.id].status
            else:
                before = pf.tasks[task.id].deadline
                pf.change_deadline(task.id, today + timedelta(days=rng.randint(31, 200)), by=ACTOR)
                key, after = (task.general, "deadline"), pf.tasks[task.id].deadline
            made[key] += 1
            history.setdefault(key, []).append((time.monotonic(), before, after))
            pause_until = time.monotonic() + rng.uniform(2, 4)
            while time.monotonic() < pause_until:
                now = time.monotonic()
                if now >= next_sample and daemon.proc is not None:
                    value = rss_kb(daemon.proc.pid)
                    if value and now - life_start >= 30:
                        samples.append(value)
                    next_sample = now + 5
                if now >= next_kill:
                    await daemon.stop(signal.SIGKILL)
                    kills += 1
                    if len(samples) >= 2:
                        rss_growth.append((samples[-1] - samples[0]) / 1024)
                    lives.append(now - life_start)
                    daemon = await Daemon(config, tmp / "daemon.log").start()
                    life_start, samples = time.monotonic(), []
                    next_kill = now + rng.uniform(80, 100)
                await asyncio.sleep(0.2)
        faults.cancel()
        pf.clear_faults()
        tg.clear_faults()
        expected = sum(made.values())
        drained = time.monotonic()
        try:
            await wait_until(lambda: not uncovered(history, announcements(tg))[0], 180, "the queue to drain")
        except AssertionError:
            pass
        await asyncio.sleep(5)  # anything late or duplicated shows up now
        drain_seconds = time.monotonic() - drained
        if len(samples) >= 2:
            rss_growth.append((samples[-1] - samples[0]) / 1024)
        exit_code = await daemon.stop()
        got = delivered_counts(tg)
        digests = digest_count(tg)
        lost_keys, undone = uncovered(history, announcements(tg))
        lost = sum(lost_keys.values())
        dups = sum(max(0, n - made[key]) for key, n in got.items())
        busiest = max_requests_in_any_second([r.monotonic for r in pf.requests])
        log = (tmp / "daemon.log").read_text(errors="replace")
        tracebacks = log.count("Traceback")
        if keep_log:
            Path(keep_log).write_text(log)  # noqa: ASYNC240 (once, at the end)
            Path(keep_log + ".messages").write_text(  # noqa: ASYNC240
                "\n\n".join(f"[{m.message_id}{' edited' if m.edited else ''}] {m.plain_text}" for m in tg.messages_to(CHAT)))
    await tg.stop()
    await pf.stop()

    rows = [
        ("duration", f"{minutes:g} min", ""),
        ("changes made", str(expected), ""),
        ("changes announced", str(sum(got.values())), f"incl. {digests} catch-up digests after restarts"),
        ("changes folded into a later notice", str(max(0, expected - sum(got.values()) - undone)), ""),
        ("changes undone while away (nothing to tell)", str(undone), ""),
        ("lost", str(lost), "target 0"),
        ("duplicates", str(dups), f"target <= kills ({kills})"),
        ("kill -9 restarts", str(kills), ""),
        ("drain after last change", f"{drain_seconds:.0f} s", ""),
        ("RSS growth per life (max)", f"{max(rss_growth, default=0):.1f} MB", "target < 5 MB"),
        ("Planfix requests", str(len(pf.requests)), ""),
        ("max Planfix requests in any second", str(busiest), "target <= 1"),
        ("Telegram rate-limit violations", str(tg.rate_limit_hits), "sends over Telegram's limits"),
        ("tracebacks in the daemon log", str(tracebacks), ""),
        ("daemon exit status at the end", str(exit_code), "0 = clean stop"),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")
    for (number, kind), n in sorted(lost_keys.items()):
        print(f"  lost: #{number} {kind} ×{n}")
    ok = lost == 0 and dups <= kills and max(rss_growth, default=0) < 5 and busiest <= 1
    print("\nresult:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-log", metavar="PATH", help="copy the daemon's log here at the end")
    args = parser.parse_args()
    return asyncio.run(soak(args.minutes, args.seed, args.keep_log))


if __name__ == "__main__":
    raise SystemExit(main())
