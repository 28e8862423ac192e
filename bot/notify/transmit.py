"""One message to Telegram, paced: sent or edited with its buttons, and if Telegram refuses the text, plainer forms."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import LinkPreviewOptions

from bot.notify.markup import MESSAGE_LIMIT, button, keyboard
from bot.notify.pacing import Pacing
from bot.notify.planfix_html import truncate
from bot.notify.verdicts import is_text_problem

log = structlog.get_logger("bot.notify.sender")

CUT_UNITS = 2000  # a text Telegram calls too long even after our own measuring is cut to this


@dataclass(frozen=True)
class Rendered:
    """A message ready to send: HTML text, a short fallback, and the link for the "Open in Planfix" button."""

    html: str
    fallback_html: str
    url: str | None
    silent: bool = False
    buttons: tuple[tuple[str, str], ...] = ()  # more buttons (text, callback data) in a row under the link


def plain_text(html_text: str) -> str:
    """The same content without markup, for when Telegram refuses to parse our HTML."""
    return html.unescape(re.sub(r"<[^>]*>", "", html_text))


def fallbacks(rendered: Rendered) -> list[tuple[str, bool]]:
    """What to send, in order, when Telegram refuses the HTML itself: (text, as HTML). Something always arrives."""
    plain = plain_text(rendered.html).strip()
    candidates = [
        (truncate(plain, MESSAGE_LIMIT), False),
        (truncate(plain, CUT_UNITS), False),
        (rendered.fallback_html, True),
        (plain_text(rendered.fallback_html), False),
    ]
    return [(text, as_html) for text, as_html in candidates if text.strip()]


@dataclass
class Transmitter:
    """Sends through the bot within `pacing`; raises Telegram's error for the lane to classify."""

    bot: Bot
    pacing: Pacing
    open_button_text: Callable[[int], str]
    send_timeout: float = 30.0

    async def send(self, chat_id: int, rendered: Rendered, edit_id: int | None) -> int:
        """Send (or edit) the HTML; if Telegram refuses the text itself, the same content as plain text, then cut,
        then the short form with the link. Returns the message id."""
        try:
            return await self._request(chat_id, rendered, rendered.html, parse_html=True, edit_id=edit_id)
        except TelegramBadRequest as exc:
            if not is_text_problem(exc.message):
                raise
            first = exc
        for text, as_html in fallbacks(rendered):
            try:
                message_id = await self._request(chat_id, rendered, text, parse_html=as_html, edit_id=edit_id)
            except TelegramBadRequest as again:
                if not is_text_problem(again.message):
                    raise
                log.warning("telegram.fallback_refused", error=again.message)
                continue
            log.warning("telegram.sent_fallback", error=first.message, html=as_html, units=len(text))
            return message_id
        raise first

    async def _request(self, chat_id: int, rendered: Rendered, text: str, *, parse_html: bool,
                       edit_id: int | None) -> int:
        markup = None
        if rendered.url:  # the button goes on every message and stays on every edit
            markup = keyboard([button(self.open_button_text(chat_id), url=rendered.url)],
                              [button(label, data=data) for label, data in rendered.buttons])
        async with self.pacing.request(chat_id):
            if edit_id is None:
                message = await self.bot.send_message(
                    chat_id,
                    text,
                    parse_mode="HTML" if parse_html else None,
                    link_preview_options=LinkPreviewOptions(is_disabled=True),
                    disable_notification=rendered.silent,
                    reply_markup=markup,
                    request_timeout=self._timeout,
                )
                return message.message_id
            await self.bot.edit_message_text(
                text=text,
                chat_id=chat_id,
                message_id=edit_id,
                parse_mode="HTML" if parse_html else None,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
                reply_markup=markup,
                request_timeout=self._timeout,
            )
            return edit_id

    async def tell(self, chat_id: int, text: str) -> None:
        """An admin notice: ahead of every lane in the global bucket."""
        async with self.pacing.request(chat_id, urgent=True):
            await self.bot.send_message(chat_id, text, parse_mode="HTML", request_timeout=self._timeout)

    @property
    def _timeout(self) -> int:
        return int(self.send_timeout) or 1
