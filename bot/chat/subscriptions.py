"""/follow, /unfollow, /subscribe, /unsubscribe, /subscriptions: what a chat hears about besides its [[routes]].

Stored in the state file (state/prefs.py) and used by routing (bot/chat/audience.py). Each subscription and
follow remembers who made it and never shows more than that person may see (`may_see`, checked for every event).
In groups only the group's administrators and the bot's admins may change them, and what they made there is
suspended when they leave the group or lose its admin rights (bot/chat/makers.py).
"""

from __future__ import annotations

import structlog
from aiogram import Bot, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.chat.access import Viewer, may_change_or_refuse, may_see, sql_prefilter, viewer_for
from bot.chat.context import ChatContext, PlanfixUnavailable
from bot.chat.lookup import find_task
from bot.chat.makers import note_made
from bot.chat.tasks import parse_task_number
from bot.chat.views import TaskView
from bot.events import COMMENT, DEADLINE, EVENT_KINDS, OVERDUE, REMINDER, STATUS
from bot.i18n import texts
from bot.notify.markup import escape, truncate
from state.prefs import ALL_PROJECTS

log = structlog.get_logger(__name__)

KINDS = (STATUS, DEADLINE, OVERDUE, REMINDER, COMMENT)
_ALL_WORDS = {"all", "*", "все", "всё"}


def build_router() -> Router:
    router = Router(name="subscriptions")
    router.message.register(cmd_follow, Command("follow"))
    router.message.register(cmd_unfollow, Command("unfollow"))
    router.message.register(cmd_subscribe, Command("subscribe"))
    router.message.register(cmd_unsubscribe, Command("unsubscribe"))
    router.message.register(cmd_subscriptions, Command("subscriptions"))
    return router


async def cmd_follow(message: Message, command: CommandObject, chat: ChatContext, viewer: Viewer, lang: str,
                     bot: Bot) -> None:
    words = texts(lang)
    number = parse_task_number(command.args)
    if number is None:
        await message.answer(words["follow_usage"])
        return
    if not await may_change_or_refuse(message, bot, viewer, lang):
        return
    try:
        found = await find_task(chat, viewer, number, lang)
    except PlanfixUnavailable:
        await message.answer(words["unavailable"])
        return
    if found is None:
        await message.answer(words["not_found"].format(number=number))
        return
    new = chat.prefs.follow(message.chat.id, found.view.task_id, found.view.general, viewer.telegram_id, chat.clock())
    note_made(chat, message.chat.id, viewer.telegram_id)
    log.info("chat.follow", chat=message.chat.id, task=number, follow=True, by=viewer.telegram_id)
    await message.answer(words["following" if new else "already_following"].format(number=number))


async def cmd_unfollow(message: Message, command: CommandObject, chat: ChatContext, viewer: Viewer, lang: str,
                       bot: Bot) -> None:
    words = texts(lang)
    number = parse_task_number(command.args)
    if number is None:
        await message.answer(words["unfollow_usage"])
        return
    if not await may_change_or_refuse(message, bot, viewer, lang):
        return
    # By number among this chat's own follows: nothing about the task is revealed, so no visibility check needed.
    follow = next((f for f in chat.prefs.follows(message.chat.id) if f.general == number), None)
    if follow is None or not chat.prefs.unfollow(message.chat.id, follow.task_id):
        await message.answer(words["not_following"].format(number=number))
        return
    log.info("chat.follow", chat=message.chat.id, task=number, follow=False, by=viewer.telegram_id)
    await message.answer(words["unfollowed"].format(number=number))


def parse_subscription(args: str | None) -> tuple[str, list[str]]:
    """("" for every project, a number or a project name; the event kinds named, in order)."""
    tokens = (args or "").split()
    kinds = list(dict.fromkeys(t.lower() for t in tokens if t.lower() in KINDS))
    rest = [t for t in tokens if t.lower() not in KINDS]
    target = " ".join(rest).strip()
    return ("" if target.lower() in _ALL_WORDS else target), kinds


def visible_projects(chat: ChatContext, viewer: Viewer) -> dict[int, str]:
    """Project id → title of the projects of tasks the viewer may see (names of others are never echoed)."""
    candidates = chat.tasks.by_ids(task_id for task_id, _ in chat.tasks.titles(participant=sql_prefilter(viewer)))
    rows = [TaskView.from_data(d) for d in candidates]
    return {v.project_id: v.project_title or "" for v in rows if v.project_id and may_see(viewer, v)}


