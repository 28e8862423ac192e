"""The one Planfix request budget: rate, priorities, the daily allowance, the header, the 0007 pause, persistence."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.fakes.planfix import FakePlanfix
from bot.planfix.budget import Budget, BudgetPaused, Priority, priority
from bot.planfix.client import PlanfixClient
from bot.planfix.errors import PlanfixLimitError
from bot.watch.jobs import Pacer
from bot.watch.poller import Poller
from state.store import Store
from tests.clocks import Clock

MSK = ZoneInfo("Europe/Moscow")


@pytest.fixture
def clock():
    return Clock(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))  # 15:00 in Moscow


@pytest.fixture
async def fake(clock):
    server = FakePlanfix(clock=clock)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def make_client(fake, clock):
    clients: list[PlanfixClient] = []

    def make(**budget_options) -> PlanfixClient:
        options = {"requests_per_second": 500.0, "daily": 20_000, "zone": MSK, "clock": clock}
        options.update(budget_options)
        budget = Budget(**options)
        client = PlanfixClient(url=fake.url, account=fake.account, api_key=fake.api_key, token=fake.token,
                               timeout=5, budget=budget, api_timezone=MSK)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def test_interactive_request_overtakes_queued_background_requests(fake, make_client):
    """A command's request goes out right after the slot in flight, ahead of every queued sweep request."""
    client = make_client(requests_per_second=5.0)

    async def sweep_request() -> None:
        with priority(Priority.SWEEP):
            await client.user_get()

    background = [asyncio.create_task(sweep_request()) for _ in range(6)]
    await asyncio.sleep(0.05)  # the first sweep request is out, five wait in the queue
    await client.user_get(user_id=1)  # interactive (the default priority)
    await asyncio.gather(*background)
    order = [r.param("user/id") for r in fake.requests]
    assert order.index("1") == 1, order  # right after the slot in flight, ahead of the five queued
    assert client.budget.granted[Priority.SWEEP] == 6 and client.budget.granted[Priority.INTERACTIVE] == 1


async def test_mixed_priorities_still_respect_the_rate_at_the_server(fake, make_client):
    """Whatever the priorities, requests arrive at least 1/rps apart (one shared limiter, no bursts)."""
    client = make_client(requests_per_second=8.0)

    async def call(level: Priority) -> None:
        with priority(level):
            await client.user_get()

    await asyncio.gather(*(call(level) for level in [*Priority, *Priority]))
    times = [r.monotonic for r in fake.requests]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) == 8 and min(gaps) >= 0.12, gaps


async def test_daily_count_follows_the_header_and_its_lag(fake, make_client):
    """Requests are counted; X-RateLimit-Remaining shows others' use of the day; while the header lags (same value)
    our own requests count on top of it; a rising header means Planfix reset its counter."""
    client = make_client(daily=1000)
    await client.user_get()
    assert client.budget.used == 1 and client.budget.remaining() == 999
    fake.rate_limit_remaining = 600  # another integration spent 400 today
    await client.user_get()
    assert client.budget.used == 1000 - 599 and client.budget.header_remaining == 599
    for _ in range(2):  # the header is refreshed only every ~10 minutes: it keeps saying 599
        fake.rate_limit_remaining = 600
        await client.user_get()
    assert client.budget.used == 1000 - 599 + 2
    fake.rate_limit_remaining = 991  # a higher figure: the counter was reset
    await client.user_get()
    assert client.budget.used == 1000 - 990


def test_background_stops_at_the_reserve_until_the_day_ends(clock):
    """When our own count leaves only the reserve, background requests wait for the reset (midnight, API zone)."""
    budget = Budget(daily=100, reserve=10, zone=MSK, clock=clock)
    budget._used = 90
    assert budget.background_resume_at() == datetime(2026, 3, 11, 0, 0, tzinfo=MSK)
    clock.now = datetime(2026, 3, 10, 21, 0, 1, tzinfo=UTC)  # 00:00:01 in Moscow
    assert budget.background_resume_at() is None and budget.used == 0


async def test_header_near_zero_stops_background_but_commands_go_on(fake, make_client, clock):
    """When the header says only the reserve is left, background requests are refused locally (commands still go)
    and look at the header again every 10 minutes; a rising header (Planfix's reset) restarts the count."""
    client = make_client(daily=200, reserve=20)
    fake.rate_limit_remaining = 21
    await client.user_get()  # the answer says 20 left = the reserve
    sent = len(fake.requests)
    with priority(Priority.FEED), pytest.raises(BudgetPaused) as info:
        await client.user_get()
    assert info.value.until == clock() + timedelta(minutes=10) and len(fake.requests) == sent
    assert (await client.user_get()).id == 1  # interactive
    clock.advance(minutes=10, seconds=1)
    with priority(Priority.FEED):
        await client.user_get()  # one background request looks at the header again: still low
    with priority(Priority.FEED), pytest.raises(BudgetPaused):
        await client.user_get()
    clock.advance(minutes=10, seconds=1)
    fake.rate_limit_remaining = 200  # Planfix reset its counter
    with priority(Priority.FEED):
        await client.user_get()
    assert client.budget.used == 1 and client.budget.background_resume_at() is None


