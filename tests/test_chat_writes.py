"""ActionDesk against the fake Planfix (in process): one write per update also when handled twice at once, when the
answer is lost, and across a restart; the `owner` fallback; what the dispatcher answers."""

from __future__ import annotations

import asyncio

from bot.chat.access import Viewer
from bot.chat.actions import ActionDesk, Outcome
from bot.fakes.planfix import API_USER_ID
from state.actions import Actions, Write
from tests.chat_harness import ANNA, ANNA_TG, BORIS_TG, ChatHarness, buttons

ANNA_VIEWER = Viewer(ANNA_TG, ANNA, False)


def harness(tmp_path):
    return ChatHarness(tmp_path, actions={"enabled": True})


def desk_for(h: ChatHarness, timeout: float = 5.0) -> ActionDesk:
    h.ctx.interactive_timeout = timeout
    return ActionDesk(h.ctx, Actions(h.store.db))


def posted(h: ChatHarness, task_id: int) -> list:
    return [a for a in h.pf.actions if a.task_id == task_id and a.description]


async def test_the_same_update_handled_twice_at_once_writes_once(tmp_path):
    async with harness(tmp_path) as h:
        task = h.pf.add_task(title="T", owner=ANNA)
        desk = desk_for(h)
        h.pf.inject_fault("hang", method="action.add", seconds=0.3)
        first, second = await asyncio.gather(*[
            desk.act(key="u:1:501:7", viewer=ANNA_VIEWER, telegram_name="Anna", chat_id=ANNA_TG,
                     number=task.general, text="hello") for _ in range(2)])
        assert {first.outcome, second.outcome} == {Outcome.DONE} and second.again
        assert len(posted(h, task.id)) == 1 and posted(h, task.id)[0].by == ANNA


async def test_a_lost_answer_is_settled_from_the_task_actions_not_posted_again(tmp_path):
    async with harness(tmp_path) as h:
        task = h.pf.add_task(title="T", owner=ANNA)
        desk = desk_for(h, timeout=0.5)
        h.pf.inject_fault("hang_after", method="action.add", seconds=2)
        lost = await desk.act(key="k", viewer=ANNA_VIEWER, telegram_name="Anna", chat_id=ANNA_TG,
                              number=task.general, text="maybe")
        assert lost.outcome == Outcome.UNCERTAIN and len(posted(h, task.id)) == 1
        again = await desk.act(key="k", viewer=ANNA_VIEWER, telegram_name="Anna", chat_id=ANNA_TG,
                               number=task.general, text="maybe")
        assert again.outcome == Outcome.DONE and again.again and again.write.action_id == posted(h, task.id)[0].id
        assert len(h.pf.requests_for("action.add")) == 1


async def test_after_a_restart_found_writes_are_recorded_and_missing_ones_returned(tmp_path):
    async with harness(tmp_path) as h:
        task = h.pf.add_task(title="T", owner=ANNA)
        actions = Actions(h.store.db)
        made = h.pf.post_action(task.id, "made before the crash", by=ANNA)
        for key, text in (("a", "made before the crash"), ("b", "never sent")):
            actions.begin(Write(key=key, chat_id=ANNA_TG, user_id=ANNA_TG, planfix_id=ANNA, actor_name="Anna",
                                task_id=task.id, general=task.general, description=text, owner=ANNA,
                                new_status=None), h.clock())
        results = {r.write.key: r for r in await desk_for(h).recover()}
        assert results["a"].outcome == Outcome.DONE and actions.get("a").action_id == made.id
        assert results["b"].outcome == Outcome.UNAVAILABLE and actions.get("b").state == "failed"
        assert not h.pf.requests_for("action.add") and await desk_for(h).recover() == []


async def test_owner_refused_falls_back_to_the_api_user_named_in_the_text(tmp_path):
    async with harness(tmp_path) as h:
        task = h.pf.add_task(title="T", owner=ANNA)
        h.pf.owner_refusal = ("0105", "no")
        desk = desk_for(h)
        result = await desk.act(key="k", viewer=ANNA_VIEWER, telegram_name="Ann", chat_id=ANNA_TG,
                                number=task.general, text="hi &\nthere")
        assert result.outcome == Outcome.DONE and desk.owner_refused
        [comment] = posted(h, task.id)
        assert (comment.by, comment.description) == (API_USER_ID, "<b>Anna</b>: hi &amp;<br>there")
        await desk.act(key="k2", viewer=ANNA_VIEWER, telegram_name="Ann", chat_id=ANNA_TG, number=task.general,
                       text="again")
        assert len(h.pf.requests_for("action.add")) == 3  # refused, retried; then straight as the API user


async def test_cards_get_the_status_button_and_replies_to_them_become_comments(tmp_path):
    async with harness(tmp_path) as h:
        task = h.pf.add_task(title="Card", owner=ANNA, workers=(ANNA,))
        await h.poll()
        [card] = await h.send(f"/task {task.general}")
        assert buttons(card)["Status ▸"] == f"a1:m:{task.general}:0"
        before = len(h.tg.sent)
        h.tg.user_sends(chat_id=ANNA_TG, user_id=ANNA_TG, text="via reply", reply_to=card.message_id)
        await h._feed()
        assert "Comment added" in h.tg.sent[before].plain_text and posted(h, task.id)[0].description == "via reply"
        [usage] = await h.send("/comment 12", user=BORIS_TG)
        assert "/comment" in usage.plain_text
        [hidden] = await h.send(f"/comment {task.general} sneaky", user=BORIS_TG)
        assert "not found" in hidden.plain_text and "sneaky" in hidden.plain_text and len(posted(h, task.id)) == 1


async def test_a_reply_to_a_list_names_its_task_with_a_number(tmp_path):
    async with harness(tmp_path) as h:
        task = h.pf.add_task(title="Listed", owner=ANNA, workers=(ANNA,))
        await h.poll()
        [listing] = await h.send("/my")
        before = len(h.tg.sent)
        h.tg.user_sends(chat_id=ANNA_TG, user_id=ANNA_TG, text="no number", reply_to=listing.message_id)
        await h._feed()
        assert "#1234 text" in h.tg.sent[before].plain_text and not posted(h, task.id)
        h.tg.user_sends(chat_id=ANNA_TG, user_id=ANNA_TG, text=f"#{task.general} on it\nsoon",
                        reply_to=listing.message_id)
        await h._feed()
        assert posted(h, task.id)[0].description == "on it<br>soon"