def resolve_project(chat: ChatContext, viewer: Viewer, target: str) -> tuple[int, str] | None:
    """(project id, title) for "12", "#12" or a project name the viewer's tasks know; ALL_PROJECTS for ""."""
    if not target:
        return ALL_PROJECTS, ""
    known = visible_projects(chat, viewer)
    number = target.lstrip("#")
    if number.isdigit():
        project_id = int(number)
        return project_id, known.get(project_id, "")
    wanted = target.casefold()
    exact = [(pid, title) for pid, title in known.items() if title.casefold() == wanted]
    partial = [(pid, title) for pid, title in known.items() if wanted in title.casefold()]
    matches = exact or partial
    return matches[0] if len(matches) == 1 else None


def _what(project_id: int, title: str, words: dict[str, str]) -> str:
    if project_id == ALL_PROJECTS:
        return escape(words["all_projects"])
    if title:
        return escape(words["project_named"].format(name=truncate(title, 100)))
    return escape(words["project_id"].format(id=project_id))


async def cmd_subscribe(message: Message, command: CommandObject, chat: ChatContext, viewer: Viewer, lang: str,
                        bot: Bot) -> None:
    words = texts(lang)
    target, kinds = parse_subscription(command.args)
    if not await may_change_or_refuse(message, bot, viewer, lang):
        return
    resolved = resolve_project(chat, viewer, target)
    if resolved is None:
        await message.answer(escape(words["unknown_project"].format(name=truncate(target, 100))))
        return
    project_id, title = resolved
    kinds = kinds or list(EVENT_KINDS)
    chat.prefs.subscribe(message.chat.id, project_id, kinds, viewer.telegram_id, chat.clock())
    note_made(chat, message.chat.id, viewer.telegram_id)
    log.info("chat.subscribed", chat=message.chat.id, project=project_id, kinds=kinds, by=viewer.telegram_id)
    await message.answer(words["subscribed"].format(what=_what(project_id, title, words), kinds=", ".join(kinds)))


async def cmd_unsubscribe(message: Message, command: CommandObject, chat: ChatContext, viewer: Viewer, lang: str,
                          bot: Bot) -> None:
    words = texts(lang)
    target, _ = parse_subscription(command.args)
    if not await may_change_or_refuse(message, bot, viewer, lang):
        return
    if not (command.args or "").strip():
        removed = chat.prefs.unsubscribe(message.chat.id, None)
    else:
        resolved = resolve_project(chat, viewer, target)
        removed = chat.prefs.unsubscribe(message.chat.id, resolved[0]) if resolved else 0
    log.info("chat.unsubscribed", chat=message.chat.id, removed=removed, by=viewer.telegram_id)
    await message.answer(words["unsubscribed"].format(n=removed) if removed else words["not_subscribed"])


async def cmd_subscriptions(message: Message, chat: ChatContext, viewer: Viewer, lang: str) -> None:
    words = texts(lang)
    chat_id = message.chat.id
    projects = visible_projects(chat, viewer)
    lines = [words["subs_header"]]
    subs = chat.prefs.subscriptions(chat_id)
    suspended = chat.prefs.suspended_makers()
    if not subs:
        lines.append(escape(words["subs_none"]))
    for sub in subs:
        creator = viewer_for(sub.created_by, users=chat.settings.users, admin_ids=chat.settings.telegram.admin_ids)
        line = f"• {_what(sub.project_id, projects.get(sub.project_id, ''), words)}: {escape(', '.join(sub.kinds))}"
        if creator is None:
            line += escape(words["subs_inactive"])
        elif (chat_id, sub.created_by) in suspended:
            line += escape(words["subs_suspended"])
        lines.append(line)
    follows = chat.prefs.follows(chat_id)
    if follows:
        lines += ["", words["subs_follows"]]
        known = {v.task_id: v for v in map(TaskView.from_data, chat.tasks.by_ids(f.task_id for f in follows))}
        for follow in follows:
            view = known.get(follow.task_id)
            title = f" {escape(truncate(view.title, 80))}" if view is not None and may_see(viewer, view) else ""
            lines.append(f"• #{follow.general}{title}")
    muted = chat.prefs.muted_until(chat_id, chat.clock())
    lines.append("")
    if muted is not None:
        lines.append(escape(words["subs_muted"].format(until=muted.astimezone(chat.zone_for(chat_id)).strftime("%d.%m %H:%M"))))
    lines.append(escape(words["subs_lang"].format(lang=lang)))
    await message.answer("\n".join(lines))
