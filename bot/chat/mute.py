"""/mute <duration> and /unmute for the current chat: its messages wait (deferred like quiet hours, never dropped)."""

from __future__ import annotations

import re
from datetime import timedelta

import structlog
from aiogram import Bot, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.chat.access import Viewer, may_change_or_refuse
from bot.chat.context import ChatContext
from bot.i18n import texts
from bot.notify.markup import escape

log = structlog.get_logger(__name__)

MAX_MUTE = timedelta(days=30)
_PART = re.compile(r"(\d{1,5})\s*(min|мин|m|м|h|ч|d|д)", re.IGNORECASE)
_UNITS = {"m": "minutes", "min": "minutes", "мин": "minutes", "м": "minutes", "h": "hours", "ч": "hours",
          "d": "days", "д": "days"}


def parse_duration(text: str | None) -> timedelta | None:
    """"30m", "2h", "1d", "1h30m" (also мин/ч/д) → a positive duration within 30 days, else None."""
    compact = (text or "").replace(" ", "").lower()
    parts = _PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        return None
    total = timedelta()
    for number, unit in parts:
        total += timedelta(**{_UNITS[unit.lower()]: int(number)})
    return total if timedelta(0) < total <= MAX_MUTE else None


def build_router() -> Router:
    router = Router(name="mute")
    router.message.register(cmd_mute, Command("mute"))
    router.message.register(cmd_unmute, Command("unmute"))
    return router


async def cmd_mute(message: Message, command: CommandObject, chat: ChatContext, viewer: Viewer, lang: str,
                   bot: Bot) -> None:
    words = texts(lang)
    duration = parse_duration(command.args)
    if duration is None:
        await message.answer(words["mute_usage"])
        return
    if not await may_change_or_refuse(message, bot, viewer, lang):
        return
    now = chat.clock()
    until = now + duration
    chat.prefs.set_mute(message.chat.id, until, now)
    chat.prefs.release_pending(message.chat.id, now)  # rows held for an older mute are held again for this one
    chat.wake_sender()
    log.info("chat.muted", chat=message.chat.id, until=until.isoformat(), by=viewer.telegram_id)
    local = until.astimezone(chat.zone_for(message.chat.id)).strftime("%d.%m %H:%M")
    await message.answer(escape(words["muted"].format(until=local)))


async def cmd_unmute(message: Message, chat: ChatContext, viewer: Viewer, lang: str, bot: Bot) -> None:
    words = texts(lang)
    if not await may_change_or_refuse(message, bot, viewer, lang):
        return
    now = chat.clock()
    was_muted = chat.prefs.muted_until(message.chat.id, now) is not None
    chat.prefs.set_mute(message.chat.id, None, now)
    released = chat.prefs.release_pending(message.chat.id, now)
    chat.wake_sender()
    log.info("chat.unmuted", chat=message.chat.id, released=released, by=viewer.telegram_id)
    await message.answer(words["unmuted"] if was_muted else words["not_muted"])
