"""/lang ru|en: the language of the current chat, for command answers, notifications and its daily digest."""

from __future__ import annotations

import structlog
from aiogram import Bot, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.chat.access import Viewer, may_change_or_refuse
from bot.chat.context import ChatContext
from bot.i18n import LANGUAGES, texts

log = structlog.get_logger(__name__)


def build_router() -> Router:
    router = Router(name="lang")
    router.message.register(cmd_lang, Command("lang"))
    return router


async def cmd_lang(message: Message, command: CommandObject, chat: ChatContext, viewer: Viewer, lang: str,
                   bot: Bot) -> None:
    wanted = (command.args or "").strip().lower()
    if wanted not in LANGUAGES:
        await message.answer(texts(lang)["lang_usage"])
        return
    if not await may_change_or_refuse(message, bot, viewer, lang):
        return
    chat.prefs.set_language(message.chat.id, wanted, chat.clock())
    log.info("chat.language", chat=message.chat.id, language=wanted, by=viewer.telegram_id)
    await message.answer(texts(wanted)["lang_set"])
