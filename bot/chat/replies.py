"""Telegram side of writing to Planfix: replies and /comment become comments, Status ▸ changes status."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import structlog
from aiogram import Bot, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    ReplyParameters,
    Update,
)

from bot.chat.access import Viewer
from bot.chat.actions import RECOVER_WITHIN, ActionDesk, Outcome, Result, is_our_write, text_of
from bot.chat.callbacks import StatusAct, StatusButton, TaskAct, TaskButton
from bot.chat.context import ChatContext
from bot.chat.tasks import parse_task_number
from bot.config import Settings
from bot.events import OVERDUE, REMINDER, Event
from bot.i18n import texts
from bot.notify.markup import button, escape, keyboard, open_button
from bot.planfix.models import Action, PersonRef
from state.actions import Actions, Write
from state.records import DeliveryRow

log = structlog.get_logger(__name__)

NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
QUOTE_LIMIT = 3500  # characters of the person's own text quoted back (Telegram's message limit is 4096)


def desk_of(ctx: ChatContext) -> ActionDesk:
    """One ActionDesk per ChatContext (its owner-refused flag and status lists live as long as the daemon)."""
    desk = getattr(ctx, "_action_desk", None)
    if desk is None:
        desk = ActionDesk(ctx, Actions(ctx.store.db))
        ctx._action_desk = desk  # type: ignore[attr-defined]
    return desk


def status_button(number: int, lang: str) -> InlineKeyboardButton:
    return button(texts(lang)["status_button"], data=StatusButton(act=StatusAct.MENU, number=number).pack())


def telegram_name(message: Message | CallbackQuery) -> str:
    user = message.from_user
    return user.full_name if user else "?"


async def is_reply_to_bot(message: Message, chat: ChatContext, bot: Bot) -> bool:
    """A reply to one of this bot's own messages, when writing to Planfix is on (else such replies pass by)."""
    replied = message.reply_to_message
    return (chat.settings.actions.enabled and replied is not None and replied.from_user is not None
            and replied.from_user.id == bot.id)


def build_router() -> Router:
    router = Router(name="actions")
    router.message.register(cmd_comment, Command("comment"))
    router.message.register(on_reply, is_reply_to_bot)
    router.callback_query.register(on_status_button, StatusButton.filter())
    return router


def _key(update: Update | None, message: Message) -> str:
    """One Telegram update asking for one write: the same on a redelivery, never reused (update ids may restart
    after a quiet week, message ids in a chat do not)."""
    update_id = update.update_id if update is not None else 0
    return f"u:{update_id}:{message.chat.id}:{message.message_id}"


async def cmd_comment(message: Message, command: CommandObject, chat: ChatContext, viewer: Viewer, lang: str,
                      event_update: Update | None = None) -> None:
    words = texts(lang)
    if not chat.settings.actions.enabled:
        await message.answer(words["disabled"])
        return
    number_text, _, text = (command.args or "").strip().partition(" ")
    number = parse_task_number(number_text)
    if number is None or not text.strip():
        await message.answer(words["comment_usage"])
        return
    await _comment(message, chat, viewer, lang, number, text, _key(event_update, message))


async def on_reply(message: Message, chat: ChatContext, viewer: Viewer, lang: str,
                   event_update: Update | None = None) -> None:
    words = texts(lang)
    assert message.reply_to_message is not None
    if not message.text:
        await message.reply(words["only_text"])
        return
    about = desk_of(chat).actions.task_of_message(message.chat.id, message.reply_to_message.message_id)
    number, text = (about.general, message.text) if about is not None else _numbered(message.text)
    if number is None:  # a list or a digest: many tasks, and the reply does not start with "#number"
        await message.reply(words["which_task"])
        return
    await _comment(message, chat, viewer, lang, number, text, _key(event_update, message))


def _numbered(text: str) -> tuple[int | None, str]:
    """"#1234 the comment": for replies to a message about many tasks (a list, a digest)."""
    match = re.fullmatch(r"\s*#(\d{1,12})\s+(.+)", text, flags=re.DOTALL)
    return (int(match.group(1)), match.group(2)) if match else (None, text)


async def _comment(message: Message, ctx: ChatContext, viewer: Viewer, lang: str, number: int, text: str,
                   key: str) -> None:
    desk = desk_of(ctx)
    result = await desk.act(key=key, viewer=viewer, telegram_name=telegram_name(message), chat_id=message.chat.id,
                            number=number, text=text)
    await tell(message.bot, ctx, desk, message.chat.id, result, lang, number=number, text=text,
               reply_to=message.message_id)


