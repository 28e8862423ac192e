"""End to end over the fake Telegram: `planfix-bot run` as a subprocess, every command and button once, in one run."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.fakes.telegram import FakeTelegram, SentMessage
from tests.e2e import Daemon, daemon_config, wait_polls, wait_until, write_config

TEAM, GROUP = -100777, -100888
ANNA_TG, BORIS_TG, ADMIN_TG, STRANGER_TG = 501, 502, 900, 666
ANNA, BORIS = 10, 11
MOSCOW = ZoneInfo("Europe/Moscow")


def digest_time() -> str:
    """A digest_at a little in the past (Moscow time), so the digest is due as soon as the daemon starts."""
    local = datetime.now(MOSCOW)
    return "00:00" if local.hour == 0 and local.minute < 5 else (local - timedelta(minutes=2)).strftime("%H:%M")


def buttons(message: SentMessage) -> dict[str, str]:
    return {b["text"]: b.get("callback_data") or b.get("url", "")
            for row in (message.reply_markup or {}).get("inline_keyboard", []) for b in row}


async def ask(tg: FakeTelegram, text: str, *, user: int, chat: int | None = None, thread: int | None = None,
              chat_type: str | None = None) -> SentMessage:
    """Send a command and wait for the bot's next message (or edit) in that chat."""
    chat = user if chat is None else chat
    before = len(tg.messages_to(chat))
    tg.user_sends(chat_id=chat, user_id=user, text=text, message_thread_id=thread,
                  chat_type=chat_type or ("private" if chat > 0 else "supergroup"))
    return (await tg.wait_for_messages(before + 1, chat_id=chat, timeout=15))[before]


async def press(tg: FakeTelegram, message: SentMessage, data: str, *, user: int) -> str:
    """Press a button and return the text of the callback answer."""
    before = len(tg.calls_of("answerCallbackQuery"))
    tg.user_presses(chat_id=message.chat_id, user_id=user, message_id=message.message_id, data=data)
    await wait_until(lambda: len(tg.calls_of("answerCallbackQuery")) > before, 15, "a callback answer")
    return str(tg.calls_of("answerCallbackQuery")[-1].get("text", ""))


