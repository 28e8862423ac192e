"""Group subscriptions follow the people who made them: a maker who leaves the group, loses its admin rights or is
unlinked no longer feeds it what they may see — their subscriptions and follows there are suspended, once told.

Checked from `chat_member` updates (Telegram sends them to a bot that administers the group) and, for groups where
the bot is not an administrator or an update was missed, with `getChatMember` at least every CHECK_EVERY. The rule
itself is `maker_standing` in bot/chat/access.py; a maker who qualifies again (re-promoted, re-linked) resumes.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from aiogram import Bot, Router
from aiogram.types import ChatMemberUpdated

from bot.chat.access import Standing, maker_standing, viewer_for
from bot.chat.context import ChatContext
from bot.i18n import texts
from bot.notify.markup import escape, truncate

log = structlog.get_logger(__name__)

CHECK_EVERY = timedelta(days=1)  # getChatMember for each group maker at least this often
JOB_EVERY = 600.0  # seconds between runs of the check job (unlinked makers need no request: checked each run)

_WHY = {Standing.LEFT: "maker_left", Standing.NOT_ADMIN: "maker_not_admin", Standing.UNLINKED: "maker_unlinked"}


def build_router() -> Router:
    """Not behind the access check: a chat_member update comes from Telegram about a person, not from a user."""
    router = Router(name="makers")
    router.chat_member.register(on_chat_member)
    return router


async def on_chat_member(update: ChatMemberUpdated, chat: ChatContext, bot: Bot) -> None:
    chat_id, user = update.chat.id, update.new_chat_member.user
    if chat_id >= 0 or (chat_id, user.id) not in chat.prefs.group_makers(chat_id):
        return
    member = update.new_chat_member
    standing = maker_standing(_viewer(chat, user.id), member.status, is_member=getattr(member, "is_member", True))
    await apply_standing(chat, bot, chat_id, user.id, standing, name=user.full_name)


def note_made(chat: ChatContext, chat_id: int, user_id: int) -> None:
    """A group administrator (or bot admin) just made a subscription or follow here: they qualify (again)."""
    if chat_id < 0:
        chat.prefs.record_maker(chat_id, user_id, qualifies=True, reason=Standing.QUALIFIES.value, now=chat.clock())


async def apply_standing(chat: ChatContext, bot: Bot, chat_id: int, user_id: int, standing: Standing,
                         *, name: str | None = None) -> None:
    change = chat.prefs.record_maker(chat_id, user_id, qualifies=standing.qualifies, reason=standing.value,
                                     now=chat.clock())
    if change != "unchanged":
        log.info("chat.maker_" + change, chat=chat_id, user=user_id, reason=standing.value)
    if change == "suspended":
        await tell_group(chat, bot, chat_id, user_id, standing, name=name)


async def tell_group(chat: ChatContext, bot: Bot, chat_id: int, user_id: int, standing: Standing,
                     *, name: str | None = None) -> None:
    """Tell the group once; a failed send stays untold and is tried again by the next check."""
    words = texts(chat.lang(chat_id))
    who = escape(truncate(name, 64)) if name else f"id {user_id}"
    why = words[_WHY.get(standing, "maker_not_admin")]
    try:
        await bot.send_message(chat_id, words["maker_suspended"].format(who=who, why=escape(why)))
    except Exception as exc:  # the group may have removed the bot; the suspension holds either way
        log.warning("chat.maker_notice_failed", chat=chat_id, user=user_id, error=str(exc))
        return
    chat.prefs.mark_told(chat_id, user_id)


async def check_makers(chat: ChatContext, bot: Bot, *, every: timedelta = CHECK_EVERY) -> int:
    """One pass of the periodic check; returns how many getChatMember requests it made."""
    now = chat.clock()
    asked = 0
    for chat_id, user_id in chat.prefs.group_makers():
        viewer = _viewer(chat, user_id)
        if viewer is None:
            await apply_standing(chat, bot, chat_id, user_id, Standing.UNLINKED)
            continue
        checked = chat.prefs.maker_checked_at(chat_id, user_id)
        if checked is not None and now - checked < every:
            continue
        try:
            member = await bot.get_chat_member(chat_id, user_id)
        except Exception as exc:  # Telegram down, or the bot itself is out of the group: try again next run
            log.warning("chat.maker_check_failed", chat=chat_id, user=user_id, error=str(exc))
            continue
        finally:
            asked += 1
        standing = maker_standing(viewer, member.status, is_member=getattr(member, "is_member", True))
        await apply_standing(chat, bot, chat_id, user_id, standing, name=member.user.full_name)
    for chat_id, user_id, reason in chat.prefs.untold_suspensions():
        await tell_group(chat, bot, chat_id, user_id, _standing(reason))
    return asked


def _viewer(chat: ChatContext, user_id: int):
    return viewer_for(user_id, users=chat.settings.users, admin_ids=chat.settings.telegram.admin_ids)


def _standing(value: str) -> Standing:
    try:
        return Standing(value)
    except ValueError:
        return Standing.NOT_ADMIN
