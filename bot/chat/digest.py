"""The daily digest: at `digest_at` in the chat's zone, each route chat and each linked user with that key gets one
message listing the tasks due that day and the overdue ones (a route: its projects; a user: tasks assigned to
them), in the chat's language. An empty digest is skipped. Once per local day: the day is recorded in the state
file, and the message goes through the outbox under the key `daily:<chat>:<day>`, so a restart never repeats it.
A digest due while the daemon was down goes out when it starts, the same day only. The job runs at each
`digest_at` (cron triggers in the chats' zones) and hourly besides; the day record makes any extra run a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.chat.access import may_see, viewer_for
from bot.chat.context import ChatContext
from bot.chat.lists import due_on
from bot.chat.views import TaskView
from bot.config import Route, UserLink
from bot.events import DAILY, Daily, Event
from state.records import DeliveryRow, EventRow, PollCommit

log = structlog.get_logger(__name__)

MAX_ITEMS = 300  # the renderer shows what fits and counts the rest
CHECK_EVERY = 30.0  # seconds: when no trigger time is left (never, in practice), the next check after this
SAFETY_NET = 3600.0  # seconds: also run at least this often (a local time a DST change skipped; prefs housekeeping)
DIGEST_GRACE = timedelta(minutes=15)  # after start-up, wait this long at most for the first feed poll


@dataclass(frozen=True)
class DigestTarget:
    chat_id: int
    at: time
    zone: ZoneInfo
    route: Route | None = None
    user: UserLink | None = None


def digest_targets(ctx: ChatContext) -> list[DigestTarget]:
    """Every configured digest: routes and linked users with `digest_at`, each with its chat's zone."""
    migrated = ctx.store.chats.chat_migrations()
    targets: list[DigestTarget] = []
    for route in ctx.settings.routes:
        if route.digest_at:
            zone = ZoneInfo(route.timezone) if route.timezone else ctx.zone()
            chat_id = migrated.get(route.chat_id, route.chat_id)
            targets.append(DigestTarget(chat_id, time.fromisoformat(route.digest_at), zone, route=route))
    for user in ctx.settings.users:
        if user.digest_at:
            zone = ZoneInfo(user.timezone) if user.timezone else ctx.zone()
            targets.append(DigestTarget(user.telegram_id, time.fromisoformat(user.digest_at), zone, user=user))
    return targets


def digest_items(ctx: ChatContext, target: DigestTarget, now: datetime) -> list[dict[str, Any]]:
    """The target's overdue tasks and those due on its local today, soonest deadline first."""
    if target.user is not None:
        viewer = viewer_for(target.user.telegram_id, users=ctx.settings.users,
                            admin_ids=ctx.settings.telegram.admin_ids)
        if viewer is None or viewer.planfix_id is None:
            return []
        views = [v for v in map(TaskView.from_data, ctx.tasks.active_of_worker(viewer.planfix_id))
                 if viewer.planfix_id in v.workers and may_see(viewer, v)]
    else:
        bound = now + timedelta(days=2)  # a generous bound; the exact "today" is decided below
        views = list(map(TaskView.from_data, ctx.tasks.active_due_by(bound)))
        projects = target.route.projects if target.route else []
        if projects:
            views = [v for v in views if v.project_id in projects]
    chosen = [v for v in views if v.deadline_due is not None and (v.overdue(now) or due_on(v, now, target.zone))]
    chosen.sort(key=TaskView.sort_key)
    return [
        {"general": v.general, "title": v.title, "deadline": v.deadline, "deadline_due": v.deadline_due,
         "overdue": v.overdue(now)}
        for v in chosen[:MAX_ITEMS]
    ]


def daily_event(chat_id: int, day: str, zone: ZoneInfo, items: list[dict[str, Any]], now: datetime) -> Event:
    return Event(
        kind=DAILY,
        key=f"{DAILY}:{chat_id}:{day}",
        task_id=0,  # about no one task (Event.coalesces keeps it apart)
        task_general=0,
        task_title="",
        occurred_at=now,
        payload=Daily(day, zone.key, tuple(items)),
    )


def digest_trigger(targets: list[DigestTarget], now: datetime) -> BaseTrigger:
    """When the digest job runs: each target's `digest_at` in its chat's zone (a cron trigger each), and hourly
    from `now`."""
    crons = [CronTrigger(hour=t.at.hour, minute=t.at.minute, second=t.at.second, timezone=t.zone) for t in targets]
    hourly = IntervalTrigger(seconds=SAFETY_NET, start_date=now + timedelta(seconds=SAFETY_NET), timezone=UTC)
    return OrTrigger([*crons, hourly])


@dataclass
class DailyDigest:
    ctx: ChatContext
    on_queued: Callable[[int], None] | None = None

    def trigger(self) -> BaseTrigger:
        """Re-read after each run: the chats' default zone is the API user's, known after the first feed poll."""
        return digest_trigger(digest_targets(self.ctx), self.ctx.clock())

    async def step(self) -> int:
        """Queue every digest that is due and not yet made today; returns how many messages were queued."""
        ctx = self.ctx
        now = ctx.clock()
        queued = 0
        for target in digest_targets(ctx):
            local = now.astimezone(target.zone)
            day = local.date().isoformat()
            if local.time() < target.at or ctx.prefs.digest_day(target.chat_id) == day:
                continue
            items = digest_items(ctx, target, now)
            if items:
                event = daily_event(target.chat_id, day, target.zone, items, now)
                queued += ctx.store.commit_poll(PollCommit(
                    now=now,
                    events=[EventRow(event.key, event.kind, event.task_id, event.to_json())],
                    deliveries=[DeliveryRow(event.key, target.chat_id)],
                ))
            ctx.prefs.mark_digest(target.chat_id, day, now)
            log.info("digest.daily", chat=target.chat_id, day=day, items=len(items), skipped=not items)
        ctx.prefs.prune(now)
        if queued and self.on_queued is not None:
            self.on_queued(queued)
        return queued
