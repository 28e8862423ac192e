"""/start and /help, the command menu (setMyCommands, Russian and English), the answer to out-of-date buttons,
and `build_router`: every feature router of the chat side behind one access check."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import structlog
from aiogram import Bot, Router
from aiogram.filters import Command, CommandStart
from aiogram.types import BotCommand, BotCommandScopeChat, CallbackQuery, Message

from bot.chat import lang as lang_feature
from bot.chat import lists, makers, mute, replies, status, subscriptions, tasks
from bot.chat.access import AccessMiddleware, Viewer
from bot.chat.context import ChatContext
from bot.chat.errors import on_error
from bot.i18n import LANGUAGES, texts

log = structlog.get_logger(__name__)

# The command menu (setMyCommands), in this order; its descriptions are the catalogue's commands_* texts.
MENU = ("my", "today", "overdue", "find", "task", "follow", "unfollow", "subscribe", "unsubscribe", "subscriptions",
        "mute", "unmute", "lang", "status", "help")
ADMIN_COMMANDS = frozenset({"status"})  # in the bot's admins' menu only (a per-chat BotCommandScope)

__all__ = ["ChatContext", "build_router", "set_bot_commands"]


def build_router() -> Router:
    """The chat side: one router per feature, all behind AccessMiddleware (strangers get a refusal)."""
    root = Router(name="chat")
    root.errors.register(on_error)  # a crashing handler still answers ("something went wrong"), traceback logged
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
    if chat.store.chats.set_chat_active(message.chat.id, True, None, datetime.now(UTC)):
        log.info("chat.reactivated", chat=message.chat.id)
        chat.wake_sender()
    words = texts(lang)
    await message.answer(words["start"].format(chat_id=message.chat.id, help=words["help"]))
    if viewer.is_admin and message.chat.type == "private" and message.bot is not None:
        # An admin who had never written to the bot had no menu of their own at start-up ("chat not found").
        await set_admin_menu(message.bot, message.chat.id, chat.settings.display.language)


async def cmd_help(message: Message, lang: str) -> None:
    await message.answer(texts(lang)["help"])


async def on_unknown_button(query: CallbackQuery, lang: str) -> None:
    """Garbage, an old prefix version, or a button from a feature that no longer exists: no data, just this."""
    log.info("chat.unknown_button", user=query.from_user.id, data=(query.data or "")[:64])
    await query.answer(texts(lang)["expired"], show_alert=True)


def menu(lang: str, *, admin: bool = False) -> list[BotCommand]:
    """The command list; commands for the bot's admins only (/status) are in the admins' menu alone."""
    words = texts(lang)
    return [BotCommand(command=name, description=words[f"commands_{name}"]) for name in MENU
            if admin or name not in ADMIN_COMMANDS]


async def set_bot_commands(bot: Bot, default_language: str, admin_ids: Iterable[int] = ()) -> None:
    """The command menu in Russian and English (and the display language for everyone else); each admin's private
    chat gets the admins' menu (a chat scope: Telegram prefers it to the default). Best effort: a failure is
    logged and the bot works without the menu; one admin's failure (e.g. they never wrote to the bot: "chat not
    found") leaves the others' menus set."""
    try:
        await bot.set_my_commands(menu(default_language))
        for language in LANGUAGES:
            await bot.set_my_commands(menu(language), language_code=language)
    except Exception as exc:
        log.warning("telegram.set_commands_failed", error=str(exc))
        return
    for admin_id in admin_ids:
        await set_admin_menu(bot, admin_id, default_language)


async def set_admin_menu(bot: Bot, chat_id: int, default_language: str) -> None:
    """The admins' menu in one admin's private chat (best effort, logged)."""
    scope = BotCommandScopeChat(chat_id=chat_id)
    try:
        await bot.set_my_commands(menu(default_language, admin=True), scope=scope)
        for language in LANGUAGES:
            await bot.set_my_commands(menu(language, admin=True), scope=scope, language_code=language)
    except Exception as exc:
        if "chat not found" in str(exc).lower():  # expected until the admin first writes to the bot: set on /start
            log.info("telegram.admin_menu_deferred", admin=chat_id, reason="the admin has not written to the bot yet")
            return
        log.warning("telegram.set_admin_commands_failed", admin=chat_id, error=str(exc))
