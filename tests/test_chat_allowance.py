"""Issue 10 item 8: each person's allowance of Planfix requests. At the dispatcher level against the fakes."""

from __future__ import annotations

import asyncio

import pytest

from bot.chat.allowance import Allowance
from tests.chat_harness import ANNA, ANNA_TG, BORIS, BORIS_TG, ChatHarness, buttons


@pytest.fixture
async def h(tmp_path):
    async with ChatHarness(tmp_path) as harness:
        harness.task = harness.pf.add_task(title="Pressed a lot", owner=BORIS, workers=(ANNA,))
        await harness.poll()
        harness.pf.change_status(harness.task.id, 2, by=BORIS)
        await harness.poll()
        harness.ctx.allowance = Allowance(4)
        yield harness


async def test_refresh_beyond_the_allowance_is_answered_from_the_copy_saying_how_old(h):
    """Each Refresh costs 2 requests (task.get + action.getList): two fit in 4 a minute; the third is answered
    from the bot's copy — no Planfix request, the card says how old the copy is, the alert says why."""
    [card] = await h.send(f"/task {h.task.general}")  # 1 request (action.getList) from the allowance
    refresh = buttons(card)["🔄 Refresh"]
    before = h.planfix_requests()
    await h.press(card, refresh)
    assert h.planfix_requests() - before == 2 and h.last_alert() == "Refreshed"
    await h.press(card, refresh)  # 1 left: task.get goes, action.getList comes from the cache
    assert h.planfix_requests() - before == 3
    h.pf.edit_task_silently(h.task.id, title="Renamed meanwhile")
    [edited] = await h.press(card, refresh)
    assert h.planfix_requests() - before == 3  # nothing sent
    last = h.poller.last_success.astimezone(h.ctx.zone_for(ANNA_TG)).strftime("%d.%m %H:%M:%S")
    assert "Renamed meanwhile" not in edited.plain_text and "Pressed a lot" in edited.plain_text
    assert "The bot's copy as of" in edited.plain_text and last in edited.plain_text
    assert h.last_alert().startswith("The bot's copy as of") and last in h.last_alert()


async def test_one_persons_allowance_is_theirs_alone(h):
    """Anna used hers up; Boris still gets Planfix."""
    [card] = await h.send(f"/task {h.task.general}")
    for _ in range(3):
        await h.press(card, buttons(card)["🔄 Refresh"])
    assert h.last_alert().startswith("The bot's copy")
    [boris_card] = await h.send(f"/task {h.task.general}", user=BORIS_TG)
    before = h.planfix_requests()
    await h.press(boris_card, buttons(boris_card)["🔄 Refresh"], user=BORIS_TG)
    assert h.planfix_requests() - before == 2 and h.last_alert() == "Refreshed"


async def test_a_task_without_a_copy_says_try_again_beyond_the_allowance(h):
    """No copy to show (a task the bot has not seen yet): "too many requests, try again in a minute"."""
    h.ctx.allowance = Allowance(1)
    fresh = h.pf.add_task(title="Brand new", owner=ANNA)
    [first] = await h.send(f"/task {h.task.general}")  # uses the one request (action.getList)
    [reply] = await h.send(f"/task {fresh.general}", user=ANNA_TG)
    assert reply.plain_text == "Too many Planfix requests in a row. Please try again in a minute."
    assert first.plain_text


async def test_the_allowance_refills():
    allowance = Allowance(2, period=0.2)
    assert await allowance.take(1) and await allowance.take(1)
    assert not await allowance.take(1)
    assert await allowance.take(2)  # someone else
    await asyncio.sleep(0.15)
    assert await allowance.take(1)


async def test_a_stale_list_beyond_the_allowance_is_the_copy_with_its_age(h):
    """The feed is stale, so /my would re-read its page; beyond the allowance the copy is listed, with the note
    saying how old it is, and no Planfix request."""
    from datetime import UTC, datetime, timedelta

    h.ctx.allowance = Allowance(1)
    h.pf.edit_task_silently(h.task.id, title="Renamed")
    h.poller.last_success = datetime.now(UTC) - timedelta(hours=2)
    [first] = await h.send("/my")
    assert "Renamed" in first.plain_text
    before = h.planfix_requests()
    [second] = await h.send("/my")
    assert h.planfix_requests() == before
    assert "Pressed a lot" in second.plain_text and "Planfix data as of" in second.plain_text


async def test_a_stale_list_whose_page_has_a_hidden_task_keeps_the_copy(h):
    """Re-reading a stale page whose task.getMulti fails with 3002 for one task: the copy is shown, not an error."""
    from datetime import UTC, datetime, timedelta

    h.pf.deny_access(h.task.id, "3002")
    h.poller.last_success = datetime.now(UTC) - timedelta(hours=2)
    [reply] = await h.send("/my")
    assert "Pressed a lot" in reply.plain_text and "Planfix data as of" in reply.plain_text
