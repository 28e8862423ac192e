"""End to end (issue 13): replies become comments, Status ▸ changes the status, once, attributed, refused cleanly.

One `planfix-bot run` subprocess against the fakes, killed with SIGKILL once while Planfix holds its answer."""

from __future__ import annotations

import signal

from bot.fakes.planfix import API_USER_ID
from bot.fakes.telegram import FakeTelegram, SentMessage
from tests.e2e import Daemon, daemon_config, wait_polls, wait_until, write_config
from tests.test_e2e_chat import buttons, press

TEAM = -100777
ANNA_TG, BORIS_TG, ADMIN_TG, STRANGER_TG = 501, 502, 900, 666
ANNA, BORIS = 10, 11


def comments(pf, task_id: int) -> list:
    return [a for a in pf.actions if a.task_id == task_id and a.type == "ACTION" and a.description]


async def reply(tg: FakeTelegram, message: SentMessage, text: str, *, user: int, **extra) -> tuple[int, SentMessage]:
    before = len(tg.messages_to(message.chat_id))
    update = tg.user_sends(chat_id=message.chat_id, user_id=user, text=text, reply_to=message.message_id,
                           chat_type="private" if message.chat_id > 0 else "supergroup", **extra)
    answer = (await tg.wait_for_messages(before + 1, chat_id=message.chat_id, timeout=15))[before]
    return update, answer


