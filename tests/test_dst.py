"""Daylight saving time: feed windows in an API-user zone with DST, across the repeated hour
of the autumn fall-back, against the fake Planfix reading dates in that zone; the injected clock, never the wall's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.fakes.planfix import FakePlanfix
from bot.planfix.client import PlanfixClient
from bot.planfix.dates import Covered, covering_wall_time
from bot.watch.poller import Poller
from state.records import DeliveryRow
from state.store import Store
from tests.clocks import Clock

BERLIN = ZoneInfo("Europe/Berlin")
# 2026-10-25: clocks go back at 01:00 UTC, 03:00 CEST → 02:00 CET; local 02:00–02:59 happens twice.
FALL_BACK = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)


def _utc(*args: int) -> datetime:
    return datetime(2026, 10, 25, *args, tzinfo=UTC)


@pytest.mark.parametrize(("moment", "earliest", "wall", "reason"), [
    (_utc(0, 30, 40), True, "01:59", Covered.WIDENED),         # first 02:30 (CEST): read as the second, an hour late
    (_utc(0, 30, 40), False, "02:30", Covered.EXACT),
    (_utc(1, 30, 40), True, "02:30", Covered.EXACT),           # second 02:30 (CET): the first one is earlier
    (_utc(1, 30, 40), False, "03:00", Covered.WIDENED),        # …but as an upper bound it may read an hour early
    (_utc(0, 59, 59), False, "02:59", Covered.EXACT),
    (_utc(1, 0, 0), True, "02:00", Covered.EXACT),
    (_utc(1, 0, 0), False, "03:00", Covered.WIDENED),
    (_utc(2, 30), True, "03:30", Covered.EXACT),
    (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), True, "03:30", Covered.EXACT),  # spring: no ambiguity
])
def test_covering_wall_time_in_the_repeated_hour(moment, earliest, wall, reason):
    """A window's bound is sent as a local wall time both readings of which keep the window covered."""
    covered = covering_wall_time(moment, BERLIN, earliest=earliest)
    assert (covered.wall.strftime("%H:%M"), covered.reason) == (wall, reason)
    readings = [covered.wall.replace(tzinfo=BERLIN, fold=f).astimezone(UTC) for f in (0, 1)]
    minute = moment.replace(second=0, microsecond=0)
    assert all(r <= minute for r in readings) if earliest else all(r >= minute for r in readings)


@pytest.mark.parametrize("server_fold", [0, 1], ids=["planfix-reads-first", "planfix-reads-second"])
async def test_berlin_fall_back_hour_is_announced_within_the_interval(tmp_path, server_fold):
    """API user in Europe/Berlin, polls every 30 s from 02:50 CEST to 03:10 CET on 2026-10-25: every change —
    one every 30 s through the repeated hour (120 there) — is queued by the next poll, none an hour late,
    whichever reading of a repeated wall time the server takes."""
    clock = Clock(_utc(0, 50, 10))
    pf = FakePlanfix(clock=clock, timezone="Europe/Berlin")
    pf.ambiguous_fold = server_fold
    await pf.start()
    client = PlanfixClient(url=pf.url, account=pf.account, api_key=pf.api_key, token=pf.token,
                           requests_per_second=1000, timeout=5)
    store = Store.open(tmp_path / "state.sqlite3")
    try:
        pf.add_user(10, "Anna")
        tasks = [pf.add_task(title=f"T{i}", owner=10) for i in range(130)]
        poller = Poller(client=client, store=store, route=lambda e, now: [DeliveryRow(e.key, -1)], clock=clock)
        await poller.poll_once()  # the silent baseline
        late: list[tuple[datetime, int]] = []
        changed = 0
        while clock.now < _utc(2, 10):
            clock.now += timedelta(seconds=15)
            in_repeated_hour = FALL_BACK <= clock.now < FALL_BACK + timedelta(hours=1)
            expected = 0
            if in_repeated_hour or clock.now.minute % 5 == 0 and clock.now.second < 30:
                pf.change_status(tasks[changed % len(tasks)].id, 2 + changed % 2, by=10)
                changed += 1
                expected = 1
            clock.now += timedelta(seconds=15)
            queued = len((await poller.poll_once()).events)
            if queued != expected:
                late.append((clock.now, queued - expected))
        assert changed == 120 + 4
        assert late == []
    finally:
        await client.aclose()
        store.close()
        await pf.stop()
