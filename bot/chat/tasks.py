"""/task <number>: the task card, and its buttons — Open in Planfix, Refresh, Follow, Snooze 1 h."""

from __future__ import annotations

import re
from datetime import timedelta

import structlog
from aiogram import Bot, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
)

from bot.chat.access import Viewer, may_change_chat
from bot.chat.callbacks import StatusAct, StatusButton, TaskAct, TaskButton
from bot.chat.context import ChatContext, OverAllowance, PlanfixUnavailable
from bot.chat.lookup import Found, find_task, latest_actions
from bot.chat.views import render_card
from bot.i18n import texts
from bot.notify.markup import button, escape, keyboard, open_button
from state.actions import Actions

log = structlog.get_logger(__name__)

SNOOZE = timedelta(hours=1)
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


def parse_task_number(args: str | None) -> int | None:
    match = re.fullmatch(r"\s*#?(\d{1,12})\s*", args or "")
    return int(match.group(1)) if match else None


def card_keyboard(ctx: ChatContext, general: int, lang: str, *, following: bool) -> InlineKeyboardMarkup:
    words = texts(lang)
    follow = TaskButton(act=TaskAct.UNFOLLOW if following else TaskAct.FOLLOW, number=general)
    # Status ▸ only where writing to Planfix is turned on.
    status = [button(words["status_button"], data=StatusButton(act=StatusAct.MENU, number=general).pack())]
    markup = keyboard(
        [open_button(ctx.web_url, general, lang),
         button(words["refresh"], data=TaskButton(act=TaskAct.REFRESH, number=general).pack())],
        [button(words["unfollow" if following else "follow"], data=follow.pack()),
         button(words["snooze"], data=TaskButton(act=TaskAct.SNOOZE, number=general).pack())],
        status if ctx.settings.actions.enabled else [],
    )
    assert markup is not None
    return markup


async def card(ctx: ChatContext, viewer: Viewer, chat_id: int, number: int, lang: str, *,
               live: bool = False) -> tuple[str, InlineKeyboardMarkup | None]:
    """The card and its buttons, or (the reason in words, None): not found / not visible / try again."""
    text, markup, _ = await card_found(ctx, viewer, chat_id, number, lang, live=live)
    return text, markup


async def card_found(ctx: ChatContext, viewer: Viewer, chat_id: int, number: int, lang: str, *,
                     live: bool = False) -> tuple[str, InlineKeyboardMarkup | None, Found | None]:
    """card(), and what was found (to tell a Refresh answered from the bot's copy)."""
    words = texts(lang)
    try:
        found = await find_task(ctx, viewer, number, lang, live=live)
    except OverAllowance:
        return words["allowance_used"], None, None
    except PlanfixUnavailable:
        return words["unavailable"], None, None
    if found is None:
        return words["not_found"].format(number=number), None, None
    actions = await latest_actions(ctx, found.view.task_id, refresh=live and not found.limited,
                                   user=viewer.telegram_id)
    note = None
    if found.limited:
        note = f"<i>{escape(words['from_copy'].format(time=copy_time(ctx, chat_id)))}</i>"
    text = render_card(found.view, lang=lang, tz=ctx.zone_for(chat_id), now=ctx.clock(), web_url=ctx.web_url,
                       actions=actions, statuses=ctx.statuses(), note=note)
    following = ctx.prefs.is_following(chat_id, found.view.task_id)
    return text, card_keyboard(ctx, found.view.general, lang, following=following), found


def copy_time(ctx: ChatContext, chat_id: int) -> str:
    """When the bot's copy was last brought up to date (the last successful feed poll), in the chat's zone."""
    last = ctx.last_poll()
    return last.astimezone(ctx.zone_for(chat_id)).strftime("%d.%m %H:%M:%S") if last else "—"


def build_router() -> Router:
    router = Router(name="tasks")
    router.message.register(cmd_task, Command("task"))
    router.callback_query.register(on_task_button, TaskButton.filter())
    return router


