"""Composition root: builds the client, state, poller, sender and chat, runs them in one loop, stops cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import structlog
from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramAPIError, TelegramUnauthorizedError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot import logs
from bot.chat import makers
from bot.chat.allowance import Allowance
from bot.chat.audience import ChatAudience
from bot.chat.commands import ChatContext, build_router, set_bot_commands
from bot.chat.digest import CHECK_EVERY, DIGEST_GRACE, DailyDigest
from bot.chat.replies import attribute_own, notice_buttons, recover_writes, skip_own_actor
from bot.config import ConfigError, Settings, load_settings
from bot.events import Event
from bot.health import DaemonStatus
from bot.housekeeping import PRUNE_EVERY, prune_history
from bot.i18n import texts
from bot.notify import render
from bot.notify.compose import build_sender
from bot.notify.routing import deliveries
from bot.notify.sender import Sender
from bot.planfix.budget import Budget
from bot.planfix.client import PlanfixClient
from bot.sdnotify import SystemdNotifier
from bot.watch.jobs import BackgroundJob, Detection, detection_from_settings
from bot.watch.poller import Poller
from state.actions import Actions, Write
from state.prefs import Prefs, TaskIndex
from state.records import DeliveryRow
from state.store import Store

if TYPE_CHECKING:
    from aiohttp.web import AppRunner

    from bot.metrics import Readings

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_SECONDS = 10


def make_bot(settings: Settings) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram.api_base))
    return Bot(
        settings.telegram.token.get_secret_value(),
        session=session,
        default=DefaultBotProperties(parse_mode="HTML"),
    )


def make_client(settings: Settings) -> PlanfixClient:
    pf = settings.planfix
    return PlanfixClient(
        url=pf.url,
        account=pf.account,
        api_key=pf.api_key.get_secret_value(),
        token=pf.token.get_secret_value() if pf.token else None,
        login=pf.login,
        password=pf.password.get_secret_value() if pf.password else None,
        requests_per_second=pf.requests_per_second,
        timeout=pf.timeout_seconds,
        # One budget for every Planfix request: rate, priorities, the daily allowance, the 0007 pause.
        budget=Budget(requests_per_second=pf.requests_per_second, daily=pf.daily_request_budget),
    )


def route_event(event: Event, now: datetime, *, settings: Settings, store: Store, audience: ChatAudience,
                zone: Callable[[], ZoneInfo], own_writes: Actions, unsettled: dict[int, Write]) -> list[DeliveryRow]:
    """The outbox rows for one event (the detector's router): `deliveries` to routes, linked users and the chats
    that asked, minus the private chat of whoever made the change from Telegram."""
    rows = deliveries(event, now, routes=settings.routes, users=settings.users, zone=zone(),
                      migrated=store.chats.chat_migrations(), audience=audience)
    return skip_own_actor(own_writes, rows, event, unsettled)


@dataclass
class Daemon:
    """Everything the running daemon is made of, wired together."""

    settings: Settings
    store: Store
    client: PlanfixClient
    bot: Bot
    poller: Poller
    sender: Sender
    dispatcher: Dispatcher
    scheduler: AsyncIOScheduler | None = None
    detection: Detection | None = None  # feed poll, sweep, deadline checks: APScheduler jobs

    @classmethod
    def build(cls, settings: Settings) -> Daemon:
        store = Store.open(settings.state.path)
        client = make_client(settings)
        bot = make_bot(settings)
        holder: dict[str, Poller] = {}
        # What chats asked for (subscriptions, follows, mutes, snoozes, language) joins the routing.
        prefs = Prefs(store.db)
        for old, new in store.chats.chat_migrations().items():
            prefs.adopt(old, new)
        audience = ChatAudience(prefs, settings)

        def zone():
            return settings.display_zone(holder["poller"].api_timezone if holder else None)

        def status_name(status_id: int, lang: str) -> str | None:
            status = holder["poller"].statuses.get(status_id) if holder else None
            return status.name_in(lang) if status is not None else None

        sender = build_sender(settings, store, bot, zone=zone, language=audience.language, audience=audience,
                              open_button_text=lambda chat_id: texts(audience.language(chat_id))["open"],
                              buttons=notice_buttons(settings), status_names=status_name)
        own_writes = Actions(store.db)  # changes made from Telegram, by action id
        unsettled: dict[int, Write] = {}  # … and those the feed saw before their write was settled (a crash)

        route = partial(route_event, settings=settings, store=store, audience=audience, zone=zone,
                        own_writes=own_writes, unsettled=unsettled)
        detection = detection_from_settings(
            settings, client=client, store=store, route=route, notify_admins=sender.tell_admins,
            on_queued=sender.wake,
            split_digest=lambda events: render.digest_parts(events, web_url=settings.planfix.task_web_url, tz=zone()),
        )
        poller = detection.poller
        poller.attribute = attribute_own(own_writes, unsettled=unsettled)
        holder["poller"] = poller

        pacer = detection.pacer
        chat = ChatContext(
            settings=settings, client=client, store=store, prefs=prefs, tasks=TaskIndex(store.db), zone=zone,
            statuses=lambda: poller.statuses, last_poll=lambda: poller.last_success,
            poll_interval=pacer.interval if pacer else (lambda: settings.poll.interval_seconds),
            problem=lambda: detection.problem, wake_sender=sender.wake,
            progress=poller.resume_progress,
            sender_counts=lambda: (sender.sent, sender.failed),
            allowance=Allowance(settings.planfix.requests_per_user_per_minute),
        )
        dispatcher = Dispatcher()
        dispatcher["chat"] = chat
        dispatcher.include_router(build_router())

        async def on_polling_start(bot: Bot) -> None:
            await set_bot_commands(bot, settings.display.language, settings.telegram.admin_ids)

        dispatcher.startup.register(on_polling_start)
        # The daily digest reads snapshots only (no Planfix request); it runs with the detection jobs, once the
        # first feed poll has brought the snapshots up to date (or after DIGEST_GRACE if Planfix stays away).
        digest = DailyDigest(chat, on_queued=sender.wake)
        started = datetime.now(UTC)
        detection.jobs.append(BackgroundJob(
            "digest", digest.step, interval=lambda: CHECK_EVERY, trigger=digest.trigger, health=detection.health,
            budget=detection.budget, lock=asyncio.Lock(), uses_planfix=False, store_health=store.health,
            ready=lambda: poller.caught_up or datetime.now(UTC) - started > DIGEST_GRACE,
        ))
        # Settled messages and their events older than state.keep_days go, once a day, in small batches.
        async def prune_step() -> None:
            await prune_history(store, keep_days=settings.state.keep_days, now=datetime.now(UTC))

        detection.jobs.append(BackgroundJob(
            "prune", prune_step, interval=lambda: PRUNE_EVERY, health=detection.health, budget=detection.budget,
            lock=asyncio.Lock(), uses_planfix=False, store_health=store.health,
        ))
        # Group subscriptions follow the people who made them: getChatMember at least daily (no Planfix request).
        detection.jobs.append(BackgroundJob(
            "makers", lambda: makers.check_makers(chat, bot), interval=lambda: makers.JOB_EVERY,
            health=detection.health, budget=detection.budget, lock=asyncio.Lock(), uses_planfix=False,
            store_health=store.health,
        ))
        return cls(settings, store, client, bot, poller, sender, dispatcher, detection=detection)

    async def _run_chat(self) -> None:
        """Answer commands; if Telegram is unreachable at start-up, keep trying instead of dying."""
        delay = 1.0
        while True:
            try:
                await self.dispatcher.start_polling(
                    self.bot, handle_signals=False, close_bot_session=False,
                    allowed_updates=self.dispatcher.resolve_used_update_types(),
                )
                return
            except TelegramUnauthorizedError:
                log.error("telegram.unauthorized", hint="check telegram.token")
                delay = 60.0
            except (TelegramAPIError, OSError, TimeoutError) as exc:
                log.warning("telegram.polling_failed", error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    async def run(self, stop: asyncio.Event, *, reloaded: bool = False) -> None:
        """Run until `stop`; `reloaded`: this generation replaces one after SIGHUP (READY=1 at once, not after
        the first poll, so that a reload never waits for Planfix)."""
        interval = self.settings.poll.interval_seconds
        # Every background job (feed poll, sweep, deadline checks, digests, pruning, group makers) has its own
        # trigger on one APScheduler scheduler, re-timed from the job's own decision (pacer, back-off, pauses).
        assert self.detection is not None
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.detection.schedule(self.scheduler)
        self.scheduler.start()
        sender_task = asyncio.create_task(self.sender.run(), name="sender")
        chat_task = asyncio.create_task(self._run_chat(), name="chat")
        # Writes a previous process left unsettled (killed between Planfix's answer and our commit).
        recovery = asyncio.create_task(recover_writes(self.bot, self.dispatcher["chat"]), name="recover-writes")
        heartbeat = asyncio.create_task(self._service_heartbeat(SystemdNotifier(), ready=reloaded), name="heartbeat")
        metrics_runner = await self._serve_metrics()
        log.info("daemon.started", interval=interval, routes=len(self.settings.routes), users=len(self.settings.users))
        try:
            await stop.wait()
        finally:
            log.info("daemon.stopping")
            self.scheduler.shutdown(wait=False)
            await asyncio.sleep(0.1)  # let cancelled job steps unwind before the store closes
            heartbeat.cancel()
            recovery.cancel()
            if metrics_runner is not None:
                await metrics_runner.cleanup()
            self.sender.stop()
            with contextlib.suppress(Exception):
                await self.dispatcher.stop_polling()
            # Let the in-flight send finish so that it is recorded as delivered, then stop waiting.
            done, pending = await asyncio.wait({sender_task, chat_task}, timeout=SHUTDOWN_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await self.close()
            log.info("daemon.stopped")

    async def _serve_metrics(self) -> AppRunner | None:
        listen = self.settings.metrics.listen
        if listen is None:
            return None
        from bot import metrics  # prometheus_client and aiohttp.web only when [metrics] is set

        try:
            return await metrics.serve(metrics.Metrics(self.readings()), listen)
        except OSError as exc:
            # Metrics are optional: a taken port must not take notifications down with it.
            log.error("metrics.listen_failed", listen=listen, error=str(exc))
            return None

    def status(self) -> DaemonStatus:
        """The daemon's health now: the same read-model /status shows (ChatContext.daemon_status)."""
        return self.dispatcher["chat"].daemon_status()

    def readings(self) -> Readings:
        """What /metrics and /healthz read from the running daemon."""
        from bot.metrics import Readings

        return Readings(
            status=self.status,
            events_by_kind=self.store.counters.events_by_kind,
            failures_by_reason=self.store.counters.failures_by_reason,
            job_results=lambda: {(job.name, result): n for job in (self.detection.jobs if self.detection else [])
                                 for result, n in job.results.items()},
            planfix_requests=lambda: dict(self.client.request_counts),
            items_skipped=lambda: dict(self.client.items_skipped),
        )

    def health_line(self) -> str:
        """One line for systemd's STATUS= and for logs: last poll, outbox, sends."""
        return self.status().line()

    async def _service_heartbeat(self, notifier: SystemdNotifier, *, ready: bool = False) -> None:
        """READY=1 after the first successful poll — at once after a reload, or as soon as a long first start or
        catch-up is under way (it may take longer than TimeoutStartSec; STATUS= then says how far it got) — then
        STATUS= and WATCHDOG=1 from the event loop, so that a blocked loop stops the pings and systemd restarts it."""
        if not notifier.enabled:
            return
        period = min(5.0, (notifier.watchdog_seconds or 10.0) / 2)
        if ready:
            notifier.ready(f"configuration reloaded; {self.health_line()}")
        while True:
            if not ready and (self.poller.last_success is not None or self.poller.progress is not None):
                ready = notifier.ready(self.health_line())
            elif ready:
                notifier.status(self.health_line())
            notifier.watchdog()
            await asyncio.sleep(period)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.aclose()
        with contextlib.suppress(Exception):
            await self.bot.session.close()
        self.store.close()


@dataclass(frozen=True)
class ReloadOutcome:
    """What a SIGHUP came to: the new settings, or None and why the running ones are kept."""

    settings: Settings | None
    reason: str = ""


def reload_settings(current: Settings, config_path: str | Path | None) -> ReloadOutcome:
    """The config file re-read for SIGHUP; refused (logged, with the reason) when the old one must be kept."""
    if config_path is None:
        log.warning("config.reload_ignored", reason="the daemon was not started from a config file")
        return ReloadOutcome(None, "not started from a config file")
    try:
        new = load_settings(config_path)
    except ConfigError as exc:
        log.error("config.reload_refused", error=str(exc), keeping="the running configuration")
        return ReloadOutcome(None, str(exc))
    if new.state.path != current.state.path:
        reason = "state.path cannot change while running; restart the service"
        log.error("config.reload_refused", error=reason, keeping="the running configuration")
        return ReloadOutcome(None, reason)
    return ReloadOutcome(new)


async def run_daemon(settings: Settings, *, config_path: str | Path | None = None, stop: asyncio.Event | None = None,
                     started: Callable[[Daemon], Awaitable[None]] | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set), then shut down cleanly; returns the exit status.

    SIGHUP re-reads `config_path`: a bad file is refused (logged, old config kept); a good one rebuilds the
    daemon's parts in this process — same lock, same state file, so the cursor and the outbox carry over."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    generation_over = asyncio.Event()
    replacement: list[Settings] = []

    def on_reload() -> None:
        # sd_notify(3): RELOADING=1 (with MONOTONIC_USEC) starts a reload and READY=1 must end it, refused or
        # not — else `systemctl reload` waits for its timeout. A good file's READY=1 follows the rebuild below.
        notifier = SystemdNotifier()
        notifier.reloading()
        outcome = reload_settings(settings if not replacement else replacement[-1], config_path)
        if outcome.settings is None:
            notifier.ready(f"reload refused, running configuration kept: {outcome.reason}")
            return
        replacement[:] = [outcome.settings]
        generation_over.set()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, on_reload)

    async def relay_stop() -> None:
        await stop.wait()
        SystemdNotifier().stopping()
        generation_over.set()

    relay = asyncio.create_task(relay_stop())
    reloaded = False
    try:
        while True:
            generation_over.clear()
            daemon = Daemon.build(settings)
            if started:
                await started(daemon)
            await daemon.run(generation_over, reloaded=reloaded)
            reloaded = True
            if stop.is_set():
                return 0
            settings = replacement.pop()
            logs.configure(level=settings.logging.level, fmt=settings.logging.format, secrets=settings.secrets())
            log.info("config.reloaded", routes=len(settings.routes), users=len(settings.users))
    finally:
        relay.cancel()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGHUP)
