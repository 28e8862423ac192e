"""End to end: `planfix-bot run` as a subprocess against the fake Planfix and fake Telegram over loopback."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta

from tests.e2e import Daemon, daemon_config, planfix_bot_command, wait_polls, write_config

TEAM = -100777
ANNA_TG, BORIS_TG, STRANGER_TG = 501, 502, 666
ANNA, BORIS, CYRIL = 10, 11, 12


def team_config(tmp_path, pf, tg):
    return write_config(
        tmp_path / "config.toml",
        daemon_config(
            tmp_path, pf, tg,
            users=[{"telegram_id": ANNA_TG, "planfix_id": ANNA}, {"telegram_id": BORIS_TG, "planfix_id": BORIS}],
            routes=[{"chat_id": TEAM}],
        ),
    )


async def test_first_start_silent_then_each_change_once_and_no_duplicate_after_restart(fakes, tmp_path):
    """First start is silent; a status change, a deadline move and an overdue task each give exactly one message
    in the routed chat; a restart gives no duplicate; the bot token never appears in the log."""
    pf, tg = fakes
    pf.add_user(ANNA, "Anna")
    pf.add_user(BORIS, "Boris")
    pf.add_user(CYRIL, "Cyril")
    today = pf.today()
    status_task = pf.add_task(title="Status <task> & co", owner=ANNA, workers=(BORIS,), status=1)
    deadline_task = pf.add_task(title="Deadline task", owner=CYRIL, workers=(CYRIL,), deadline=today + timedelta(days=3))
    overdue_task = pf.add_task(title="Overdue task", owner=CYRIL, workers=(CYRIL,), deadline=today + timedelta(days=1))
    pf.add_task(title="Old news", owner=ANNA, status=2)

    daemon = await Daemon(team_config(tmp_path, pf, tg), tmp_path / "daemon.log").start()
    try:
        await wait_polls(pf, 2)
        assert tg.messages_to(TEAM) == [], "first start must be silent"

        pf.change_status(status_task.id, 2, by=BORIS)
        pf.change_deadline(deadline_task.id, today + timedelta(days=10), by=ANNA)
        pf.mark_overdue(overdue_task.id)
        await tg.wait_for_messages(3, chat_id=TEAM, timeout=60)
        await wait_polls(pf, 3)
        team = [m.plain_text for m in tg.messages_to(TEAM)]
        assert len(team) == 3, team
        assert sum("Status <task> & co" in t for t in team) == 1
        assert sum("Deadline task" in t for t in team) == 1
        assert sum("Overdue task" in t for t in team) == 1
        # Anna takes part in the status task and did not make the change: a personal notice. Boris made it: none.
        assert len(tg.messages_to(ANNA_TG)) == 1 and tg.messages_to(BORIS_TG) == []
        assert await daemon.stop() == 0

        sent_before = len(tg.sent)
        daemon = await Daemon(daemon.config, daemon.log).start()
        await wait_polls(pf, 3)
        assert len(tg.sent) == sent_before, "a restart must not resend anything"

        pf.change_status(status_task.id, 3, by=CYRIL)
        await tg.wait_for_messages(4, chat_id=TEAM, timeout=60)
        assert "Status <task> & co" in tg.messages_to(TEAM)[-1].plain_text
    finally:
        code = await daemon.stop()
    assert code == 0
    log = daemon.output()
    assert tg.token not in log and tg.token.split(":")[1] not in log
    assert pf.token not in log and pf.api_key not in log
    assert "Traceback" not in log and '"level": "error"' not in log, log[-3000:]


async def test_commands_refuse_strangers_and_respect_visibility(fakes, tmp_path):
    """/task answers a participant with the card, a non-participant with 'not found', a stranger with a refusal."""
    pf, tg = fakes
    pf.add_user(ANNA, "Anna")
    pf.add_user(BORIS, "Boris")
    annas = pf.add_task(title="Anna's secret plan", owner=ANNA, workers=(ANNA,))
    daemon = await Daemon(team_config(tmp_path, pf, tg), tmp_path / "daemon.log").start()
    try:
        await wait_polls(pf, 1)
        tg.user_sends(chat_id=ANNA_TG, user_id=ANNA_TG, text=f"/task {annas.general}")
        [card] = await tg.wait_for_messages(1, chat_id=ANNA_TG, timeout=60)
        assert "Anna's secret plan" in card.plain_text
        tg.user_sends(chat_id=BORIS_TG, user_id=BORIS_TG, text=f"/task {annas.general}")
        [hidden] = await tg.wait_for_messages(1, chat_id=BORIS_TG, timeout=60)
        assert "secret" not in hidden.plain_text and "not found" in hidden.plain_text
        tg.user_sends(chat_id=STRANGER_TG, user_id=STRANGER_TG, text=f"/task {annas.general}")
        [refusal] = await tg.wait_for_messages(1, chat_id=STRANGER_TG, timeout=60)
        assert "secret" not in refusal.plain_text and "team members only" in refusal.plain_text
    finally:
        assert await daemon.stop() == 0
    assert "Traceback" not in daemon.output()


def test_missing_telegram_token_exits_2_naming_the_key(tmp_path):
    """A config without telegram.token exits with status 2 and one line naming telegram.token."""
    config = tmp_path / "c.toml"
    config.write_text('[planfix]\naccount = "a"\napi_key = "k"\ntoken = "t"\n[telegram]\nadmin_ids = [1]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLANFIX_", "TELEGRAM_"))}
    proc = subprocess.run([*planfix_bot_command(), "run", "--config", str(config)], capture_output=True, text=True,
                          env=env, timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "telegram.token" in lines[0], proc.stderr


def test_help_lists_the_commands():
    """`planfix-bot --help` names run, check and demo."""
    proc = subprocess.run([*planfix_bot_command(), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    for word in ("run", "check", "demo"):
        assert word in proc.stdout