async def test_0007_pauses_background_until_midnight_then_probes_with_growing_waits(fake, make_client, clock):
    """0007 pauses background requests until a minute after midnight in the API user's zone; a probe that still
    gets 0007 waits 15 min, then 30; any other answer ends the pause."""
    client = make_client()
    fake.rate_limit_remaining = 0
    with priority(Priority.FEED), pytest.raises(PlanfixLimitError):
        await client.user_get()
    midnight = datetime(2026, 3, 11, 0, 0, tzinfo=MSK)
    assert client.budget.paused_until == midnight + timedelta(minutes=1)
    with priority(Priority.FEED), pytest.raises(BudgetPaused):
        await client.user_get()
    assert len(fake.requests) == 1  # refused locally, nothing sent
    clock.now = client.budget.paused_until + timedelta(seconds=1)
    with priority(Priority.FEED), pytest.raises(PlanfixLimitError):  # the probe: Planfix has not reset yet
        await client.user_get()
    assert client.budget.paused_until == clock.now + timedelta(minutes=15)
    clock.now = client.budget.paused_until
    with priority(Priority.FEED), pytest.raises(PlanfixLimitError):
        await client.user_get()
    assert client.budget.paused_until == clock.now + timedelta(minutes=30)
    fake.rate_limit_remaining = 20_000  # Planfix reset the counter
    clock.now = client.budget.paused_until
    with priority(Priority.FEED):
        await client.user_get()
    assert client.budget.paused_until is None and client.budget.background_resume_at() is None


async def test_a_command_answered_during_the_pause_ends_it(fake, make_client):
    """If Planfix answers anything but 0007 (here to a command), the limit is over: background resumes at once."""
    client = make_client()
    fake.rate_limit_remaining = 0
    with priority(Priority.FEED), pytest.raises(PlanfixLimitError):
        await client.user_get()
    fake.rate_limit_remaining = None
    await client.user_get()
    assert client.budget.background_resume_at() is None


def test_snapshot_keeps_todays_count_across_a_restart_and_forgets_it_tomorrow(clock):
    """Requests used today survive a restart (snapshot → restore); after the reset the count starts at zero."""
    first = Budget(daily=5000, zone=MSK, clock=clock)
    first._used = 1234  # as if 1234 requests were made
    first.note_limit_error()
    saved = first.snapshot()
    again = Budget(daily=5000, zone=MSK, clock=clock)
    again.restore(saved)
    assert again.used == 1234 and again.paused_until == first.paused_until
    assert again.background_resume_at() == first.paused_until  # still paused after the restart
    calm = Budget(daily=5000, zone=MSK, clock=clock)
    calm._used = 1234
    later = Budget(daily=5000, zone=MSK, clock=clock)
    later.restore(calm.snapshot())
    assert later.used == 1234
    clock.advance(days=1)
    tomorrow = Budget(daily=5000, zone=MSK, clock=clock)
    tomorrow.restore(calm.snapshot())
    assert tomorrow.used == 0


async def test_requests_used_today_are_kept_in_the_state_file(fake, make_client, tmp_path, clock):
    """The poller saves the budget with every commit and a restarted daemon takes the count back."""
    store = Store.open(tmp_path / "state.sqlite3")
    try:
        fake.add_task(title="T")
        client = make_client()
        poller = Poller(client=client, store=store, route=lambda e, now: [], clock=clock)
        await poller.poll_once()
        clock.advance(seconds=30)
        await poller.poll_once()
        used = client.budget.used
        assert used >= 5
        restarted = make_client()
        Poller(client=restarted, store=store, route=lambda e, now: [], clock=clock).restore_budget()
        assert restarted.budget.used == used
    finally:
        store.close()


def test_poll_interval_follows_the_budget_left_and_never_drops_below_the_setting(clock):
    """Plenty left → the configured interval; little left for the rest of the day → polls spread out evenly."""
    budget = Budget(daily=20_000, zone=MSK, clock=clock)  # 9 h until midnight in Moscow
    pacer = Pacer(budget, base=30)
    assert pacer.interval() == 30
    budget._used = 20_000 - budget.reserve - 324  # 324 requests for 32,400 s
    assert pacer.interval() == pytest.approx(100, rel=0.01)
    pacer.observe(3)  # polls got dearer (task cards): the interval grows with them
    assert pacer.interval() > 100
    budget._used = 20_000  # nothing left: the next poll waits for the reset
    assert pacer.interval() == pytest.approx(budget.seconds_to_reset())


