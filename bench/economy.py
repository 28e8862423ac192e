#!/usr/bin/env python3
"""Economy benchmark: how many Planfix requests planfix-bot spends per detected change, per day, how fast
it detects, and how much memory it needs, next to a naive poller (task.getList + task.get for every task, every
cycle, as hand-written bots do), against the fake Planfix over loopback HTTP.

    python bench/economy.py              # 1,000 and 10,000 tasks, 1,000 changes a simulated day (a few minutes)
    python bench/economy.py --quick      # 300 tasks, 2 simulated hours, no RSS runs (a smoke test, seconds)
    python bench/economy.py --large      # 50,000 tasks: the first start; 3 days down with 30,000 actions, catch-up
    python bench/economy.py --footprint  # only the whole daemon's peak RSS at 10,000 tasks and its import time

How a day fits into minutes: the daemon's detection side (budget, jobs, poller, sweep, deadline check, SQLite
state) runs unmodified on an asyncio loop whose clock is virtual. Whenever every task is asleep and no socket is
ready, the loop jumps straight to the next timer instead of waiting, so a 24-hour day of 30-second polls takes
seconds to minutes of real time, while each request still really goes over HTTP to the fake. The fake Planfix
reads the same virtual clock, so action times, feed windows and the 1 request/s limiter all live in simulated
time, and "requests in any second" is measured in it. The naive poller runs the same way for a few cycles; its
cost per cycle is exact, and the day is that times the number of cycles in a day (said so in the output).
Peak RSS is measured separately in real time: the real `planfix-bot run` process (and a naive-poller process)
against the fake with the same number of tasks, read from /proc/PID/status (VmHWM) before it is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import os
import random
import resource
import selectors
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.events import DEADLINE, STATUS
from bot.fakes.planfix import FakePlanfix
from bot.planfix.budget import Budget
from bot.planfix.client import PlanfixClient
from bot.watch.jobs import Detection
from bot.watch.poller import Poller
from state.records import DeliveryRow
from state.store import Store

MSK = ZoneInfo("Europe/Moscow")
START = datetime(2026, 3, 2, 0, 0, 30, tzinfo=MSK)  # just after the (assumed) midnight reset of the daily budget
DAY = 86_400.0
PEOPLE = (10, 11, 12, 13, 14)
CHAT = -1001


# --- virtual time -----------------------------------------------------------------------------------------------


class WarpLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer whenever nothing is ready and no Planfix request is on its
    way: idle time costs nothing.

    Virtual time = real monotonic time + an offset that grows at each jump, so real work (HTTP over loopback, XML,
    SQLite) still takes the time it takes; only sleeping is skipped. `busy` counts requests in flight (TimedClient):
    while one is, the loop waits for the socket for real instead of jumping."""

    def __init__(self) -> None:
        super().__init__(selectors.DefaultSelector())
        self.offset = 0.0
        self.jumps = 0
        self.busy = 0
        real_select = self._selector.select

        def select(timeout: float | None = None) -> list:
            events = real_select(0)
            if events or timeout == 0:
                return events
            if self.busy:
                return real_select(0.01 if timeout is None else min(timeout, 0.01))
            if timeout is None:
                return real_select(None)
            self.offset += timeout
            self.jumps += 1
            return []

        self._selector.select = select  # type: ignore[method-assign]

    def time(self) -> float:
        return time.monotonic() + self.offset


def virtual_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], datetime]:
    t0 = loop.time()
    return lambda: START + timedelta(seconds=loop.time() - t0)


class TimedPlanfix(FakePlanfix):
    """The fake Planfix, also noting the (virtual) arrival time of every request."""

    def __init__(self, *, clock: Callable[[], datetime], **options) -> None:
        super().__init__(clock=clock, timezone="Europe/Moscow", **options)
        self.arrivals: list[tuple[float, object]] = []  # (seconds since START, RecordedRequest)

    async def _handle(self, request):  # noqa: ANN001, ANN202 - aiohttp handler
        index = len(self.requests)
        at = (self.clock() - START).total_seconds()
        response = await super()._handle(request)
        self.arrivals.append((at, self.requests[index]))
        return response


