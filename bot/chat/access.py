"""Who may use the bot and which tasks each person may see: the one place that decides visibility.

`may_see` is the only visibility decision in the code base: every command, every inline button and every
subscription (bot/chat/audience.py) asks it, about a live Planfix card, a stored snapshot or an event alike.
SQL may narrow candidates first, but never decides. `AccessMiddleware` guards every message and button handler:
strangers get a short refusal with no data.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import structlog
from aiogram import BaseMiddleware, Bot
from aiogram.enums import ChatType
from aiogram.types import CallbackQuery, Chat, Message, TelegramObject

from bot.config import UserLink
from bot.i18n import texts
from bot.planfix.models import Task

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Viewer:
    """A Telegram user allowed to use commands: a bot admin, a linked Planfix user, or both."""

    telegram_id: int
    planfix_id: int | None
    is_admin: bool


def viewer_for(telegram_id: int | None, *, users: Sequence[UserLink], admin_ids: Sequence[int]) -> Viewer | None:
    """The viewer for a Telegram user id, or None for a stranger."""
    if telegram_id is None:
        return None
    link = next((u for u in users if u.telegram_id == telegram_id), None)
    is_admin = telegram_id in admin_ids
    if link is None and not is_admin:
        return None
    return Viewer(telegram_id, link.planfix_id if link else None, is_admin)


class HasParticipants(Protocol):
    """A snapshot, an event or a task view: `participants` holds the Planfix user ids taking part."""

    participants: Any


def participants_of(item: Task | HasParticipants) -> frozenset[int]:
    if isinstance(item, Task):
        return item.participant_ids()
    return frozenset(int(p) for p in (item.participants or ()))


def may_see(viewer: Viewer, item: Task | HasParticipants) -> bool:
    """Admins see every task the API token sees; a linked user only tasks their Planfix user takes part in (owner,
    assignee, participant, auditor). `item` is a live card (Task), a stored Snapshot, an Event or a TaskView."""
    if viewer.is_admin:
        return True
    return viewer.planfix_id is not None and viewer.planfix_id in participants_of(item)


def sql_prefilter(viewer: Viewer) -> int | None:
    """The Planfix user id by which SQL may narrow the candidate tasks before `may_see` decides on each one, or
    None when no narrowing is possible (an admin may see every task)."""
    return None if viewer.is_admin else viewer.planfix_id


async def may_change_chat(bot: Bot, chat: Chat, viewer: Viewer) -> bool:
    """Whether this user may change the chat's subscriptions, mute or language: their own private chat, or a group
    they administer (getChatMember), or anywhere for a bot admin."""
    if viewer.is_admin or chat.type == ChatType.PRIVATE:
        return True
    try:
        member = await bot.get_chat_member(chat.id, viewer.telegram_id)
    except Exception as exc:  # Telegram down or the bot not in the chat any more: refuse, say why in the log
        log.warning("chat.admin_check_failed", chat=chat.id, user=viewer.telegram_id, error=str(exc))
        return False
    return member.status in ("creator", "administrator")


class Standing(Enum):
    """Whether the person who made a group's subscription or follow still qualifies to have it, and why not."""

    QUALIFIES = "qualifies"
    UNLINKED = "unlinked"  # no longer in [[users]] nor telegram.admin_ids
    LEFT = "left"  # left the group or was removed from it
    NOT_ADMIN = "not_admin"  # still in the group, no longer its administrator (bot admins need not be)

    @property
    def qualifies(self) -> bool:
        return self is Standing.QUALIFIES


IN_GROUP = frozenset({"creator", "administrator", "member", "restricted"})
GROUP_ADMIN = frozenset({"creator", "administrator"})


def maker_standing(viewer: Viewer | None, member_status: str, *, is_member: bool = True) -> Standing:
    """A maker's standing from what Telegram says of them in the group (ChatMember status; a restricted member
    may have left: `is_member`). The same rule as `may_change_chat`, plus: they must still be in the group."""
    if viewer is None:
        return Standing.UNLINKED
    if member_status not in IN_GROUP or (member_status == "restricted" and not is_member):
        return Standing.LEFT
    if viewer.is_admin or member_status in GROUP_ADMIN:
        return Standing.QUALIFIES
    return Standing.NOT_ADMIN


class AccessMiddleware(BaseMiddleware):
    """Lets listed users and admins through with a `viewer` and the chat's `lang`; gives everyone else a short
    refusal (their own Telegram id, nothing else). Inner middleware: runs only for updates a handler matched."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        ctx = data["chat"]
        user = getattr(event, "from_user", None)
        message = event.message if isinstance(event, CallbackQuery) else event
        chat_id = message.chat.id if isinstance(message, Message) else (user.id if user else 0)
        ctx.follow_migration(chat_id)
        lang = ctx.lang(chat_id)
        viewer = viewer_for(
            user.id if user else None, users=ctx.settings.users, admin_ids=ctx.settings.telegram.admin_ids
        )
        if viewer is None:
            log.info("chat.refused", user=user.id if user else None, chat=chat_id)
            text = texts(lang)["refused"].format(user_id=user.id if user else "?")
            if isinstance(event, Message):
                await event.answer(text)
            elif isinstance(event, CallbackQuery):
                await event.answer(text, show_alert=True)
            return None
        data["viewer"] = viewer
        data["lang"] = lang
        return await handler(event, data)


async def may_change_or_refuse(message: Message, bot: Bot, viewer: Viewer, lang: str) -> bool:
    """`may_change_chat`, answering the short "chat administrators only" refusal when it says no."""
    if await may_change_chat(bot, message.chat, viewer):
        return True
    await message.answer(texts(lang)["not_chat_admin"])
    return False
