"""/status for the bot's admins: version, uptime, the last successful poll and its lag, a first start or catch-up
under way, Planfix requests used today against the budget, the outbox, and inactive chats with the reason."""

from __future__ import annotations

from datetime import UTC, datetime

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot import __version__
from bot.chat.access import Viewer
from bot.chat.context import ChatContext
from bot.chat.texts import texts
from bot.notify.render import escape, truncate
from bot.redact import redact
from bot.watch.poller import FIRST_START

PROCESS_STARTED = datetime.now(UTC)  # this module is imported when the daemon starts
INACTIVE_SHOWN = 20
_UNITS = {"ru": ("с", "мин", "ч", "д"), "en": ("s", "min", "h", "d")}


def build_router() -> Router:
    router = Router(name="status")
    router.message.register(cmd_status, Command("status"))
    return router


def duration(seconds: float, lang: str) -> str:
    """"45 s", "12 min", "3 h 12 min", "2 d 5 h"."""
    s, m, h, d = _UNITS.get(lang, _UNITS["en"])
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
    now = ctx.clock()
    zone = ctx.zone_for(chat_id)

    def local(moment: datetime, fmt: str = "%d.%m %H:%M") -> str:
        return moment.astimezone(zone).strftime(fmt)

    lines = [words["status_title"].format(version=escape(__version__),
                                          uptime=escape(duration((now - PROCESS_STARTED).total_seconds(), lang)))]
    last = ctx.last_poll()
    if last is None:
        lines.append(escape(words["status_no_poll"]))
    else:
        lines.append(escape(words["status_poll"].format(when=local(last, "%d.%m %H:%M:%S"),
                                                        ago=duration((now - last).total_seconds(), lang))))
    progress = ctx.progress()
    if progress is not None and progress.kind == FIRST_START:
        total = f"{progress.total:,}" if progress.total is not None else "?"
        lines.append(escape(words["status_first_start"].format(done=f"{progress.done:,}", total=total)))
    elif progress is not None:
        behind = progress.behind.total_seconds() if progress.behind is not None else 0.0
        lines.append(escape(words["status_catch_up"].format(
            done=f"{progress.done:,}", reached=local(progress.reached) if progress.reached else "?",
            behind=duration(behind, lang))))
    budget = ctx.client.budget
    lines.append(escape(words["status_budget"].format(used=budget.used, daily=budget.daily, reserve=budget.reserve,
                                                      reset=local(budget.day_ends))))
    paused = budget.background_resume_at()
    if paused is not None:
        lines.append(escape(words["status_paused"].format(until=local(paused))))
    problem = ctx.problem()
    if problem:
        lines.append(escape(words["status_problem"].format(problem=truncate(redact(problem), 300))))
    pending = ctx.store.pending_count()
    oldest = ctx.store.oldest_pending_created()
    if pending and oldest is not None:
        lines.append(escape(words["status_outbox"].format(pending=pending,
                                                          oldest=duration((now - oldest).total_seconds(), lang))))
    else:
        lines.append(escape(words["status_outbox_empty"]))
    sent, failed = ctx.sender_counts()
    lines.append(escape(words["status_sent"].format(sent=sent, failed=failed)))
    aside = ctx.store.set_aside()
    if aside:
        ids = ", ".join(f"{task_id} ({code})" for task_id, code in list(aside.items())[:5])
        lines.append(escape(words["status_set_aside"].format(count=len(aside), ids=ids)))
    inactive = ctx.store.inactive_chats()
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
