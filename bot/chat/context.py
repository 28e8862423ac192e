"""What the chat handlers share, handed to them by the dispatcher as `chat`; and the two ways they get data:
stored snapshots when fresh, or Planfix itself under interactive priority with a short timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

import structlog

from bot.chat.allowance import Allowance
from bot.clock import utc_now
from bot.config import Settings
from bot.health import PROCESS_STARTED, DaemonStatus, is_fresh, read_status
from bot.i18n import LANGUAGES
from bot.planfix.budget import Priority, priority
from bot.planfix.client import PlanfixClient
from bot.planfix.errors import PlanfixError, PlanfixItemError
from bot.planfix.models import Status
from bot.watch.poller import Progress
from state.prefs import Prefs, TaskIndex
from state.store import Store

log = structlog.get_logger(__name__)

T = TypeVar("T")

INTERACTIVE_TIMEOUT = 10.0  # seconds a person waits for Planfix before being told to try again


class PlanfixUnavailable(Exception):
    """Planfix did not answer a command in time, or answered with an error other than "no such task"."""


class OverAllowance(PlanfixUnavailable):
    """The person used up their allowance of Planfix requests (bot/chat/allowance.py): answer from the bot's copy."""


@dataclass
class ChatContext:
    """Dependencies of the chat routers. Callables read live values of the running daemon (the poller's last
    success, the API zone, status names), so one context serves the daemon's whole life."""

    settings: Settings
    client: PlanfixClient
    store: Store
    prefs: Prefs
    tasks: TaskIndex
    zone: Callable[[], ZoneInfo] = lambda: ZoneInfo("UTC")  # the display zone
    statuses: Callable[[], Mapping[int, Status]] = dict
    last_poll: Callable[[], datetime | None] = lambda: None  # the poller's last successful feed poll
    poll_interval: Callable[[], float] = lambda: 30.0  # the current feed interval (stretches with the budget)
    problem: Callable[[], str | None] = lambda: None  # why background checks stopped, if they did
    progress: Callable[[], Progress | None] = lambda: None  # a first start or catch-up under way
    wake_sender: Callable[[], None] = lambda: None
    sender_counts: Callable[[], tuple[int, int]] = lambda: (0, 0)  # messages sent, rows given up
    clock: Callable[[], datetime] = utc_now
    interactive_timeout: float = INTERACTIVE_TIMEOUT
    allowance: Allowance | None = None  # each person's Planfix requests per minute; None = unlimited
    started: datetime = PROCESS_STARTED
    _adopted: set[int] = field(default_factory=set)

    @property
    def web_url(self) -> str:
        return self.settings.planfix.task_web_url

    def lang(self, chat_id: int) -> str:
        """The chat's language: /lang, else display.language."""
        chosen = self.prefs.language(chat_id)
        return chosen if chosen in LANGUAGES else self.settings.display.language

    def zone_for(self, chat_id: int) -> ZoneInfo:
        """The chat's time zone: its route's or its linked user's `timezone`, else the display zone."""
        for route in self.settings.routes:
            if route.chat_id == chat_id and route.timezone:
                return ZoneInfo(route.timezone)
        for user in self.settings.users:
            if user.telegram_id == chat_id and user.timezone:
                return ZoneInfo(user.timezone)
        return self.zone()

    def fresh(self) -> bool:
        """Snapshots are fresh when the feed poll succeeded within max(2 min, 3 feed intervals): a change made in
        Planfix since is then at most a few polls old — as fresh as the notifications themselves. The same rule
        as /status and /healthz (bot/health.py)."""
        return is_fresh(self.last_poll(), self.clock(), self.poll_interval())

    def daemon_status(self) -> DaemonStatus:
        """The daemon's health now, for /status, /metrics, /healthz and systemd's STATUS= alike."""
        sent, failed = self.sender_counts()
        return read_status(
            self.store, now=self.clock(), started=self.started, budget=self.client.budget,
            last_poll=self.last_poll(), poll_interval=self.poll_interval(), progress=self.progress(),
            detection_problem=self.problem(), sent=sent, failed=failed,
        )

    def follow_migration(self, chat_id: int) -> None:
        """A group that became a supergroup keeps its preferences under the new id."""
        if chat_id in self._adopted:
            return
        self._adopted.add(chat_id)
        for old, new in self.store.chats.chat_migrations().items():
            if new == chat_id:
                self.prefs.adopt(old, new)

    async def ask(self, call: Callable[[], Awaitable[T]], *, what: str, user: int | None = None) -> T:
        """A Planfix request for a person who is waiting: interactive priority (ahead of every background
        request), at most `interactive_timeout` seconds. "No such task" errors pass through as
        PlanfixItemError; anything else becomes PlanfixUnavailable ("try again"). With `user`, the request
        comes out of that person's allowance; when it is used up, OverAllowance is raised and nothing is sent."""
        if user is not None and self.allowance is not None and not await self.allowance.take(user):
            log.info("chat.allowance_used", user=user, what=what, per_minute=self.allowance.per_minute)
            raise OverAllowance(what)
        with priority(Priority.INTERACTIVE):
            try:
                async with asyncio.timeout(self.interactive_timeout):
                    return await call()
            except PlanfixItemError:
                raise
            except (PlanfixError, TimeoutError, OSError) as exc:
                log.warning("chat.planfix_unavailable", what=what, error=str(exc) or type(exc).__name__)
                raise PlanfixUnavailable(str(exc)) from exc
