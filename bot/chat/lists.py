"""/my, /today, /overdue and /find: task lists from the stored snapshots, 10 per page, ◀ ▶ edit the message.

Lists are answered from the snapshots the watcher keeps (no Planfix request) while the feed is fresh. When it is
not, the tasks of the page are re-read from Planfix (one task.getMulti, interactive priority) and the list says
how old the rest is; if Planfix does not answer either, the answer is "try again". Who may see each task is
decided by `may_see`, after the SQL has narrowed the candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import structlog
from aiogram import Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, LinkPreviewOptions, Message

from bot.chat.access import Viewer, may_see, sql_prefilter
from bot.chat.callbacks import ListKind, ListPage
from bot.chat.context import ChatContext, OverAllowance, PlanfixUnavailable
from bot.chat.views import TaskView, render_line
from bot.i18n import texts
from bot.notify.markup import button, escape, keyboard, truncate
from bot.planfix.errors import PlanfixItemError

log = structlog.get_logger(__name__)

PAGE_SIZE = 10
QUERY_LIMIT = 100  # characters of a /find query kept and shown
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


class NotLinked(Exception):
    """A "my …" list for a viewer who is not linked to a Planfix user."""


@dataclass(frozen=True)
class ListRequest:
    kind: ListKind
    owner: int  # the Telegram user who asked (only they may page it)
    query: str = ""
    query_id: int = 0


def build_router() -> Router:
    router = Router(name="lists")
    router.message.register(cmd_my, Command("my"))
    router.message.register(cmd_today, Command("today"))
    router.message.register(cmd_overdue, Command("overdue"))
    router.message.register(cmd_find, Command("find"))
    router.callback_query.register(on_page, ListPage.filter())
    return router


# ── what is in each list ─────────────────────────────────────────────────────────────────────────────────────


def collect(ctx: ChatContext, viewer: Viewer, request: ListRequest, chat_id: int, lang: str) -> list[TaskView]:
    """Every task of the list, in display order, each one the viewer may see."""
    now = ctx.clock()
    kind = request.kind
    statuses = ctx.statuses()
    if kind == ListKind.FIND:
        return _found(ctx, viewer, request.query, lang)
    if kind == ListKind.OVERDUE and viewer.is_admin:
        views = [TaskView.from_data(d, statuses, lang) for d in ctx.tasks.active_due_by(now)]
    else:
        if viewer.planfix_id is None:
            raise NotLinked
        mine = [TaskView.from_data(d, statuses, lang) for d in ctx.tasks.active_of_worker(viewer.planfix_id)]
        views = [v for v in mine if viewer.planfix_id in v.workers]
        if kind == ListKind.OVERDUE:
            views = [v for v in views if v.overdue(now)]
        elif kind == ListKind.TODAY:
            views = [v for v in views if due_on(v, now, ctx.zone_for(chat_id))]
    return sorted((v for v in views if may_see(viewer, v)), key=TaskView.sort_key)


def due_on(view: TaskView, now: datetime, zone: ZoneInfo) -> bool:
    """Due on today's date in `zone` (a date-only deadline is its calendar date)."""
    if not view.deadline or view.deadline_due is None:
        return False
    today = now.astimezone(zone).date()
    if len(view.deadline) == 10:
        return view.deadline == today.isoformat()
    return datetime.fromtimestamp(view.deadline_due, zone).date() == today


def _found(ctx: ChatContext, viewer: Viewer, query: str, lang: str) -> list[TaskView]:
    words = query.casefold().split()
    if not words:
        return []
    titles = ctx.tasks.titles(participant=sql_prefilter(viewer))
    ids = [task_id for task_id, title in titles if all(w in title.casefold() for w in words)]
    statuses = ctx.statuses()
    views = [v for v in (TaskView.from_data(d, statuses, lang) for d in ctx.tasks.by_ids(ids)) if may_see(viewer, v)]
    return sorted(views, key=lambda v: (not v.is_active, -v.general))


# ── one page ─────────────────────────────────────────────────────────────────────────────────────────────────