async def test_0007_with_plenty_left_in_the_header_is_a_short_term_limit(fake, make_client, clock):
    """0007 while X-RateLimit-Remaining says 15,000 are left: background requests wait a minute (doubling while
    it repeats, up to 16), not until midnight, and today's count is kept when Planfix answers again."""
    client = make_client()
    fake.rate_limit_remaining = 15_000
    with priority(Priority.FEED):
        await client.user_get()
    used = client.budget.used
    fake.inject_error("0007", times=2)  # the answer still carries the header: 14,999 left
    with priority(Priority.FEED), pytest.raises(PlanfixLimitError):
        await client.user_get()
    assert client.budget.short_pause and client.budget.paused_until == clock.now + timedelta(minutes=1)
    assert client.budget.background_resume_at() == clock.now + timedelta(minutes=1)
    with priority(Priority.FEED), pytest.raises(BudgetPaused) as refused:
        await client.user_get()
    assert "short-term" in str(refused.value)
    clock.advance(minutes=1)
    with priority(Priority.FEED), pytest.raises(PlanfixLimitError):
        await client.user_get()
    assert client.budget.paused_until == clock.now + timedelta(minutes=2)
    clock.advance(minutes=2)
    with priority(Priority.FEED):
        await client.user_get()
    assert client.budget.paused_until is None and not client.budget.short_pause
    assert client.budget.used > used  # the day's count was not reset by a short-term limit


async def test_0007_with_the_day_exhausted_still_waits_for_the_reset(fake, make_client, clock):
    """0007 after a short-term one, now with the header at 0: the day is used up, wait for the reset."""
    client = make_client()
    fake.rate_limit_remaining = 15_000
    fake.inject_error("0007")
    with priority(Priority.FEED), pytest.raises(PlanfixLimitError):
        await client.user_get()
    assert client.budget.short_pause
    clock.advance(minutes=1)
    fake.rate_limit_remaining = 0
    with priority(Priority.FEED), pytest.raises(PlanfixLimitError):
        await client.user_get()
    assert not client.budget.short_pause
    assert client.budget.paused_until == datetime(2026, 3, 11, 0, 1, tzinfo=MSK)


async def test_a_short_term_0007_does_not_message_the_admins(fake, make_client, clock, tmp_path):
    """The job waits the short pause and logs it; the admins hear only of a day's limit."""
    from bot.watch.jobs import BackgroundJob, Health

    client = make_client()
    told: list[str] = []

    async def tell(text: str) -> None:
        told.append(text)

    health = Health(notify_admins=tell)
    fake.rate_limit_remaining = 15_000

    async def step() -> None:
        with priority(Priority.FEED):
            await client.user_get()

    job = BackgroundJob("poll", step, interval=lambda: 30, health=health, budget=client.budget, clock=clock)
    fake.inject_error("0007")
    assert await job.run_once()
    assert job.results["limited"] == 1 and told == [] and health.paused_until is None
    assert job.next_run == clock.now + timedelta(minutes=1)


async def _feed_wait_under_hammering(budget: Budget, users: int, slots: int) -> int | None:
    """`users` people each asking again the moment their last request ends; returns how many command slots went
    out before one FEED request got its slot (None: not within `slots`)."""
    stop = asyncio.Event()

    async def person() -> None:
        while not stop.is_set():
            await budget.acquire(Priority.INTERACTIVE)
            await asyncio.sleep(0)
            budget.release()

    people = [asyncio.create_task(person()) for _ in range(users)]
    await asyncio.sleep(0.05)
    feed = asyncio.create_task(budget.acquire(Priority.FEED))
    await asyncio.sleep(0)  # count from the moment the feed request is queued, not from when its task was made
    before = budget.granted[Priority.INTERACTIVE]
    try:
        await asyncio.wait_for(asyncio.shield(feed), timeout=slots / budget.requests_per_second)
        budget.release()
        return budget.granted[Priority.INTERACTIVE] - before
    except TimeoutError:
        return None
    finally:
        stop.set()
        await asyncio.gather(*people, return_exceptions=True)
        if not feed.done():
            await feed
            budget.release()


async def test_commands_cannot_starve_the_feed_at_the_budget_level():
    """Three people pressing as fast as they can: with commands always first the feed poll never gets a slot;
    with the feed's share it gets one after at most two command slots."""
    starved = await _feed_wait_under_hammering(Budget(requests_per_second=100, interactive_run=None), 3, 30)
    assert starved is None
    waited = await _feed_wait_under_hammering(Budget(requests_per_second=100), 3, 30)
    assert waited is not None and waited <= 2