async def test_commands_buttons_subscriptions_mute_and_digest_end_to_end(fakes, tmp_path):
    """Every command and button once against the real daemon: digest, menu, lists, card, visibility, groups, mute."""
    pf, tg = fakes
    pf.add_user(ANNA, "Anna")
    pf.add_user(BORIS, "Boris")
    secret = pf.add_task(title="Anna's secret plan", owner=ANNA, workers=(ANNA,), project=(7, "Website"),
                         deadline=pf.today())
    site = pf.add_task(title="Shared site work", owner=ANNA, workers=(ANNA, BORIS), project=(7, "Website"))
    for n in range(11):
        pf.add_task(title=f"Boris chore {n}", owner=BORIS, workers=(BORIS,), deadline=pf.today() - timedelta(days=1))
    tg.set_chat_admins(GROUP, BORIS_TG)
    config = daemon_config(
        tmp_path, pf, tg,
        users=[{"telegram_id": ANNA_TG, "planfix_id": ANNA, "digest_at": digest_time(), "timezone": "Europe/Moscow"},
               {"telegram_id": BORIS_TG, "planfix_id": BORIS}],
        routes=[{"chat_id": TEAM}],
        delivery={"coalesce_seconds": 0},
    )
    daemon = await Daemon(write_config(tmp_path / "config.toml", config), tmp_path / "daemon.log").start()
    try:
        await wait_polls(pf, 1)
        # The daily digest (due a minute ago) and the command menu.
        [digest] = await tg.wait_for_messages(1, chat_id=ANNA_TG, timeout=15)
        assert "Tasks for" in digest.plain_text and "Anna's secret plan" in digest.plain_text
        await wait_until(lambda: len(tg.commands) == 3, 10, "setMyCommands for default, ru and en")

        # Lists and the card.
        mine = await ask(tg, "/my", user=ANNA_TG)
        assert "Anna's secret plan" in mine.plain_text and "Shared site work" in mine.plain_text
        card = await ask(tg, f"/task {secret.general}", user=ANNA_TG)
        assert "Anna's secret plan" in card.plain_text and "Latest actions" in card.plain_text
        pf.edit_task_silently(secret.id, title="Anna's secret plan v2")
        assert await press(tg, card, buttons(card)["🔄 Refresh"], user=ANNA_TG) == "Refreshed"
        assert "v2" in tg.messages_to(ANNA_TG)[-1].plain_text and tg.messages_to(ANNA_TG)[-1].edited
        assert "follows" in await press(tg, card, buttons(card)["🔔 Follow this task"], user=ANNA_TG)
        assert "wait until" in await press(tg, card, buttons(card)["💤 Snooze 1 h"], user=ANNA_TG)
        assert "Anna's secret plan" in (await ask(tg, "/today", user=ANNA_TG)).plain_text
        chores = await ask(tg, "/my", user=BORIS_TG)
        assert "page 1 of 2" in chores.plain_text
        await press(tg, chores, buttons(chores)["▶"], user=BORIS_TG)
        assert "page 2 of 2" in tg.messages_to(BORIS_TG)[-1].plain_text and tg.messages_to(BORIS_TG)[-1].edited
        assert "Boris chore" in (await ask(tg, "/overdue", user=ADMIN_TG)).plain_text
        assert "now follows" in (await ask(tg, f"/follow {site.general}", user=ADMIN_TG)).plain_text
        assert f"#{site.general}" in (await ask(tg, "/subscriptions", user=ADMIN_TG)).plain_text
        assert "no longer follows" in (await ask(tg, f"/unfollow {site.general}", user=ADMIN_TG)).plain_text
        assert str(ADMIN_TG) in (await ask(tg, "/start", user=ADMIN_TG)).plain_text

        # Visibility: a forged button and /find for Boris.
        his = await ask(tg, f"/task {site.general}", user=BORIS_TG)
        assert "not found" in await press(tg, his, f"t1:r:{secret.general}", user=BORIS_TG)
        found = await ask(tg, "/find plan", user=BORIS_TG)
        assert "Nothing found" in found.plain_text and "secret" not in found.plain_text

        # A group admin subscribes his group from a forum topic, addressing the bot by name.
        ok = await ask(tg, "/subscribe@planfix_test_bot Website", user=BORIS_TG, chat=GROUP, thread=5)
        assert ok.message_thread_id == 5 and "Website" in ok.plain_text
        pf.change_status(secret.id, 2, by=ANNA)
        pf.change_status(site.id, 2, by=ANNA)
        await tg.wait_for_messages(2, chat_id=TEAM, timeout=20)
        # A chat's messages go out in queue order, so a leaked notice of the secret task would come first.
        await wait_until(lambda: len(tg.messages_to(GROUP)) >= 2, 15, "the group's notice")
        notices = [m.plain_text for m in tg.messages_to(GROUP)[1:]]
        assert len(notices) == 1 and "Shared site work" in notices[0], notices
        assert "removed: 1" in (await ask(tg, "/unsubscribe", user=BORIS_TG, chat=GROUP, thread=5)).plain_text

        # /mute holds Boris's personal notice; /unmute releases it. (First his notice of the change above.)
        await wait_until(lambda: any("→" in m.plain_text for m in tg.messages_to(BORIS_TG)), 15, "Boris's notice")
        assert "held until" in (await ask(tg, "/mute 1h", user=BORIS_TG)).plain_text
        boris_before = len(tg.messages_to(BORIS_TG))
        pf.change_status(site.id, 3, by=ANNA)
        await tg.wait_for_messages(3, chat_id=TEAM, timeout=20)
        await wait_polls(pf, 1)
        assert len(tg.messages_to(BORIS_TG)) == boris_before, "muted: nothing yet"
        tg.user_sends(chat_id=BORIS_TG, user_id=BORIS_TG, text="/unmute")
        after = await tg.wait_for_messages(boris_before + 2, chat_id=BORIS_TG, timeout=15)
        texts = [m.plain_text for m in after[boris_before:]]  # the answer and the released notice, in either order
        assert any("at once again" in t for t in texts) and any("Shared site work" in t for t in texts), texts

        # Language, status, strangers.
        assert "русский" in (await ask(tg, "/lang ru", user=ANNA_TG)).plain_text
        assert "Команды" in (await ask(tg, "/help", user=ANNA_TG)).plain_text
        status = await ask(tg, "/status", user=ADMIN_TG)
        assert "planfix-bot" in status.plain_text and "Planfix requests today" in status.plain_text
        refusal = await ask(tg, "/my", user=STRANGER_TG)
        assert "team members only" in refusal.plain_text
    finally:
        code = await daemon.stop()
    assert code == 0
    log = daemon.output()
    assert "Traceback" not in log and '"level": "error"' not in log, log[-3000:]
