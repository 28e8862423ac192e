"""Finding a task for a person: from the stored snapshot when it is fresh and theirs to see, else from Planfix
(interactive priority); and its latest actions, from a cache that the action feed invalidates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from bot.chat.access import Viewer, may_see
from bot.chat.context import ChatContext, OverAllowance, PlanfixUnavailable
from bot.chat.views import ACTIONS_SHOWN, TaskView, action_data
from bot.planfix.errors import PlanfixItemError

log = structlog.get_logger(__name__)

HISTORY_MAX_AGE = 24 * 3600.0  # seconds: a cached history older than this is read again even if nothing changed


@dataclass(frozen=True)
class Found:
    view: TaskView
    live: bool  # read from Planfix just now (else from the stored snapshot)
    limited: bool = False  # Planfix was not asked: the person's allowance was used up (the copy is shown)


async def find_task(ctx: ChatContext, viewer: Viewer, number: int, lang: str, *, live: bool = False) -> Found | None:
    """The task with this number if the viewer may see it, else None — the same None for a task that does not
    exist, so nothing is revealed. Raises PlanfixUnavailable when Planfix had to be asked and did not answer.

    The stored snapshot answers when the feed is fresh and it already shows the viewer as taking part. Otherwise
    (no snapshot yet, stale feed, or a viewer the snapshot does not list — snapshots made from task lists do not
    know auditors) the card comes from Planfix, and `may_see` decides on that."""
    if number <= 0:
        return None
    if not live and ctx.fresh():
        data = ctx.tasks.by_general(number)
        if data is not None:
            view = TaskView.from_data(data, ctx.statuses(), lang)
            if may_see(viewer, view):
                return Found(view, live=False)
    try:
        task = await ctx.ask(lambda: ctx.client.task_get(general=number), what="task.get", user=viewer.telegram_id)
    except PlanfixItemError:
        return None
    except OverAllowance:
        # Asked too often: the bot's copy, if it has one this person may see (else "try again in a minute").
        data = ctx.tasks.by_general(number)
        view = TaskView.from_data(data, ctx.statuses(), lang) if data is not None else None
        if view is None or not may_see(viewer, view):
            raise
        return Found(view, live=False, limited=True)
    if not may_see(viewer, task):
        return None
    return Found(TaskView.from_task(task, ctx.statuses(), lang), live=True)


async def latest_actions(ctx: ChatContext, task_id: int, *, refresh: bool = False,
                         user: int | None = None) -> list[dict[str, Any]] | None:
    """The task's last few actions (oldest first), or None if Planfix could not be asked.

    Cached per task; the cache stays valid while the action feed has seen no newer action of the task (and for at
    most a day), so a repeated /task costs no Planfix request. `refresh` always reads Planfix."""
    now = ctx.clock()
    cached = ctx.prefs.history(task_id)
    if cached is not None and not refresh:
        newest_seen = ctx.prefs.newest_seen_action(task_id)
        young = (now - cached.fetched_at).total_seconds() < HISTORY_MAX_AGE
        if young and (newest_seen is None or newest_seen <= cached.newest_action_id):
            return cached.actions
    try:
        actions = await ctx.ask(lambda: ctx.client.recent_actions(task_id, ACTIONS_SHOWN), what="action.getList",
                                user=user)
    except OverAllowance:
        return cached.actions if cached is not None else None
    except (PlanfixUnavailable, PlanfixItemError):
        return cached.actions if cached is not None and not refresh else None
    data = [action_data(a) for a in actions]
    newest = max((a.id for a in actions), default=0)
    ctx.prefs.save_history(task_id, data, newest, now)
    return data
