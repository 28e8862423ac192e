"""The last resort of the chat side: a handler that crashed still answers the person (and the traceback is logged)."""

from __future__ import annotations

import contextlib

import structlog
from aiogram.types import ErrorEvent

from bot.chat.context import ChatContext
from bot.i18n import texts

log = structlog.get_logger(__name__)


def _chat_id(event: ErrorEvent) -> int | None:
    update = event.update
    if update.message is not None:
        return update.message.chat.id
    if update.callback_query is not None and update.callback_query.message is not None:
        return update.callback_query.message.chat.id
    return None


async def on_error(event: ErrorEvent, chat: ChatContext | None = None, **_: object) -> bool:
    """Log the traceback and tell whoever is waiting "something went wrong" — never silence. Handled, so aiogram
    does not log it a second time; a failure to answer (the chat blocked the bot, Telegram down) is only logged."""
    update = event.update
    chat_id = _chat_id(event)
    log.error("chat.handler_failed", update_id=update.update_id, chat=chat_id,
              error=f"{type(event.exception).__name__}: {event.exception}", exc_info=event.exception)
    lang = "en"
    with contextlib.suppress(Exception):  # the state file may be what failed
        lang = chat.lang(chat_id) if chat is not None and chat_id is not None else lang
    text = texts(lang)["handler_failed"]
    try:
        if update.message is not None:
            await update.message.answer(text)
        elif update.callback_query is not None:
            with contextlib.suppress(Exception):  # the press may have been answered before the crash
                await update.callback_query.answer(text, show_alert=True)
    except Exception as exc:
        log.warning("chat.error_reply_failed", update_id=update.update_id, error=str(exc))
    return True
