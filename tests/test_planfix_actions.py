"""Writing to Planfix: the fake's action.add (comments, taskNewStatus, owner, refusals) through the real client."""

from __future__ import annotations

import asyncio

import pytest

from bot.fakes.planfix import API_USER_ID, FakePlanfix
from bot.planfix.client import PlanfixClient
from bot.planfix.errors import PlanfixConfigError, PlanfixItemError, PlanfixRequestError

ANNA = 10


@pytest.fixture
async def pf():
    fake = FakePlanfix()
    fake.add_user(ANNA, "Anna", "Smirnova")
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def client(pf):
    async with PlanfixClient(url=pf.url, account=pf.account, api_key=pf.api_key, token=pf.token,
                             requests_per_second=50) as c:
        yield c


async def test_a_comment_by_its_owner_appears_in_the_feed(pf, client):
    task = pf.add_task(title="Write docs", owner=ANNA)
    action_id = await client.action_add(task_id=task.id, description="Done &lt;soon&gt;", owner=ANNA)
    added = pf.actions[-1]
    assert (added.id, added.by, added.description, added.status_change) == (action_id, ANNA, "Done &lt;soon&gt;", None)
    feed = await client.action_list(task.id)
    assert feed[-1].id == action_id and feed[-1].owner.id == ANNA
    assert pf.requests_for("action.add")[0].param("action/owner/id") == str(ANNA)


async def test_a_status_change_is_a_status_change_in_the_feed(pf, client):
    task = pf.add_task(title="Ship it", owner=ANNA)
    action_id = await client.action_add(task_id=task.id, description="", new_status=2)
    assert pf.task(task.id).status == 2
    [action] = [a for a in await client.action_list(task.id) if a.id == action_id]
    assert action.status_change is not None and (action.status_change.old, action.status_change.new) == (1, 2)
    assert action.owner.id == API_USER_ID  # no owner given: the API user


async def test_refusals_carry_planfix_reason(pf, client):
    task = pf.add_task(title="Guarded", owner=ANNA)
    pf.refuse_transition(3, message="Only the owner may close")
    with pytest.raises(PlanfixRequestError) as refused:
        await client.action_add(task_id=task.id, description="close", new_status=3)
    assert refused.value.code == "0016" and "Only the owner may close" in str(refused.value)
    pf.add_status(50, "Other process", set_id=9)
    with pytest.raises(PlanfixRequestError):
        await client.action_add(task_id=task.id, description="", new_status=50)
    pf.owner_refusal = ("0105", "no permission")
    with pytest.raises(PlanfixItemError):
        await client.action_add(task_id=task.id, description="hi", owner=ANNA)
    with pytest.raises(PlanfixItemError) as gone:
        await client.action_add(task_id=999, description="hi")
    assert gone.value.code == "3001"
    assert pf.task(task.id).status == 1 and len(pf.actions) == 1  # only TASKCREATED: nothing was written
    pf.forbidden_methods.add("action.add")
    with pytest.raises(PlanfixConfigError) as forbidden:
        await client.action_add(task_id=task.id, description="hi")
    assert forbidden.value.code == "0020"


async def test_hang_after_makes_the_change_before_answering(pf, client):
    task = pf.add_task(title="Slow", owner=ANNA)
    pf.inject_fault("hang_after", method="action.add", seconds=5)
    call = asyncio.create_task(client.action_add(task_id=task.id, description="late answer"))
    await asyncio.sleep(0.3)
    assert pf.actions[-1].description == "late answer" and not call.done()
    call.cancel()


async def test_status_set_lists_one_process(pf, client):
    pf.add_status(50, "Другой", set_id=9, en_name="Other")
    names = [s.name for s in await client.status_set(2)]
    assert names[:2] == ["Новая", "В работе"] and "Другой" not in names
    [other] = await client.status_set(9)
    assert other.name_in("en") == "Other"