class TimedClient(PlanfixClient):
    """The real client; it tells the WarpLoop while a request is on its way, so time does not jump meanwhile."""

    async def _post(self, method: str, body: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        loop.busy += 1  # type: ignore[attr-defined]
        try:
            return await super()._post(method, body)
        finally:
            loop.busy -= 1  # type: ignore[attr-defined]


def seed_account(pf: FakePlanfix, tasks: int, rng: random.Random) -> list[int]:
    for person in PEOPLE:
        pf.add_user(person, f"Person {person}")
    ids = []
    for i in range(tasks):
        deadline = None
        if rng.random() < 0.3:
            deadline = (START + timedelta(days=rng.randint(2, 40))).date()
        task = pf.add_task(title=f"Task {i}", owner=rng.choice(PEOPLE), workers=(rng.choice(PEOPLE),),
                           status=rng.choice((1, 2)), deadline=deadline, record_action=False)
        ids.append(task.id)
    return ids


@dataclass
class Changes:
    """A stream of changes and, per task, those not yet detected (their times, in seconds since START)."""

    rng: random.Random
    pf: FakePlanfix
    ids: list[int]
    made: int = 0
    pending: dict[int, list[float]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def make_one(self, now: float) -> None:
        task_id = self.rng.choice(self.ids)
        task = self.pf.tasks[task_id]
        who = self.rng.choice(PEOPLE)
        roll = self.rng.random()
        if roll < 0.55:
            self.pf.change_status(task_id, {1: 2, 2: 4, 4: 2, 3: 2}.get(task.status, 2), by=who)
        elif roll < 0.65:
            self.pf.change_status(task_id, 3 if task.status != 3 else 2, by=who)
        else:
            new = task.deadline
            while new == task.deadline:  # a real move, never a no-op
                new = (START + timedelta(days=self.rng.randint(3, 60))).date()
            self.pf.change_deadline(task_id, new, by=who)
        self.pending.setdefault(task_id, []).append(now)
        self.made += 1

    def detected(self, task_id: int, now: float) -> None:
        for made_at in self.pending.pop(task_id, []):
            self.latencies.append(now - made_at)

    async def stream(self, clock: Callable[[], datetime], times: list[float]) -> None:
        for at in times:
            now = (clock() - START).total_seconds()
            if at > now:
                await asyncio.sleep(at - now)
            self.make_one((clock() - START).total_seconds())


@dataclass
class Result:
    requests_day: float = 0.0
    per_change: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    max_per_second: int = 0
    changes: int = 0
    detected: int = 0
    missed: int = 0
    rss_mb: float | None = None  # the whole process (for ours: `planfix-bot run`)
    detection_rss_mb: float | None = None  # ours only: the detection side in a process without aiogram
    note: str = ""
    by_method: dict[str, int] = field(default_factory=dict)
    baseline_requests: int = 0
    real_seconds: float = 0.0


def max_in_any_second(times: list[float]) -> int:
    """The most requests that fall into any window [t, t + 1 s)."""
    times = sorted(times)
    best = 0
    for i, t in enumerate(times):
        best = max(best, bisect.bisect_left(times, t + 1.0) - i)
    return best


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# --- planfix-bot, one simulated day ----------------------------------------------------------------------------


async def simulate_daemon(loop: WarpLoop, tasks: int, changes_per_day: int, interval: float, hours: float,
                          seed: int) -> Result:
    clock = virtual_clock(loop)
    rng = random.Random(seed)
    pf = TimedPlanfix(clock=clock)
    ids = seed_account(pf, tasks, rng)
    pf.rate_limit_remaining = 20_000  # the plan's daily limit, sent back as X-RateLimit-Remaining
    await pf.start()
    tmp = tempfile.TemporaryDirectory(prefix="pfbot-bench-")
    store = Store.open(Path(tmp.name) / "state.sqlite3")
    budget = Budget(requests_per_second=1.0, daily=20_000, clock=clock)
    client = TimedClient(url=pf.url, account=pf.account, api_key=pf.api_key, token=pf.token, budget=budget)
    stream = Changes(rng, pf, ids)

    def route(event, now):  # noqa: ANN001, ANN202 - the Router signature
        if event.kind in (STATUS, DEADLINE):
            stream.detected(event.task_id, (clock() - START).total_seconds())
        return [DeliveryRow(event.key, CHAT)]

    poller = Poller(client=client, store=store, route=route, clock=clock, language="en")
    detection = Detection.build(poller, interval=interval, clock=clock, rng=random.Random(seed))
    stop = asyncio.Event()
    runner = asyncio.create_task(detection.run(stop))
    started = time.monotonic()
    while not poller.caught_up:  # noqa: ASYNC110 - the first start: a silent baseline of every task (once)
        await asyncio.sleep(1)
    day_start = (clock() - START).total_seconds()
    baseline_requests = len(pf.arrivals)
    span = hours * 3600
    count = round(changes_per_day * hours / 24)
    times = sorted(day_start + rng.uniform(0, span - 3 * interval) for _ in range(count))
    generator = asyncio.create_task(stream.stream(clock, times))
    await asyncio.sleep(span)
    stop.set()
    await generator
    await asyncio.gather(runner, return_exceptions=True)
    real = time.monotonic() - started
    await client.aclose()
    store.close()
    await pf.stop()
    tmp.cleanup()

    window = [(at, r) for at, r in pf.arrivals if day_start <= at < day_start + span]
    per_day = len(window) * 24 / hours
    by_method: dict[str, int] = {}
    for _, r in window:
        by_method[r.method] = by_method.get(r.method, 0) + 1  # type: ignore[attr-defined]
    detected = stream.made - sum(len(v) for v in stream.pending.values())
    return Result(
        requests_day=per_day, per_change=len(window) / max(1, detected),
        p50=percentile(stream.latencies, 50), p95=percentile(stream.latencies, 95),
        max_per_second=max_in_any_second([at for at, _ in pf.arrivals]),
        changes=stream.made, detected=detected, missed=stream.made - detected, by_method=by_method,
        baseline_requests=baseline_requests, real_seconds=real,
        note=f"{hours:g} simulated h in {real:.0f} s real",
    )


# --- the naive poller ------------------------------------------------------------------------------------------


async def naive_cycle(client: PlanfixClient, memory: dict[int, tuple], on_change: Callable[[int], None]) -> int:
    """task.getList (every page) + task.get for every task; returns the requests it made."""
    before = client.requests_made
    listed = await client.task_get_list(target="all")
    for item in listed:
        task = await client.task_get(id=item.id)
        state = (task.status, task.deadline.to_json() if task.deadline else None)
        if task.id in memory and memory[task.id] != state:
            on_change(task.id)
        memory[task.id] = state
    return client.requests_made - before


async def simulate_naive(loop: WarpLoop, tasks: int, changes_per_day: int, interval: float, cycles: int,
                         seed: int, samples: int) -> Result:
    clock = virtual_clock(loop)
    rng = random.Random(seed)
    pf = TimedPlanfix(clock=clock)
    ids = seed_account(pf, tasks, rng)
    await pf.start()
    # Hand-written bots do not throttle: as fast as the server answers (a limiter this high never waits).
    client = TimedClient(url=pf.url, account=pf.account, api_key=pf.api_key, token=pf.token,
                         budget=Budget(requests_per_second=1e6, daily=10**9, clock=clock))
    stream = Changes(rng, pf, ids)
    # Its first cycle would only remember every task (same cost as any cycle): start from that memory instead.
    memory = {t.id: (t.status, t.deadline.isoformat() if t.deadline else None) for t in pf.tasks.values()}

    def seconds() -> float:
        return (clock() - START).total_seconds()

    started = time.monotonic()
    first = seconds()
    window = (cycles - 1) * interval
    times = sorted(first + rng.uniform(0, window) for _ in range(samples))  # latency samples (rate irrelevant)
    generator = asyncio.create_task(stream.stream(clock, times))
    counted, durations = 0, []
    next_start = first
    for _ in range(cycles):
        await asyncio.sleep(max(0.0, next_start - seconds()))
        cycle_start = seconds()
        counted += await naive_cycle(client, memory, lambda task_id: stream.detected(task_id, seconds()))
        durations.append(seconds() - cycle_start)
        next_start = cycle_start + interval
    await generator
    real = time.monotonic() - started
    await client.aclose()
    await pf.stop()

    per_cycle = counted / cycles
    cycle_time = max(interval, statistics.mean(durations))
    per_day = per_cycle * DAY / cycle_time
    measured = [at for at, _ in pf.arrivals if at >= first]
    return Result(
        requests_day=per_day, per_change=per_day / changes_per_day,
        p50=percentile(stream.latencies, 50), p95=percentile(stream.latencies, 95),
        max_per_second=max_in_any_second(measured), changes=stream.made, detected=len(stream.latencies),
        missed=sum(len(v) for v in stream.pending.values()), real_seconds=real,
        note=f"{cycles} cycles of {per_cycle:,.0f} requests measured ({real:.0f} s real), × {DAY / cycle_time:,.0f} "
        "cycles a day; latency from changes made during them",
    )


def run_virtual(factory: Callable[[WarpLoop], object]) -> Result:
    loop = WarpLoop()
    try:
        return loop.run_until_complete(factory(loop))  # type: ignore[arg-type]
    finally:
        loop.close()


# --- peak RSS, in real time ------------------------------------------------------------------------------------


RSS_TARGET_MB = 90  # issue 12: the whole daemon at 10,000 tasks
IMPORT_TARGET_S = 1.0  # issue 12: `import bot.app` in a fresh interpreter


def vmhwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def daemon_toml(tmp: Path, pf: FakePlanfix, tg_url: str, tg_token: str) -> Path:
    path = tmp / "config.toml"
    path.write_text(
        f'[planfix]\nurl = "{pf.url}"\naccount = "{pf.account}"\napi_key = "{pf.api_key}"\ntoken = "{pf.token}"\n'
        "requests_per_second = 50.0\ndaily_request_budget = 1000000\n"
        f'[telegram]\ntoken = "{tg_token}"\napi_base = "{tg_url}"\nadmin_ids = [900]\n'
        f'[state]\npath = "{tmp / "state.sqlite3"}"\n'
        "[poll]\ninterval_seconds = 1\nsweep_hours = 0.05\n"
        '[logging]\nlevel = "warning"\n'
        f"[[routes]]\nchat_id = {CHAT}\n",
        encoding="utf-8",
    )
    return path


def planfix_bot() -> list[str]:
    script = Path(sys.executable).with_name("planfix-bot")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot"]


async def _with_load(tasks: int, seconds: float, command: Callable[[FakePlanfix, Path], list[str]],
                     ready: Callable[[FakePlanfix], bool]) -> float | None:
    """Run `command` against a fake with `tasks` tasks; once `ready`, make a change every 0.2 s for `seconds`,
    then read the process's peak RSS (VmHWM) and stop it."""
    rng = random.Random(1)
    pf = FakePlanfix(timezone="Europe/Moscow")
    ids = seed_account(pf, tasks, rng)
    await pf.start()
    with tempfile.TemporaryDirectory(prefix="pfbot-rss-") as tmp:
        proc = await asyncio.create_subprocess_exec(*command(pf, Path(tmp)), stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        try:
            give_up = time.monotonic() + 120
            while not ready(pf) and time.monotonic() < give_up and proc.returncode is None:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            stream = Changes(rng, pf, ids)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                stream.make_one(0)
                await asyncio.sleep(0.2)
            peak = vmhwm_mb(proc.pid)
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
    await pf.stop()
    return peak


def _baseline_done(tasks: int) -> Callable[[FakePlanfix], bool]:
    pages = -(-tasks // 100)
    return lambda pf: sum(r.method == "task.getList" for r in pf.requests) >= pages + 1  # + the sweep's first page


async def daemon_rss(tasks: int, seconds: float) -> float | None:
    """Peak RSS of the real `planfix-bot run` process: first start, then `seconds` of polling (a change every 0.2 s)
    with the sweep paging through the active tasks."""
    from bot.fakes.telegram import FakeTelegram

    tg = FakeTelegram()
    tg_url = await tg.start()
    try:
        return await _with_load(
            tasks, seconds, lambda pf, tmp: [*planfix_bot(), "run", "--config", str(daemon_toml(tmp, pf, tg_url,
                                                                                               tg.token))],
            _baseline_done(tasks),
        )
    finally:
        await tg.stop()


async def detection_rss(tasks: int, seconds: float) -> float | None:
    """Peak RSS of the detection side alone (budget, jobs, poller, sweep, SQLite; no aiogram) under the same load."""
    return await _with_load(
        tasks, seconds,
        lambda pf, tmp: [sys.executable, "-c", DETECTION_WORKER, pf.url, pf.account, pf.api_key, pf.token,
                         str(tmp / "state.sqlite3")],
        _baseline_done(tasks),
    )


# The daemon's detection side as its own process (real time, until SIGTERM), importing only what the daemon does.
DETECTION_WORKER = """
import asyncio, signal, sys
from datetime import timedelta
import structlog
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
from bot.planfix.budget import Budget
from bot.planfix.client import PlanfixClient
from bot.watch.jobs import Detection
from bot.watch.poller import Poller
from state.records import DeliveryRow
from state.store import Store

async def main(url, account, api_key, token, path):
    store = Store.open(path)
    client = PlanfixClient(url=url, account=account, api_key=api_key, token=token,
                           budget=Budget(requests_per_second=50, daily=1_000_000))
    poller = Poller(client=client, store=store, route=lambda e, now: [DeliveryRow(e.key, -1)])
    detection = Detection.build(poller, interval=1, sweep_period=timedelta(hours=0.05))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await detection.run(stop)
    await client.aclose()
    store.close()

asyncio.run(main(*sys.argv[1:]))
"""


IMPORT_PROBE = "import time; t = time.perf_counter(); import bot.app; print(time.perf_counter() - t)"


def import_seconds(runs: int = 5) -> tuple[float, float]:
    """Medians over `runs` fresh interpreters: the `import bot.app` itself (timed inside), and the wall time of the
    whole `python -c` (interpreter start, the import, and the exit that frees aiogram's and pydantic's objects)."""
    import statistics
    import subprocess

    inside, whole = [], []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", IMPORT_PROBE], check=True, capture_output=True, text=True,
                              timeout=120)
        whole.append(time.perf_counter() - started)
        inside.append(float(done.stdout.strip()))
    return statistics.median(inside), statistics.median(whole)


def footprint(args: argparse.Namespace) -> int:
    """The whole `planfix-bot run` process's peak RSS at each --tasks size, and the import time of the daemon."""
    checks = []
    for n in args.tasks:
        print(f"… {n:,} tasks: peak RSS of `planfix-bot run` (first start, then {args.rss_seconds:g} s of polling)",
              file=sys.stderr, flush=True)
        rss = asyncio.run(daemon_rss(n, args.rss_seconds))
        print(f"peak RSS, whole `planfix-bot run`, {n:,} tasks: {fmt(rss, 1)} MB")
        checks.append((f"RSS ≤ {RSS_TARGET_MB} MB at {n:,} tasks, whole `planfix-bot run`",
                       rss is not None and rss <= RSS_TARGET_MB, f"{fmt(rss, 1)} MB"))
    seconds, wall = import_seconds()
    print(f"import bot.app in a fresh interpreter, median of 5: {seconds:.3f} s "
          f"(the whole `python -c \"import bot.app\"`, start and exit included: {wall:.3f} s)")
    checks.append((f"import bot.app ≤ {IMPORT_TARGET_S:g} s", seconds <= IMPORT_TARGET_S, f"{seconds:.3f} s"))
    for text, passed, value in checks:
        print(f"{'PASS' if passed else 'MISS'}  {text}: {value}")
    return 0 if all(passed for _, passed, _ in checks) else 1


def framework_rss() -> float | None:
    """Peak RSS of a Python process that only imports the daemon (`bot.app`: aiogram with its models built lazily,
    pydantic, aiohttp, httpx, APScheduler, sqlite-utils) and does nothing: the floor for the whole daemon."""
    import subprocess

    code = "import resource, bot.app; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    try:
        return float(done.stdout.strip())
    except ValueError:
        return None


async def naive_rss(tasks: int) -> float | None:
    """Peak RSS of a naive poller process (one full cycle) against the fake with `tasks` tasks."""
    pf = FakePlanfix(timezone="Europe/Moscow")
    seed_account(pf, tasks, random.Random(1))
    await pf.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--naive-worker", pf.url, pf.account, pf.api_key, pf.token,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    await pf.stop()
    try:
        return float(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


async def naive_worker(url: str, account: str, api_key: str, token: str) -> None:
    client = PlanfixClient(url=url, account=account, api_key=api_key, token=token,
                           budget=Budget(requests_per_second=1e6, daily=10**9))
    await naive_cycle(client, {}, lambda _: None)
    await client.aclose()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


# --- the report -----------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def ratio(naive: float | None, ours: float | None) -> str:
    if not naive or not ours:
        return ""
    return f"{naive / ours:,.0f}×" if naive / ours >= 10 else f"{naive / ours:,.1f}×"


def report(sizes: list[int], results: dict[int, tuple[Result, Result]], args: argparse.Namespace) -> None:
    print()
    print(f"planfix-bot economy: fake Planfix over loopback HTTP, {args.changes:,} changes per simulated day, "
          f"poll interval {args.interval:g} s, 1 request/s, daily budget 20,000")
    header = f"{'':<26}" + "".join(f"{f'{n:,} tasks':^36}" for n in sizes)
    print(header)
    print(f"{'':<26}" + "".join(f"{'ours':>12}{'naive':>12}{'naive/ours':>12}" for _ in sizes))
    rows: list[tuple[str, Callable[[Result], float | None], int, bool]] = [
        ("requests per change", lambda r: r.per_change, 2, True),
        ("requests per day", lambda r: r.requests_day, 0, True),
        ("detection p50, s", lambda r: r.p50, 1, True),
        ("detection p95, s", lambda r: r.p95, 1, True),
        ("max requests in 1 s", lambda r: r.max_per_second, 0, False),
        ("peak RSS, MB: process", lambda r: r.rss_mb, 1, False),
        ("  detection side only", lambda r: r.detection_rss_mb, 1, False),
        ("changes made / missed", None, 0, False),  # type: ignore[list-item]
    ]
    for name, get, digits, show_ratio in rows:
        line = f"{name:<26}"
        for n in sizes:
            ours, naive = results[n]
            if get is None:
                line += f"{f'{ours.changes}/{ours.missed}':>12}{f'{naive.changes}/{naive.missed}':>12}{'':>12}"
                continue
            line += f"{fmt(get(ours), digits):>12}{fmt(get(naive), digits):>12}"
            line += f"{ratio(get(naive), get(ours)) if show_ratio else '':>12}"
        print(line)
    print()
    for n in sizes:
        ours, naive = results[n]
        methods = ", ".join(f"{m} {c}" for m, c in sorted(ours.by_method.items(), key=lambda kv: -kv[1]))
        print(f"{n:,} tasks, ours: {ours.note}; first-start baseline {ours.baseline_requests} requests (once); "
              f"the day's requests: {methods}")
        print(f"{n:,} tasks, naive: {naive.note}")
        throttled = (n / 100 + n)
        print(f"{n:,} tasks, naive held to 1 request/s (not simulated): {throttled:,.0f} s per cycle, 86,400 "
              f"requests/day, ~{throttled / 2 / 60:,.0f} min typical latency")
    if sizes:
        print()
        checks = []
        small, large = min(sizes), max(sizes)
        if small <= 1000:
            ours, naive = results[small]
            checks.append((f"≥ 100× fewer requests per change than naive at {small:,} tasks",
                           naive.per_change / ours.per_change >= 100, ratio(naive.per_change, ours.per_change)))
        if large >= 10_000:
            ours = results[large][0]
            checks.append((f"≤ 4,000 requests per day at {large:,} tasks", ours.requests_day <= 4000,
                           fmt(ours.requests_day)))
            checks.append((f"RSS ≤ {RSS_TARGET_MB} MB at {large:,} tasks, whole `planfix-bot run`",
                           ours.rss_mb is not None and ours.rss_mb <= RSS_TARGET_MB, fmt(ours.rss_mb, 1)))
            checks.append((f"RSS ≤ 80 MB at {large:,} tasks, detection side without aiogram",
                           ours.detection_rss_mb is not None and ours.detection_rss_mb <= 80,
                           fmt(ours.detection_rss_mb, 1)))
        for n in sizes:
            ours = results[n][0]
            checks.append((f"p95 latency ≤ interval + 3 s at {n:,} tasks", ours.p95 <= args.interval + 3,
                           f"{fmt(ours.p95, 1)} s"))
            checks.append((f"never more than 1 request in any second at {n:,} tasks", ours.max_per_second <= 1,
                           str(ours.max_per_second)))
            checks.append((f"no change missed at {n:,} tasks", ours.missed == 0, str(ours.missed)))
        for text, passed, value in checks:
            print(f"{'PASS' if passed else 'MISS'}  {text}: {value}")



# --- a large account: the first start and a long catch-up -----------------------------------------------------


@dataclass
class Phase:
    """One long step of the daemon on a large account, measured in simulated time at 1 request/s."""

    name: str
    completed: bool = False
    requests: int = 0
    needed: int = 0  # the pages and cards it cannot do without (+ the start-up's user.get and status names)
    seconds: float = 0.0  # simulated: how long it takes at 1 request/s
    steps: int = 0
    timeouts: int = 0
    expected: int = 0  # tasks whose status or deadline ended different from before (catch-up)
    lost: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    rss_mb: float | None = None  # the detection side in its own process, real time
    note: str = ""


def _count(pf: TimedPlanfix, since: int) -> tuple[int, dict[str, int]]:
    methods: dict[str, int] = {}
    for _, r in pf.arrivals[since:]:
        methods[r.method] = methods.get(r.method, 0) + 1  # type: ignore[attr-defined]
    return len(pf.arrivals) - since, methods


async def _run_until_caught_up(poller: Poller, detection: Detection, clock: Callable[[], datetime], phase: Phase,
                               pf: TimedPlanfix) -> None:
    since, t0 = len(pf.arrivals), clock()
    stop = asyncio.Event()
    runner = asyncio.create_task(detection.run(stop))
    give_up = clock() + timedelta(days=2)
    while not poller.caught_up and clock() < give_up:  # noqa: ASYNC110
        await asyncio.sleep(1)
    phase.completed = poller.caught_up
    phase.seconds = (clock() - t0).total_seconds()
    stop.set()
    await asyncio.gather(runner, return_exceptions=True)
    phase.requests, phase.by_method = _count(pf, since)
    job = detection.job("poll")
    phase.steps, phase.timeouts = job.runs, job.results["transient"]


async def simulate_large(loop: WarpLoop, tasks: int, actions: int, down_days: float, seed: int,
                         keep: Path) -> tuple[Phase, Phase, TimedPlanfix]:
    """The first start of `tasks` active tasks, then `down_days` down while `actions` changes are made, then the
    restart's catch-up: the real detection side (jobs, poller, budget at 1 request/s, the 300 s step timeout)
    in simulated time. The state file as it was before the downtime is copied to `keep` (for the RSS run)."""
    clock = virtual_clock(loop)
    rng = random.Random(seed)
    pf = TimedPlanfix(clock=clock)
    ids = seed_account(pf, tasks, rng)
    await pf.start()
    store = Store.open(keep.with_name("state.sqlite3"))
    budget = Budget(requests_per_second=1.0, daily=20_000, clock=clock)
    client = TimedClient(url=pf.url, account=pf.account, api_key=pf.api_key, token=pf.token, budget=budget)
    announced: set[int] = set()

    def route(event, now):  # noqa: ANN001, ANN202 - the Router signature
        if event.kind in (STATUS, DEADLINE):
            announced.add(event.task_id)
        return [DeliveryRow(event.key, CHAT)]

    def build() -> tuple[Poller, Detection]:  # a new process on the same state file
        poller = Poller(client=client, store=store, route=route, clock=clock, language="en",
                        catchup_threshold=10, max_event_age=timedelta(hours=24))
        return poller, Detection.build(poller, interval=30, clock=clock, rng=random.Random(seed))

    first = Phase("first start", needed=-(-tasks // 100) + 3)
    poller, detection = build()
    await _run_until_caught_up(poller, detection, clock, first, pf)
    first.note = f"{store.tasks.snapshot_count():,} tasks remembered"
    first.completed = first.completed and store.tasks.snapshot_count() == tasks
    store.db.conn.execute("PRAGMA wal_checkpoint(FULL)")
    with contextlib.closing(__import__("sqlite3").connect(keep)) as copy:
        store.db.conn.backup(copy)

    before = {t.id: (t.status, t.deadline) for t in pf.tasks.values()}
    stream = Changes(rng, pf, ids)
    step = down_days * DAY / actions
    for _ in range(actions):
        await asyncio.sleep(step)
        stream.make_one(0)
    await asyncio.sleep(60)
    touched = {a.task_id for a in pf.actions if a.id and (a.at - START).total_seconds() > 0} & set(ids)
    expected = {i for i in touched if (pf.tasks[i].status, pf.tasks[i].deadline) != before[i]}
    catch = Phase("catch-up after downtime", needed=-(-actions // 100) + -(-len(touched) // 100) + 3,
                  expected=len(expected))
    announced.clear()
    poller, detection = build()
    await _run_until_caught_up(poller, detection, clock, catch, pf)
    catch.lost = len(expected - announced)
    catch.note = (f"{actions:,} actions on {len(touched):,} tasks over {down_days:g} days; "
                  f"{len(expected):,} tasks ended changed, {len(expected & announced):,} announced")
    await client.aclose()
    store.close()
    await pf.stop()
    return first, catch, pf


# The detection side catching up, its clock continuing from the fake's (the simulated end of the downtime).
CATCHUP_WORKER = """
import asyncio, signal, sys, time
from datetime import datetime, timedelta
import structlog
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
from bot.planfix.budget import Budget
from bot.planfix.client import PlanfixClient
from bot.watch.jobs import Detection
from bot.watch.poller import Poller
from state.records import DeliveryRow
from state.store import Store

async def main(url, account, api_key, token, path, start):
    t0, m0 = datetime.fromisoformat(start), time.monotonic()
    clock = lambda: t0 + timedelta(seconds=time.monotonic() - m0)
    store = Store.open(path)
    client = PlanfixClient(url=url, account=account, api_key=api_key, token=token,
                           budget=Budget(requests_per_second=50, daily=1_000_000, clock=clock))
    poller = Poller(client=client, store=store, route=lambda e, now: [DeliveryRow(e.key, -1)], clock=clock,
                    catchup_threshold=10, max_event_age=timedelta(hours=24))
    detection = Detection.build(poller, interval=1, sweep_period=None, clock=clock)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await detection.run(stop)
    await client.aclose()
    store.close()

asyncio.run(main(*sys.argv[1:]))
"""

CATCHUP_READY = """
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
row = db.execute("SELECT value FROM meta WHERE key = 'feed_partial'").fetchone()
cursor = db.execute("SELECT value FROM meta WHERE key = 'feed_cursor'").fetchone()
print("done" if row is not None and row[0] == "" and cursor and cursor[0] > sys.argv[2] else "busy")
"""


async def catchup_rss(pf: TimedPlanfix, state: Path, after: str) -> float | None:
    """Peak RSS of the detection side (its own process, real time) catching up from the state file saved before
    the downtime, against the same fake account (the gap's actions included)."""
    await pf.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CATCHUP_WORKER, pf.url, pf.account, pf.api_key, pf.token, str(state),
            pf.now().isoformat(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            give_up = time.monotonic() + 300
            while time.monotonic() < give_up and proc.returncode is None:
                await asyncio.sleep(1)
                check = await asyncio.create_subprocess_exec(sys.executable, "-c", CATCHUP_READY, str(state), after,
                                                             stdout=asyncio.subprocess.PIPE)
                out, _ = await check.communicate()
                if out.strip() == b"done":
                    break
            return vmhwm_mb(proc.pid)
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
    finally:
        await pf.stop()


def large_account(args: argparse.Namespace) -> int:
    """Run and report the large-account scenarios; returns 0 when every target is met."""
    with tempfile.TemporaryDirectory(prefix="pfbot-large-") as tmp:
        keep = Path(tmp) / "before-downtime.sqlite3"
        print(f"… first start of {args.large_tasks:,} tasks, {args.down_days:g} days down, {args.large_actions:,} "
              "actions, catch-up (simulated time)", file=sys.stderr, flush=True)
        started = time.monotonic()
        first, catch, pf = run_virtual(lambda loop: simulate_large(loop, args.large_tasks, args.large_actions,
                                                                   args.down_days, args.seed, keep))
        real = time.monotonic() - started
        if not args.no_rss:
            print("… peak RSS of the detection side: first start, then catch-up (real time)", file=sys.stderr,
                  flush=True)
            first.rss_mb = asyncio.run(detection_rss(args.large_tasks, 1.0))
            catch.rss_mb = asyncio.run(catchup_rss(pf, keep, pf.now().isoformat()))
    print()
    print(f"planfix-bot on a large account: fake Planfix over loopback HTTP, 1 request/s, the 300 s step timeout; "
          f"simulated time ({real:.0f} s real)")
    print(f"{'':<34}{'completed':>10}{'requests':>10}{'needed':>8}{'×needed':>9}{'at 1 req/s':>12}{'steps':>7}"
          f"{'lost':>6}{'RSS, MB':>9}")
    for phase in (first, catch):
        print(f"{phase.name:<34}{'yes' if phase.completed else 'NO':>10}{phase.requests:>10,}{phase.needed:>8,}"
              f"{phase.requests / phase.needed:>9.3f}{phase.seconds / 60:>10.1f} m{phase.steps:>7}"
              f"{phase.lost:>6}{fmt(phase.rss_mb, 1):>9}")
    for phase in (first, catch):
        methods = ", ".join(f"{m} {c}" for m, c in sorted(phase.by_method.items(), key=lambda kv: -kv[1]))
        print(f"{phase.name}: {phase.note}; {methods}; step time-outs: {phase.timeouts}")
    print()
    checks = [(f"{p.name} completes", p.completed, "yes" if p.completed else "no") for p in (first, catch)]
    checks += [(f"{p.name}: requests within 10 % of the pages and cards needed", p.requests <= 1.1 * p.needed,
                f"{p.requests:,} / {p.needed:,}") for p in (first, catch)]
    checks.append(("catch-up: nothing lost", catch.lost == 0, f"{catch.lost} of {catch.expected:,}"))
    if not args.no_rss:
        checks += [(f"{p.name}: RSS of the detection side ≤ 80 MB", p.rss_mb is not None and p.rss_mb <= 80,
                    fmt(p.rss_mb, 1)) for p in (first, catch)]
    for text, passed, value in checks:
        print(f"{'PASS' if passed else 'MISS'}  {text}: {value}")
    return 0 if all(passed for _, passed, _ in checks) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, nargs="+", help="default: 1,000 and 10,000 (--footprint: 10,000)")
    parser.add_argument("--changes", type=int, default=1000, help="changes per simulated day")
    parser.add_argument("--interval", type=float, default=30.0, help="poll.interval_seconds")
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours for planfix-bot")
    parser.add_argument("--naive-cycles", type=int, default=2, help="naive cycles measured (its memory is preset)")
    parser.add_argument("--rss-seconds", type=float, default=10.0, help="real seconds of polling for the RSS runs")
    parser.add_argument("--no-rss", action="store_true", help="skip the real-time RSS runs")
    parser.add_argument("--quick", action="store_true", help="300 tasks, 2 simulated hours, no RSS (smoke test)")
    parser.add_argument("--footprint", action="store_true",
                        help="only the whole daemon's peak RSS (at --tasks, default 10,000) and its import time")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--naive-worker", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--large", action="store_true",
                        help="only the large account: first start of --large-tasks, catch-up after --down-days")
    parser.add_argument("--large-tasks", type=int, default=50_000)
    parser.add_argument("--large-actions", type=int, default=30_000, help="actions while the daemon is down")
    parser.add_argument("--down-days", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.naive_worker:
        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
        asyncio.run(naive_worker(*args.naive_worker))
        return 0
    if args.tasks is None:
        args.tasks = [10_000] if args.footprint else [1000, 10000]
    if args.quick:
        args.tasks, args.hours, args.no_rss, args.naive_cycles = [300], 2.0, True, 2
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    if args.large:
        return large_account(args)
    if args.footprint:
        return footprint(args)
    results: dict[int, tuple[Result, Result]] = {}
    for n in args.tasks:
        print(f"… {n:,} tasks: planfix-bot, {args.hours:g} simulated hours", file=sys.stderr, flush=True)
        ours = run_virtual(lambda loop, n=n: simulate_daemon(loop, n, args.changes, args.interval, args.hours,
                                                             args.seed))
        print(f"… {n:,} tasks: naive poller, {args.naive_cycles} cycles", file=sys.stderr, flush=True)
        naive = run_virtual(lambda loop, n=n: simulate_naive(loop, n, args.changes, args.interval,
                                                             args.naive_cycles, args.seed, samples=40))
        if not args.no_rss:
            print(f"… {n:,} tasks: peak RSS of `planfix-bot run` and of a naive poller (real time)", file=sys.stderr,
                  flush=True)
            ours.rss_mb = asyncio.run(daemon_rss(n, args.rss_seconds))
            ours.detection_rss_mb = asyncio.run(detection_rss(n, args.rss_seconds))
            naive.rss_mb = asyncio.run(naive_rss(n))
        results[n] = (ours, naive)
    floor = None if args.no_rss else framework_rss()
    report(args.tasks, results, args)
    if floor is not None:
        print(f"note: a Python process that only imports the daemon (`import bot.app`) peaks at {floor:.1f} MB "
              "here; that is the floor for the whole daemon, detection adds the rest.")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
