"""/start and /help, the command menu (setMyCommands, Russian and English), the answer to out-of-date buttons,
and `build_router`: every feature router of the chat side behind one access check."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from aiogram import Bot, Router
from aiogram.filters import Command, CommandStart
from aiogram.types import BotCommand, CallbackQuery, Message

from bot.chat import lang as lang_feature
from bot.chat import lists, makers, mute, replies, status, subscriptions, tasks
from bot.chat.access import AccessMiddleware, Viewer
from bot.chat.context import ChatContext
from bot.chat.texts import LANGUAGES, MENU, texts

log = structlog.get_logger(__name__)

__all__ = ["ChatContext", "build_router", "set_bot_commands"]


def build_router() -> Router:
    """The chat side: one router per feature, all behind AccessMiddleware (strangers get a refusal)."""
    root = Router(name="chat")
    root.message.middleware(AccessMiddleware())
    root.callback_query.middleware(AccessMiddleware())
    basics = Router(name="basics")
    basics.message.register(cmd_start, CommandStart())
    basics.message.register(cmd_help, Command("help"))
    root.include_routers(
        basics,
        tasks.build_router(),
        lists.build_router(),
        subscriptions.build_router(),
        mute.build_router(),
        lang_feature.build_router(),
        status.build_router(),
        makers.build_router(),  # chat_member updates: no user behind them, so no access check applies
        replies.build_router(),  # after the commands: a reply that is a command stays a command
    )
    stale = Router(name="stale-buttons")  # last: any button no factory above recognised
    stale.callback_query.register(on_unknown_button)
    root.include_router(stale)
    return root


async def cmd_start(message: Message, chat: ChatContext, viewer: Viewer, lang: str) -> None:
    # /start in a chat that had blocked or removed the bot makes it deliverable again.
    if chat.store.set_chat_active(message.chat.id, True, None, datetime.now(UTC)):
        log.info("chat.reactivated", chat=message.chat.id)
        chat.wake_sender()
    words = texts(lang)
    await message.answer(words["start"].format(chat_id=message.chat.id, help=words["help"]))


async def cmd_help(message: Message, lang: str) -> None:
    await message.answer(texts(lang)["help"])


async def on_unknown_button(query: CallbackQuery, lang: str) -> None:
    """Garbage, an old prefix version, or a button from a feature that no longer exists: no data, just this."""
    log.info("chat.unknown_button", user=query.from_user.id, data=(query.data or "")[:64])
    await query.answer(texts(lang)["expired"], show_alert=True)


def menu(lang: str) -> list[BotCommand]:
    words = texts(lang)
    return [BotCommand(command=name, description=words[f"commands_{name}"]) for name in MENU]


async def set_bot_commands(bot: Bot, default_language: str) -> None:
    """The command menu in Russian and English (and the display language for everyone else). Best effort: a
    failure is logged and the bot works without the menu."""
    try:
        await bot.set_my_commands(menu(default_language))
        for language in LANGUAGES:
            await bot.set_my_commands(menu(language), language_code=language)
    except Exception as exc:
        log.warning("telegram.set_commands_failed", error=str(exc))
