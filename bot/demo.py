"""`planfix-bot demo`: the real daemon against a simulated Planfix account, printing what Telegram would show."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from bot.app import run_daemon
from bot.config import parse_settings
from bot.fakes.planfix import FakePlanfix
from bot.fakes.telegram import FakeTelegram, SentMessage

DEMO_ZONE = ZoneInfo("Europe/Moscow")
TEAM_CHAT = -1001000000001
ANNA_TG, IVAN_TG, STRANGER_TG = 5001, 5002, 9999
ANNA, IVAN, OLGA = 10, 11, 12


class Printer:
    """Shows each message the daemon sends as a person would see it in Telegram."""

    def __init__(self, out: TextIO, names: dict[int, str]):
        self.out = out
        self.names = names

    def __call__(self, msg: SentMessage) -> None:
        when = datetime.now(DEMO_ZONE).strftime("%H:%M:%S")
        who = self.names.get(msg.chat_id, f"chat {msg.chat_id}")
        head = f"── {when} → {who}{' (edited)' if msg.edited else ''} "
        lines = [head + "─" * max(4, 72 - len(head)), msg.plain_text]
        for row in (msg.reply_markup or {}).get("inline_keyboard", []):
            lines.append("  ".join(f"[{b.get('text')} → {b.get('url', b.get('callback_data', ''))}]" for b in row))
        self.out.write("\n".join(lines) + "\n\n")
        self.out.flush()


def build_account(fake: FakePlanfix, now: datetime) -> list[int]:
    """A small team with a handful of tasks; returns the task ids the simulator plays with."""
    fake.add_user(ANNA, "Анна", last_name="Смирнова")
    fake.add_user(IVAN, "Ivan", last_name="Petrov")
    fake.add_user(OLGA, "Ольга", last_name="Ким")
    site, app = (201, "Website <relaunch>"), (202, "Mobile app")
    local_now = now.astimezone(DEMO_ZONE)
    # Planfix deadlines have minute resolution: the next full minute, at least 20 s away, shows an overdue notice soon.
    soon = (local_now + timedelta(seconds=80)).replace(second=0, microsecond=0)
    tasks = [
        fake.add_task(title="Landing page copy & images", owner=ANNA, workers=(IVAN,), project=site,
                      deadline=local_now.date() + timedelta(days=3)),
        fake.add_task(title="Fix <script> escaping in the \"search\" form", owner=IVAN, workers=(ANNA,),
                      project=site, importance="HIGH", deadline=(local_now + timedelta(days=1)).replace(
                          second=0, microsecond=0)),
        fake.add_task(title="Release 2.4 to the stores 🚀", owner=OLGA, workers=(IVAN, OLGA), project=app,
                      deadline=soon),
        fake.add_task(title="Квартальный отчёт", owner=OLGA, workers=(ANNA,), deadline=local_now.date()
                      + timedelta(days=7), description="<p>Собрать цифры &mdash; до пятницы<br/></p>"),
        fake.add_task(title="Onboarding checklist for new hires", owner=ANNA, workers=(OLGA,), project=app),
    ]
    return [t.id for t in tasks]


async def simulate(fake: FakePlanfix, tg: FakeTelegram, task_ids: list[int], every: float, out: TextIO) -> None:
    """Every few seconds someone changes something in Planfix, and now and then someone asks the bot."""
    rng = random.Random(7)
    people = [ANNA, IVAN, OLGA]
    steps = [
        ("status", 0, 2), ("deadline", 1, None), ("comment", 3, None), ("ask", 1, None), ("reply", 1, None),
        ("press", 1, 2), ("status", 3, 2), ("status", 1, 5), ("stranger", 0, None), ("deadline", 4, None),
        ("status", 0, 5), ("status", 0, 3),
    ]
    step = 0
    while True:
        await asyncio.sleep(every)
        kind, index, status = steps[step % len(steps)]
        step += 1
        task_id = task_ids[index]
        task = fake.tasks[task_id]
        who = rng.choice(people)
        if kind == "status":
            fake.change_status(task_id, status, by=who)
            note = f"status of #{task.general} changed"
        elif kind == "deadline":
            new = datetime.now(DEMO_ZONE).date() + timedelta(days=rng.randint(2, 14))
            fake.change_deadline(task_id, new, by=who)
            note = f"deadline of #{task.general} moved"
        elif kind == "comment":
            fake.add_comment(task_id, "<p>Looks <b>good</b>, merging.</p>", by=IVAN, files=["checklist-v2.pdf"])
            note = f"Ivan comments on #{task.general}, with a file (the people on the task hear of it)"
        elif kind == "ask":
            tg.user_sends(chat_id=ANNA_TG, user_id=ANNA_TG, text=f"/task {task.general}", first_name="Anna")
            note = f"Anna asks the bot: /task {task.general}"
        elif kind == "reply":
            card = _latest_about(tg, ANNA_TG, task.general)
            if card is None:
                continue
            tg.user_sends(chat_id=ANNA_TG, user_id=ANNA_TG, text="On it — done by Friday.", reply_to=card.message_id,
                          first_name="Anna")
            note = f"Anna replies to the bot's card of #{task.general}: \"On it — done by Friday.\" (→ a comment)"
        elif kind == "press":
            card = _latest_about(tg, ANNA_TG, task.general)
            if card is None:
                continue
            out.write(f"   · Anna presses \"Status ▸\" under the card of #{task.general}, then a status\n")
            await _press_status(tg, card, task.general, status)
            note = f"status of #{task.general} changed from Telegram (the team hears, Anna does not)"
        else:
            tg.user_sends(chat_id=STRANGER_TG, user_id=STRANGER_TG, text=f"/task {task.general}", first_name="Eve")
            note = f"a stranger asks the bot: /task {task.general}"
        out.write(f"   · in Planfix: {note}\n")
        out.flush()


def _latest_about(tg: FakeTelegram, chat_id: int, general: int) -> SentMessage | None:
    """The newest message to this chat with a Status button for this task (a card or a personal notice)."""
    wanted = f"a1:m:{general}:"
    for message in reversed(tg.messages_to(chat_id)):
        rows = (message.reply_markup or {}).get("inline_keyboard", [])
        if any(str(b.get("callback_data", "")).startswith(wanted) for row in rows for b in row):
            return message
    return None


async def _press_status(tg: FakeTelegram, card: SentMessage, general: int, status: int | None) -> None:
    """Status ▸, wait for the list of statuses under the message, then choose one."""
    tg.user_presses(chat_id=card.chat_id, user_id=card.chat_id, message_id=card.message_id,
                    data=f"a1:m:{general}:0")
    choice = f"a1:s:{general}:{status}"
    for _ in range(100):
        await asyncio.sleep(0.1)
        shown = tg.message(card.chat_id, card.message_id) or {}
        rows = (shown.get("reply_markup") or {}).get("inline_keyboard", [])
        if any(b.get("callback_data") == choice for row in rows for b in row):
            tg.user_presses(chat_id=card.chat_id, user_id=card.chat_id, message_id=card.message_id, data=choice)
            return


async def run_demo(*, interval: float = 2.0, duration: float | None = None, language: str = "en",
                   out: TextIO | None = None) -> int:
    out = out or sys.stdout
    now = datetime.now(UTC)
    fake_pf = FakePlanfix(account="demo", timezone=str(DEMO_ZONE))
    fake_tg = FakeTelegram()
    names = {TEAM_CHAT: "team chat", ANNA_TG: "Anna (private)", IVAN_TG: "Ivan (private)",
             STRANGER_TG: "Eve, a stranger (private)"}
    fake_tg.on_message = Printer(out, names)
    task_ids = build_account(fake_pf, now)
    pf_url = await fake_pf.start()
    tg_url = await fake_tg.start()
    with tempfile.TemporaryDirectory(prefix="planfix-bot-demo-") as tmp:
        settings = parse_settings(
            {
                "planfix": {"url": pf_url, "account": "demo", "api_key": fake_pf.api_key, "token": fake_pf.token,
                            "web_url": "https://demo.planfix.com", "requests_per_second": 1.0,
                            # the simulated account has no daily limit worth saving for: poll at the set interval
                            "daily_request_budget": 1_000_000},
                "telegram": {"token": fake_tg.token, "api_base": tg_url, "admin_ids": [IVAN_TG]},
                "state": {"path": str(Path(tmp) / "state.sqlite3")},
                "poll": {"interval_seconds": interval},
                "display": {"language": language, "timezone": str(DEMO_ZONE)},
                "logging": {"level": "warning"},
                "users": [{"telegram_id": ANNA_TG, "planfix_id": ANNA}, {"telegram_id": IVAN_TG, "planfix_id": IVAN}],
                "routes": [{"chat_id": TEAM_CHAT}],
                "actions": {"enabled": True},  # replies become comments, Status ▸ changes the status
            },
            environ={},
        )
        from bot import logs

        logs.configure(level="warning", fmt="console", secrets=settings.secrets())
        out.write(
            "planfix-bot demo: the real daemon is polling a simulated Planfix account over loopback HTTP.\n"
            f"  Planfix (fake): {pf_url}   Telegram (fake): {tg_url}\n"
            f"  {len(task_ids)} tasks; the first poll remembers them silently, then people start changing things.\n"
            "  One task's deadline passes within about a minute (an overdue notice). Press Ctrl-C to stop.\n\n"
        )
        out.flush()
        stop = asyncio.Event()
        sim = asyncio.create_task(simulate(fake_pf, fake_tg, task_ids, max(3.0, interval * 2), out))
        if duration is not None:
            asyncio.get_running_loop().call_later(duration, stop.set)
        try:
            status = await run_daemon(settings, stop=stop)
        finally:
            sim.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sim
            await fake_tg.stop()
            await fake_pf.stop()
        out.write(f"demo stopped: {len(fake_tg.sent)} messages sent, {len(fake_pf.requests)} Planfix requests.\n")
        return status


__all__ = ["run_demo"]