async def page_of(ctx: ChatContext, viewer: Viewer, request: ListRequest, page: int, chat_id: int,
                  lang: str) -> tuple[str, InlineKeyboardMarkup | None]:
    """The text and buttons of one page (clamped into range)."""
    words = texts(lang)
    try:
        views = collect(ctx, viewer, request, chat_id, lang)
    except NotLinked:
        return words["not_linked"], None
    pages = max(1, math.ceil(len(views) / PAGE_SIZE))
    page = min(max(page, 0), pages - 1)
    shown = views[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    note = ""
    if not ctx.fresh():
        last = ctx.last_poll()
        if last is None and not views:  # nothing read from Planfix yet in this run: an empty list would mislead
            raise PlanfixUnavailable("no poll yet")
        try:
            shown = await _reread(ctx, viewer, shown, lang)
        except OverAllowance:
            pass  # asked too often: the bot's copy, and the note below says how old it is
        when = last.astimezone(ctx.zone_for(chat_id)).strftime("%d.%m %H:%M") if last else "—"
        note = escape(words["stale"].format(time=when))
    now, zone = ctx.clock(), ctx.zone_for(chat_id)
    header = _title(request, viewer, words)
    if not views:
        empty = {ListKind.MY: "empty_my", ListKind.TODAY: "empty_today", ListKind.OVERDUE: "empty_overdue",
                 ListKind.FIND: "empty_find"}[request.kind]
        text = escape(words[empty].format(query=_shown_query(request.query)))
        return (text + ("\n" + note if note else "")), None
    lines = [header, escape(words["list_count"].format(n=len(views), page=page + 1, pages=pages))]
    if note:
        lines.append(note)
    lines.append("")
    lines += [render_line(v, lang=lang, tz=zone, now=now, web_url=ctx.web_url) for v in shown]
    return "\n".join(lines), _buttons(request, page, pages)


async def _reread(ctx: ChatContext, viewer: Viewer, shown: list[TaskView], lang: str) -> list[TaskView]:
    """The page's tasks as Planfix shows them now (the feed is not fresh); raises PlanfixUnavailable."""
    if not shown:
        return shown
    try:
        tasks = await ctx.ask(lambda: ctx.client.task_get_multi([v.task_id for v in shown]), what="task.getMulti",
                              user=viewer.telegram_id)
    except PlanfixItemError:  # one task of the page answered 3002 & co: keep the copy (the note says how old)
        return shown
    live = {t.id: TaskView.from_task(t, ctx.statuses(), lang) for t in tasks}
    return [live[v.task_id] for v in shown if v.task_id in live and may_see(viewer, live[v.task_id])]


def _title(request: ListRequest, viewer: Viewer, words: dict[str, str]) -> str:
    if request.kind == ListKind.FIND:
        return words["list_find"].format(query=escape(_shown_query(request.query)))
    if request.kind == ListKind.OVERDUE and viewer.is_admin:
        return words["list_overdue_all"]
    return words[f"list_{request.kind.value}"]


def _shown_query(query: str) -> str:
    return truncate(" ".join(query.split()), 60)


def _buttons(request: ListRequest, page: int, pages: int) -> InlineKeyboardMarkup | None:
    row = []
    if page > 0:
        row.append(button("◀", data=ListPage(
            kind=request.kind, page=page - 1, owner=request.owner, query=request.query_id).pack()))
    if page < pages - 1:
        row.append(button("▶", data=ListPage(
            kind=request.kind, page=page + 1, owner=request.owner, query=request.query_id).pack()))
    return keyboard(row)


# ── handlers ─────────────────────────────────────────────────────────────────────────────────────────────────


async def _answer(message: Message, ctx: ChatContext, viewer: Viewer, request: ListRequest, lang: str) -> None:
    try:
        text, markup = await page_of(ctx, viewer, request, 0, message.chat.id, lang)
    except PlanfixUnavailable:
        text, markup = texts(lang)["unavailable"], None
    await message.answer(text, reply_markup=markup, link_preview_options=NO_PREVIEW)


async def cmd_my(message: Message, chat: ChatContext, viewer: Viewer, lang: str) -> None:
    await _answer(message, chat, viewer, ListRequest(ListKind.MY, viewer.telegram_id), lang)


async def cmd_today(message: Message, chat: ChatContext, viewer: Viewer, lang: str) -> None:
    await _answer(message, chat, viewer, ListRequest(ListKind.TODAY, viewer.telegram_id), lang)


async def cmd_overdue(message: Message, chat: ChatContext, viewer: Viewer, lang: str) -> None:
    await _answer(message, chat, viewer, ListRequest(ListKind.OVERDUE, viewer.telegram_id), lang)


async def cmd_find(message: Message, command: CommandObject, chat: ChatContext, viewer: Viewer, lang: str) -> None:
    query = " ".join((command.args or "").split())[:QUERY_LIMIT]
    if not query:
        await message.answer(texts(lang)["find_usage"])
        return
    now = chat.clock()
    chat.prefs.prune(now)
    query_id = chat.prefs.save_list(message.chat.id, viewer.telegram_id, ListKind.FIND.value, query, now)
    await _answer(message, chat, viewer, ListRequest(ListKind.FIND, viewer.telegram_id, query, query_id), lang)


async def on_page(query: CallbackQuery, callback_data: ListPage, chat: ChatContext, viewer: Viewer, lang: str) -> None:
    words = texts(lang)
    message = query.message
    if not isinstance(message, Message):
        await query.answer(words["expired"], show_alert=True)
        return
    if callback_data.owner != viewer.telegram_id:
        await query.answer(words["list_foreign"], show_alert=True)
        return
    request = ListRequest(callback_data.kind, viewer.telegram_id)
    if callback_data.kind == ListKind.FIND:
        saved = chat.prefs.list_query(callback_data.query)
        if saved is None or saved.chat_id != message.chat.id or saved.user_id != viewer.telegram_id:
            await query.answer(words["expired"], show_alert=True)
            return
        request = ListRequest(ListKind.FIND, viewer.telegram_id, saved.query, saved.id)
    try:
        text, markup = await page_of(chat, viewer, request, callback_data.page, message.chat.id, lang)
    except PlanfixUnavailable:
        await query.answer(words["unavailable"], show_alert=True)
        return
    try:
        await message.edit_text(text, reply_markup=markup, link_preview_options=NO_PREVIEW)
    except TelegramBadRequest as exc:
        if "not modified" not in str(exc):
            raise
    await query.answer()