async def test_replies_and_status_buttons_write_to_planfix_once(fakes, tmp_path):
    pf, tg = fakes
    pf.add_user(ANNA, "Anna", "Smirnova")
    pf.add_user(BORIS, "Boris")
    task = pf.add_task(title="Landing page", owner=ANNA, workers=(ANNA, BORIS))
    secret = pf.add_task(title="Anna's secret", owner=ANNA)
    config = daemon_config(
        tmp_path, pf, tg, users=[{"telegram_id": ANNA_TG, "planfix_id": ANNA},
                                 {"telegram_id": BORIS_TG, "planfix_id": BORIS}],
        routes=[{"chat_id": TEAM}], delivery={"coalesce_seconds": 0}, actions={"enabled": True},
    )
    path = write_config(tmp_path / "config.toml", config)
    daemon = await Daemon(path, tmp_path / "daemon.log").start()
    try:
        await wait_polls(pf, 1)
        pf.change_status(task.id, 2, by=BORIS)
        [notice] = await tg.wait_for_messages(1, chat_id=ANNA_TG, timeout=20)
        [team_notice] = await tg.wait_for_messages(1, chat_id=TEAM, timeout=20)
        assert "Status ▸" in buttons(notice) and "Status ▸" not in buttons(team_notice)

        # A reply becomes a comment authored by Anna's own Planfix user; a redelivered update adds nothing.
        update, answer = await reply(tg, notice, "Looks good <b>now</b>\nship it", user=ANNA_TG)
        assert "Comment added" in answer.plain_text, answer.plain_text
        [comment] = comments(pf, task.id)
        assert comment.by == ANNA and comment.description == "Looks good &lt;b&gt;now&lt;/b&gt;<br>ship it"
        tg.redeliver(update)
        await tg.wait_for_messages(len(tg.messages_to(ANNA_TG)) + 1, chat_id=ANNA_TG, timeout=15)
        assert len(comments(pf, task.id)) == 1
        _, answer = await reply(tg, notice, "", user=ANNA_TG, extra={"photo": [
            {"file_id": "x", "file_unique_id": "x", "width": 1, "height": 1}]})
        assert "Only text" in answer.plain_text

        # Status ▸ → Done: the status changes, the message shows it, the team hears, Anna does not, Boris does.
        assert "Choose" in await press(tg, notice, buttons(notice)["Status ▸"], user=ANNA_TG)
        menu = tg.messages_to(ANNA_TG)[-1]
        assert menu.edited and "Done" in buttons(menu) and "In progress" not in buttons(menu)
        boris_before = len(tg.messages_to(BORIS_TG))
        assert "now: Done" in await press(tg, menu, buttons(menu)["Done"], user=ANNA_TG)
        assert pf.task(task.id).status == 5 and pf.actions[-1].by == ANNA
        assert "Status → Done" in tg.messages_to(ANNA_TG)[-1].plain_text
        anna_seen = len(tg.messages_to(ANNA_TG))
        [_, done] = await tg.wait_for_messages(2, chat_id=TEAM, timeout=20)
        assert "In progress → Done" in done.plain_text and "Anna Smirnova" in done.plain_text
        await tg.wait_for_messages(boris_before + 1, chat_id=BORIS_TG, timeout=20)
        await wait_polls(pf, 2)
        assert len(tg.messages_to(ANNA_TG)) == anna_seen, "the actor is not told about her own change"

        # A transition the process refuses: Planfix's reason in an alert, nothing changed.
        pf.refuse_transition(7, message="Only the owner may cancel")
        await press(tg, notice, buttons(notice)["Status ▸"], user=ANNA_TG)
        menu = tg.messages_to(ANNA_TG)[-1]
        assert "Only the owner may cancel" in await press(tg, menu, buttons(menu)["Canceled"], user=ANNA_TG)
        assert pf.task(task.id).status == 5

        # Forged buttons and strangers change nothing and learn nothing.
        writes = len(pf.requests_for("action.add"))
        assert "not found" in await press(tg, notice, f"a1:s:{secret.general}:2", user=BORIS_TG)
        assert "team members only" in await press(tg, notice, f"a1:s:{task.general}:2", user=STRANGER_TG)
        _, refusal = await reply(tg, team_notice, "let me in", user=STRANGER_TG)
        assert "team members only" in refusal.plain_text and "Landing" not in refusal.plain_text
        assert len(pf.requests_for("action.add")) == writes and pf.task(secret.id).status == 1

        # An admin without a Planfix user writes as the API user, named in the text; so does everyone once
        # Planfix refuses `owner`.
        before = len(tg.messages_to(ADMIN_TG))
        tg.user_sends(chat_id=ADMIN_TG, user_id=ADMIN_TG, text=f"/comment {task.general} checked", first_name="Root")
        await tg.wait_for_messages(before + 1, chat_id=ADMIN_TG, timeout=15)
        assert (pf.actions[-1].by, pf.actions[-1].description) == (API_USER_ID, "<b>Root</b>: checked")
        pf.owner_refusal = ("0105", "no permission to act for another user")
        _, answer = await reply(tg, team_notice, "from the group", user=BORIS_TG)
        assert "Comment added" in answer.plain_text
        assert (pf.actions[-1].by, pf.actions[-1].description) == (API_USER_ID, "<b>Boris</b>: from the group")
        pf.owner_refusal = None
        # Both comments reach Anna, who takes part in the task (attributed to Root and to Boris).
        await wait_until(lambda: sum(("Boris writes:\nfrom the group" in m.plain_text)
                                     + ("Root writes:\nchecked" in m.plain_text)
                                     for m in tg.messages_to(ANNA_TG)) == 2, 20, "both comments told to Anna")

        # Killed after Planfix made the comment but before the answer reached us: settled at restart, once.
        pf.inject_fault("hang_after", method="action.add", seconds=30)
        tg.user_sends(chat_id=ANNA_TG, user_id=ANNA_TG, text=f"/comment {task.general} survives a crash")
        await wait_until(lambda: any("survives" in a.description for a in pf.actions), 15, "the comment in Planfix")
        assert await daemon.stop(signal.SIGKILL) == -signal.SIGKILL
        anna_before = len(tg.messages_to(ANNA_TG))
        daemon = await Daemon(path, tmp_path / "daemon2.log").start()
        [confirmation] = (await tg.wait_for_messages(anna_before + 1, chat_id=ANNA_TG, timeout=20))[anna_before:]
        assert "Comment added" in confirmation.plain_text
        await wait_polls(pf, 1)
        assert sum("survives a crash" in a.description for a in pf.actions) == 1
    finally:
        code = await daemon.stop()
    assert code == 0
    log = daemon.output()
    assert "chat.action_settled" in log, "the restarted daemon found the comment instead of posting it again"
    assert "Traceback" not in log and '"level": "error"' not in log, log[-3000:]
