"""Telegram HTML for notifications and chat views alike: escaping, cuts in UTF-16 units, task links, buttons."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.i18n import texts
from bot.notify.planfix_html import truncate, utf16_len

if TYPE_CHECKING:  # aiogram's types load on first use: the renderer alone (benchmarks, the detection side) needs none
    from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

__all__ = [
    "MESSAGE_LIMIT", "NAME_LIMIT", "SHORT_TITLE_LIMIT", "TITLE_LIMIT", "button", "escape", "field", "importance_line",
    "keyboard", "link", "number_link", "open_button", "short_title", "task_header", "task_link", "task_url", "truncate", "utf16_len", "visible_len",
]

MESSAGE_LIMIT = 4096  # Telegram's limit on the text after entity parsing, in UTF-16 code units
TITLE_LIMIT = 300  # a task title in a header
SHORT_TITLE_LIMIT = 80  # a task title in one line of a list or a digest
NAME_LIMIT = 100  # people, groups, statuses, projects
_TAG = re.compile(r"<[^>]*>")


def escape(value: object) -> str:
    """Text safe anywhere in Telegram HTML, attribute values included (quotes escaped too)."""
    return html.escape(str(value), quote=True)


def field(value: str, limit: int = NAME_LIMIT) -> str:
    """A one-line plain-text value, cut before escaping so the cut never lands inside an entity."""
    return escape(truncate(" ".join(str(value).split()), limit))


def visible_len(message: str) -> int:
    """UTF-16 length of what Telegram will show; exact for our output, whose text never holds a raw '<'."""
    return utf16_len(html.unescape(_TAG.sub("", message)))


def task_url(web_url: str, general: int) -> str:
    return f"{web_url.rstrip('/')}/task/{general}"


def link(url: str, label: str) -> str:
    """`label` (already HTML) linked to `url`."""
    return f'<a href="{escape(url)}">{label}</a>'


def task_link(web_url: str, general: int, label: str) -> str:
    """`label` (already HTML) linked to the task."""
    return link(task_url(web_url, general), label)


def number_link(web_url: str, general: int) -> str:
    """"#1234" linked to the task, as lists and digests start their lines."""
    return task_link(web_url, general, f"#{escape(general)}")


def short_title(title: str, lang: str) -> str:
    """A task title for one line of a list or a digest."""
    return field(title, SHORT_TITLE_LIMIT) or escape(texts(lang)["untitled"])


def task_header(icon: str, general: int, title: str, web_url: str, lang: str) -> str:
    """The first line of a notification or a card: icon, bold number, the linked title."""
    label = field(title, TITLE_LIMIT) or escape(texts(lang)["untitled"])
    return f"{icon} <b>#{escape(general)}</b> {task_link(web_url, general, label)}"


def importance_line(importance: str, lang: str) -> str:
    """"❗ Importance: high" — the same words on a notification and a card."""
    words = texts(lang)
    value = escape(words.get(f"importance_{importance}") or importance)
    return f"❗ {words['importance']}: {value}" if importance == "HIGH" else f"{words['importance']}: {value}"


# ── buttons ──────────────────────────────────────────────────────────────────────────────────────────────────


def button(text: str, *, url: str | None = None, data: str | None = None) -> InlineKeyboardButton:
    """A link button (`url`) or a callback button (`data`)."""
    from aiogram.types import InlineKeyboardButton
    if url is not None:
        return InlineKeyboardButton(text=text, url=url)
    return InlineKeyboardButton(text=text, callback_data=data)


def open_button(web_url: str, general: int, lang: str) -> InlineKeyboardButton:
    """"Open in Planfix", on every notification and card."""
    return button(texts(lang)["open"], url=task_url(web_url, general))


def keyboard(*rows: Sequence[InlineKeyboardButton]) -> InlineKeyboardMarkup | None:
    """Inline buttons, empty rows left out; None when there is no button at all."""
    from aiogram.types import InlineKeyboardMarkup

    kept = [list(row) for row in rows if row]
    return InlineKeyboardMarkup(inline_keyboard=kept) if kept else None