async def tell(bot: Bot | None, ctx: ChatContext, desk: ActionDesk, chat_id: int, result: Result, lang: str, *,
               number: int, text: str, reply_to: int | None = None) -> None:
    """The brief answer to a comment: a confirmation with the task's link, or the reason with the text quoted back
    (nothing typed is lost)."""
    assert bot is not None
    words = texts(lang)
    if result.outcome == Outcome.DONE and result.write is not None and result.write.new_status is not None:
        body = words["status_changed"].format(number=number, status=escape(text))
    elif result.outcome == Outcome.DONE:
        body = words["comment_added"].format(number=number)
    elif result.outcome == Outcome.NOT_FOUND:
        body = words["not_saved"].format(reason=words["reason_not_found"].format(number=number))
    elif result.outcome == Outcome.REFUSED:
        body = words["not_saved"].format(reason=escape(result.reason))
    elif result.outcome == Outcome.UNCERTAIN:
        body = words["uncertain"]
    else:
        body = words["not_saved"].format(reason=words["reason_unavailable"])
    if result.outcome != Outcome.DONE:
        quoted = escape(text.strip()[:QUOTE_LIMIT])
        body += f"\n{words['your_text']}\n<blockquote>{quoted}</blockquote>"
    markup = None
    if result.outcome in (Outcome.DONE, Outcome.UNCERTAIN, Outcome.REFUSED):
        markup = keyboard([open_button(ctx.web_url, number, lang)])
    sent = await bot.send_message(
        chat_id, body, reply_markup=markup, link_preview_options=NO_PREVIEW,
        reply_parameters=ReplyParameters(message_id=reply_to, allow_sending_without_reply=True) if reply_to else None,
    )
    if result.write is not None and result.outcome == Outcome.DONE:
        # A reply to the confirmation comments on the same task again.
        desk.actions.remember_message(chat_id, sent.message_id, result.write.task_id, number, ctx.clock())


# ── the Status ▸ button ─────────────────────────────────────────────────────────────────────────────────────


def _without_status_rows(markup: InlineKeyboardMarkup | None) -> list[list[InlineKeyboardButton]]:
    rows = markup.inline_keyboard if markup else []
    keep = []
    for row in rows:
        datas = [b.callback_data or "" for b in row]
        if any(d.startswith(("a1:s:", "a1:x:")) for d in datas):
            continue
        keep.append(list(row))
    return keep


async def on_status_button(query: CallbackQuery, callback_data: StatusButton, chat: ChatContext, viewer: Viewer,
                           lang: str, bot: Bot) -> None:
    words = texts(lang)
    message = query.message
    if not isinstance(message, Message):
        await query.answer(words["expired"], show_alert=True)
        return
    if not chat.settings.actions.enabled:
        await query.answer(words["disabled"], show_alert=True)
        return
    desk, number = desk_of(chat), callback_data.number
    if callback_data.act == StatusAct.CLOSE:
        await _set_markup(message, _without_status_rows(message.reply_markup))
        await query.answer()
        return
    if callback_data.act == StatusAct.MENU:
        await _show_statuses(query, message, desk, viewer, lang, number)
        return
    statuses = chat.statuses()
    target = statuses.get(callback_data.status)
    name = target.name_in(lang) if target else f"#{callback_data.status}"
    result = await desk.act(key=f"c:{query.id}", viewer=viewer, telegram_name=telegram_name(query),
                            chat_id=message.chat.id, number=number, new_status=callback_data.status,
                            status_name=name)
    if result.outcome == Outcome.DONE:
        who = escape(result.write.actor_name if result.write else telegram_name(query))
        line = words["status_line"].format(status=escape(name), name=who)
        rows = _without_status_rows(message.reply_markup)
        if not result.again:
            try:
                await message.edit_text(f"{message.html_text}\n\n{line}", link_preview_options=NO_PREVIEW,
                                        reply_markup=keyboard(*rows))
            except TelegramBadRequest as exc:
                log.info("chat.edit_failed", chat=message.chat.id, error=str(exc))
        await query.answer(words["status_changed"].format(number=number, status=name))
        return
    if result.outcome == Outcome.REFUSED:
        await query.answer(words["status_refused"].format(reason=result.reason)[:190], show_alert=True)
    elif result.outcome == Outcome.NOT_FOUND:
        await query.answer(words["not_found"].format(number=number), show_alert=True)
    elif result.outcome == Outcome.UNCERTAIN:
        await query.answer(words["uncertain"][:190], show_alert=True)
    else:
        await query.answer(words["unavailable"], show_alert=True)


