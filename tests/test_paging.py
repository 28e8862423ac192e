"""Issue 10 item 2: lists are read to their real end (PLANFIX-API.md §16). Real HTTP against the fake Planfix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

import bot.planfix.client as client_module
from bot.fakes.planfix import FakePlanfix
from bot.planfix.client import PlanfixClient
from bot.watch.poller import Poller
from bot.watch.sweep import Sweep
from state.records import DeliveryRow
from state.store import Store


@pytest.fixture
async def pf():
    fake = FakePlanfix(clock=lambda: datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def client(pf):
    c = PlanfixClient(url=pf.url, account=pf.account, api_key=pf.api_key, token=pf.token, requests_per_second=500,
                      timeout=5)
    yield c
    await c.aclose()


async def test_the_real_answer_total_2_count_3_gives_two_tasks(pf, client):
    """`<tasks totalCount="2" count="3">` listing one task twice: two tasks, one request."""
    pf.list_duplicates = True
    first, second = pf.add_task(title="A"), pf.add_task(title="B")
    tasks = await client.task_get_list()
    assert [t.id for t in tasks] == [first.id, second.id] and len(pf.requests_for("task.getList")) == 1


async def test_a_total_count_too_low_never_stops_paging(pf, client):
    """totalCount says 30 of 150: paging goes on to the short page, and duplicate rows count once."""
    pf.list_duplicates = True
    pf.list_total_off = 120
    made = [pf.add_task(title=f"T{i}") for i in range(150)]
    tasks = await client.task_get_list(page_size=50)
    assert sorted(t.id for t in tasks) == sorted(t.id for t in made)
    assert len(pf.requests_for("task.getList")) == 4  # 3 full pages (51 rows each) and an empty one


async def test_0015_past_the_end_ends_the_list(pf, client):
    """Exactly two full pages, then the page past the end answers 0015: the list is those two pages."""
    pf.past_end_code = "0015"
    made = [pf.add_task(title=f"T{i}") for i in range(100)]
    with capture_logs() as logs:
        tasks = await client.task_get_list(page_size=50)
    assert len(tasks) == len(made) and [r.outcome for r in pf.requests_for("task.getList")] == ["ok", "ok", "0015"]
    assert any(e["event"] == "planfix.list_end_by_error" and e["page"] == 3 for e in logs)
    page = await client.task_list_page(3, page_size=50)
    assert page.items == [] and page.rows == 0


async def test_0015_on_the_first_page_is_still_an_error(pf, client):
    """Only a page past the first can be "past the end"; 0015 on page 1 is a real error (our bug)."""
    pf.inject_error("0015", method="task.getList")
    with pytest.raises(client_module.PlanfixRequestError):
        await client.task_list_page(1)


async def test_pages_are_capped_with_a_log_line(pf, client, monkeypatch):
    monkeypatch.setattr(client_module, "MAX_PAGES", 2)
    for i in range(7):
        pf.add_task(title=f"T{i}")
    with capture_logs() as logs:
        tasks = await client.task_get_list(page_size=2)
    assert len(tasks) == 4 and len(pf.requests_for("task.getList")) == 2
    assert any(e["event"] == "planfix.list_capped" and e["pages"] == 2 for e in logs)


async def test_the_sweep_finishes_its_pass_whatever_the_paging_quirks(pf, client, tmp_path):
    """With duplicate rows, a totalCount far too low and 0015 past the end, a sweep pass still reads every page,
    sees every task, and ends (it does not fail on the page past the end for ever)."""
    pf.list_duplicates, pf.list_total_off, pf.past_end_code = True, 9, "0015"
    made = [pf.add_task(title=f"T{i}") for i in range(10)]
    store = Store.open(tmp_path / "s.sqlite3")
    try:
        poller = Poller(client=client, store=store, route=lambda e, now: [DeliveryRow(e.key, -1)],
                        clock=lambda: datetime(2026, 11, 23, 9, 0, tzinfo=UTC) + timedelta(seconds=1))
        await poller.poll_once()
        assert store.tasks.snapshot_count() == 10
        pf.edit_task_silently(made[9].id, status=2)  # on the last page
        sweep = Sweep(poller, page_size=5)
        for _ in range(6):
            await sweep.step()
            if sweep.state.passes:
                break
        assert sweep.state.passes == 1
        assert [r.param("pageCurrent") for r in pf.requests_for("task.getList")][-3:] == ["1", "2", "3"]
        assert poller._held == {made[9].id}  # its status change, read on the last page, goes to the next feed poll
    finally:
        store.close()