async def cmd_task(message: Message, command: CommandObject, chat: ChatContext, viewer: Viewer, lang: str) -> None:
    number = parse_task_number(command.args)
    if number is None:
        await message.answer(texts(lang)["task_usage"])
        return
    text, markup = await card(chat, viewer, message.chat.id, number, lang)
    sent = await message.answer(text, reply_markup=markup, link_preview_options=NO_PREVIEW)
    if markup is not None:  # a card: a reply to it comments on this task
        Actions(chat.store.db).remember_message(sent.chat.id, sent.message_id, 0, number, chat.clock())


async def on_task_button(query: CallbackQuery, callback_data: TaskButton, chat: ChatContext, viewer: Viewer,
                         lang: str, bot: Bot) -> None:
    words = texts(lang)
    message = query.message
    if not isinstance(message, Message):  # too old for Telegram to show us
        await query.answer(words["expired"], show_alert=True)
        return
    number = callback_data.number
    if callback_data.act == TaskAct.REFRESH:
        text, markup, found = await card_found(chat, viewer, message.chat.id, number, lang, live=True)
        if markup is None:  # not found, not visible, or Planfix down: say so, show nothing
            await query.answer(text, show_alert=True)
            return
        await _edit(message, text, markup)
        if found is not None and found.limited:
            await query.answer(words["from_copy"].format(time=copy_time(chat, message.chat.id)), show_alert=True)
        else:
            await query.answer(words["refreshed"])
        return
    if not await may_change_chat(bot, message.chat, viewer):
        await query.answer(words["not_chat_admin"], show_alert=True)
        return
    try:
        found = await find_task(chat, viewer, number, lang)
    except PlanfixUnavailable:
        await query.answer(words["unavailable"], show_alert=True)
        return
    if found is None:
        await query.answer(words["not_found"].format(number=number), show_alert=True)
        return
    await _act(query, message, callback_data.act, found, chat, viewer, lang)


async def _act(query: CallbackQuery, message: Message, act: TaskAct, found: Found, ctx: ChatContext, viewer: Viewer,
               lang: str) -> None:
    words = texts(lang)
    chat_id, view, now = message.chat.id, found.view, ctx.clock()
    if act == TaskAct.SNOOZE:
        until = now + SNOOZE
        ctx.prefs.snooze(chat_id, view.task_id, until)
        ctx.prefs.release_pending(chat_id, now)  # anything already waiting is held again by the sender
        ctx.wake_sender()
        log.info("chat.snoozed", chat=chat_id, task=view.general, until=until.isoformat())
        local = until.astimezone(ctx.zone_for(chat_id)).strftime("%H:%M")
        await query.answer(words["snoozed"].format(number=view.general, until=local), show_alert=True)
        return
    if act == TaskAct.FOLLOW:
        ctx.prefs.follow(chat_id, view.task_id, view.general, viewer.telegram_id, now)
        answer = words["following"].format(number=view.general)
    else:
        ctx.prefs.unfollow(chat_id, view.task_id)
        answer = words["unfollowed"].format(number=view.general)
    log.info("chat.follow", chat=chat_id, task=view.general, follow=act == TaskAct.FOLLOW, by=viewer.telegram_id)
    markup = card_keyboard(ctx, view.general, lang, following=act == TaskAct.FOLLOW)
    try:
        await message.edit_reply_markup(reply_markup=markup)
    except TelegramBadRequest as exc:
        if "not modified" not in str(exc):
            log.info("chat.edit_failed", chat=chat_id, error=str(exc))
    await query.answer(answer)


async def _edit(message: Message, text: str, markup: InlineKeyboardMarkup) -> None:
    try:
        await message.edit_text(text, reply_markup=markup, link_preview_options=NO_PREVIEW)
    except TelegramBadRequest as exc:
        if "not modified" not in str(exc):
            raise