async def _show_statuses(query: CallbackQuery, message: Message, desk: ActionDesk, viewer: Viewer, lang: str,
                         number: int) -> None:
    words = texts(lang)
    try:
        task = await desk.visible_task(viewer, number)
        statuses = await desk.statuses_of(task) if task is not None else []
    except Exception as exc:  # Planfix down or slow: say so, change nothing
        log.warning("chat.planfix_unavailable", what="status menu", error=str(exc) or type(exc).__name__)
        await query.answer(words["unavailable"], show_alert=True)
        return
    if task is None:
        await query.answer(words["not_found"].format(number=number), show_alert=True)
        return
    choices = [s for s in statuses if s.id != task.status]
    if not choices:
        await query.answer(words["no_other_status"], show_alert=True)
        return
    buttons = [button(s.name_in(lang)[:40], data=StatusButton(act=StatusAct.SET, number=number, status=s.id).pack())
               for s in choices]
    rows = _without_status_rows(message.reply_markup)
    rows += [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    rows.append([button(words["status_close"], data=StatusButton(act=StatusAct.CLOSE, number=number).pack())])
    await _set_markup(message, rows)
    await query.answer(words["choose_status"])


async def _set_markup(message: Message, rows: list[list[InlineKeyboardButton]]) -> None:
    try:
        await message.edit_reply_markup(reply_markup=InlineKeyboardMarkup(inline_keyboard=rows))
    except TelegramBadRequest as exc:
        if "not modified" not in str(exc):
            log.info("chat.edit_failed", chat=message.chat.id, error=str(exc))


# ── buttons under notifications, and the feed's view of our own actions ───────────────────────────────────────


def notice_buttons(settings: Settings) -> Callable[[Sequence[Event], int, str], list[tuple[str, str]]]:
    """Buttons under a notification: Snooze 1 h under reminders and overdue notices (as on /task cards), and
    Status ▸ under personal notices (private chats) when writing to Planfix is on."""
    people = {u.telegram_id for u in settings.users} | set(settings.telegram.admin_ids)

    def buttons(events: Sequence[Event], chat_id: int, lang: str) -> list[tuple[str, str]]:
        last = events[-1]
        if last.task_general <= 0:
            return []
        found: list[tuple[str, str]] = []
        if settings.actions.enabled and chat_id in people:
            found.append((texts(lang)["status_button"],
                          StatusButton(act=StatusAct.MENU, number=last.task_general).pack()))
        if last.kind in (REMINDER, OVERDUE):
            found.append((texts(lang)["snooze"], TaskButton(act=TaskAct.SNOOZE, number=last.task_general).pack()))
        return found

    return buttons


def attribute_own(actions: Actions, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                  unsettled: dict[int, Write] | None = None) -> Callable[[list[Action]], list[Action]]:
    """For the feed: an action we wrote from Telegram is shown as the person's, also when Planfix recorded the API
    user as its author (then the person's Planfix id, so personal routing skips them as the actor). A write still
    unsettled (the process died before Planfix's answer was recorded) is recognised by its text, as recovery does
    (`is_our_write`), so a comment posted for someone is not told back to them after a crash; such matches are
    also noted in `unsettled` (action id → write) for `skip_own_actor`."""

    def attribute(fresh: list[Action]) -> list[Action]:
        ours = actions.authors([a.id for a in fresh])
        pending = [w for w in actions.unfinished(clock() - RECOVER_WITHIN) if w.description] if fresh else []
        if pending:
            claimed = set(ours)
            for action in fresh:
                write = None if action.id in ours else next(
                    (w for w in pending if is_our_write(action, w, claimed)), None)
                if write is not None:
                    ours[action.id] = write
                    claimed.add(action.id)
                    pending.remove(write)
                    if unsettled is not None:
                        unsettled[action.id] = write
        if not ours:
            return fresh
        result = []
        for action in fresh:
            write = ours.get(action.id)
            if write is not None:
                owner_id = write.planfix_id if write.planfix_id is not None else (action.owner.id if action.owner else 0)
                # Written as the API user, the text starts with the person's name: the notice names them already.
                prefix = f"<b>{html.escape(write.actor_name, quote=False)}</b>: "
                action = dataclasses.replace(action, owner=PersonRef(owner_id, write.actor_name),
                                             description=action.description.removeprefix(prefix))
            result.append(action)
        return result

    return attribute


def skip_own_actor(actions: Actions, rows: list[DeliveryRow], event: Event,
                   unsettled: dict[int, Write] | None = None) -> list[DeliveryRow]:
    """The person who made a change from Telegram is not told about it in their private chat (an admin without a
    linked Planfix user included); everyone else is, as usual."""
    if event.action_id is None:
        return rows
    write = actions.authors([event.action_id]).get(event.action_id) or (unsettled or {}).get(event.action_id)
    if write is None:
        return rows
    return [r for r in rows if r.chat_id != write.user_id]


RECOVER_AFTER = 5.0  # seconds after start-up: updates Telegram redelivers settle their own writes first


async def recover_writes(bot: Bot, ctx: ChatContext, *, delay: float = RECOVER_AFTER) -> None:
    """Shortly after start-up: settle the writes a previous process left without a result (an update Telegram
    redelivers meanwhile settles its own), and tell each person what became of theirs (the confirmation, or their
    text back)."""
    if not ctx.settings.actions.enabled:
        return
    await asyncio.sleep(delay)
    desk = desk_of(ctx)
    try:
        results = await desk.recover()
    except Exception:  # a bug here must not take the chat down; the intents stay for the next start
        log.exception("chat.recover_failed")
        return
    for result in results:
        write = result.write
        if write is None:
            continue
        text = _person_text(write.description, write.actor_name)
        try:
            await tell(bot, ctx, desk, write.chat_id, result, ctx.lang(write.chat_id), number=write.general, text=text)
        except Exception as exc:  # Telegram refusing one message must not stop the others
            log.warning("chat.recover_tell_failed", chat=write.chat_id, error=str(exc))


def _person_text(description: str, name: str) -> str:
    """The person's own words back from the Planfix HTML we sent (without the name we put in front)."""
    prefix = f"<b>{html.escape(name, quote=False)}</b>: "
    return text_of(description.removeprefix(prefix))
