"""/status for the bot's admins: version, uptime, the last successful poll and its lag, a first start or catch-up
under way, Planfix requests used today against the budget, the outbox, and inactive chats with the reason."""

from __future__ import annotations

from datetime import datetime

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot import __version__
from bot.chat.access import Viewer
from bot.chat.context import ChatContext
from bot.i18n import texts
from bot.notify.markup import escape, truncate
from bot.redact import redact
from bot.watch.poller import FIRST_START

INACTIVE_SHOWN = 20


def build_router() -> Router:
    router = Router(name="status")
    router.message.register(cmd_status, Command("status"))
    return router


def duration(seconds: float, lang: str) -> str:
    """"45 s", "12 min", "3 h 12 min", "2 d 5 h"."""
    words = texts(lang)
    s, m, h, d = (words[f"abbr_{unit}"] for unit in "smhd")
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} {s}"
    if seconds < 3600:
        return f"{seconds // 60} {m}"
    if seconds < 86400:
        return f"{seconds // 3600} {h} {seconds % 3600 // 60} {m}"
    return f"{seconds // 86400} {d} {seconds % 86400 // 3600} {h}"


def status_report(ctx: ChatContext, lang: str, chat_id: int) -> str:
    words = texts(lang)
    status = ctx.daemon_status()
    zone = ctx.zone_for(chat_id)

    def local(moment: datetime, fmt: str = "%d.%m %H:%M") -> str:
        return moment.astimezone(zone).strftime(fmt)

    lines = [words["status_title"].format(version=escape(__version__),
                                          uptime=escape(duration(status.uptime_seconds, lang)))]
    if status.last_poll is None or status.lag_seconds is None:
        lines.append(escape(words["status_no_poll"]))
    else:
        lines.append(escape(words["status_poll"].format(when=local(status.last_poll, "%d.%m %H:%M:%S"),
                                                        ago=duration(status.lag_seconds, lang))))
        if not status.fresh:
            lines.append(escape(words["status_stale"].format(allowed=duration(status.fresh_for, lang))))
    progress = status.progress
    if progress is not None and progress.kind == FIRST_START:
        total = f"{progress.total:,}" if progress.total is not None else "?"
        lines.append(escape(words["status_first_start"].format(done=f"{progress.done:,}", total=total)))
    elif progress is not None:
        behind = progress.behind.total_seconds() if progress.behind is not None else 0.0
        lines.append(escape(words["status_catch_up"].format(
            done=f"{progress.done:,}", reached=local(progress.reached) if progress.reached else "?",
            behind=duration(behind, lang))))
    budget = status.budget
    if budget is not None:
        lines.append(escape(words["status_budget"].format(used=budget.used, daily=budget.daily,
                                                          reserve=budget.reserve, reset=local(budget.day_ends))))
        if budget.paused_until is not None:
            lines.append(escape(words["status_paused"].format(until=local(budget.paused_until))))
    if status.problem:
        lines.append(escape(words["status_problem"].format(problem=truncate(redact(status.problem), 300))))
    if status.pending and status.oldest_pending_seconds is not None:
        lines.append(escape(words["status_outbox"].format(pending=status.pending,
                                                          oldest=duration(status.oldest_pending_seconds, lang))))
    else:
        lines.append(escape(words["status_outbox_empty"]))
    lines.append(escape(words["status_sent"].format(sent=status.sent, failed=status.failed)))
    if status.set_aside_count:
        ids = ", ".join(f"{task_id} ({code})" for task_id, code in status.set_aside_examples.items())
        lines.append(escape(words["status_set_aside"].format(count=status.set_aside_count, ids=ids)))
    inactive = ctx.store.chats.inactive_chats()
    if not inactive:
        lines.append(escape(words["status_no_inactive"]))
    else:
        lines.append(words["status_inactive"])
        for state in inactive[:INACTIVE_SHOWN]:
            lines.append(f"• <code>{state.chat_id}</code> — {escape(truncate(redact(state.reason or '?'), 200))}")
        if len(inactive) > INACTIVE_SHOWN:
            lines.append(f"… +{len(inactive) - INACTIVE_SHOWN}")
    return "\n".join(lines)


async def cmd_status(message: Message, chat: ChatContext, viewer: Viewer, lang: str) -> None:
    if not viewer.is_admin:
        await message.answer(texts(lang)["admins_only"])
        return
    await message.answer(status_report(chat, lang, message.chat.id))
