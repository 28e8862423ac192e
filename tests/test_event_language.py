"""A notification is worded in the language of the chat it goes to, status names included: the event carries
status ids and the names are looked up at send time (issue 12 item 1)."""

from __future__ import annotations

from tests.e2e import Daemon, daemon_config, wait_polls, write_config

ANNA_TG, BORIS_TG = 501, 502
ANNA, BORIS = 10, 11


async def test_a_chat_switched_with_lang_gets_status_names_in_its_language(fakes, tmp_path):
    pf, tg = fakes
    pf.add_user(ANNA, "Anna")
    pf.add_user(BORIS, "Boris")
    task = pf.add_task(title="Landing page", owner=BORIS, workers=(ANNA,))
    config = daemon_config(
        tmp_path, pf, tg, users=[{"telegram_id": ANNA_TG, "planfix_id": ANNA},
                                 {"telegram_id": BORIS_TG, "planfix_id": BORIS}],
        routes=[], delivery={"coalesce_seconds": 0}, display={"language": "ru", "timezone": "Europe/Moscow"},
    )
    daemon = await Daemon(write_config(tmp_path / "config.toml", config), tmp_path / "daemon.log").start()
    try:
        await wait_polls(pf, 1)
        tg.user_sends(chat_id=ANNA_TG, user_id=ANNA_TG, text="/lang en")
        await tg.wait_for_messages(1, chat_id=ANNA_TG, timeout=15)
        pf.change_status(task.id, 2, by=BORIS)
        [_, notice] = await tg.wait_for_messages(2, chat_id=ANNA_TG, timeout=20)
        assert "Status: New → In progress" in notice.plain_text, notice.plain_text
        pf.change_status(task.id, 1, by=ANNA)  # Boris keeps the configured Russian
        [told] = await tg.wait_for_messages(1, chat_id=BORIS_TG, timeout=20)
        assert "Статус: В работе → Новая" in told.plain_text, told.plain_text
    finally:
        code = await daemon.stop()
    assert code == 0
