"""Composition root: builds the client, state, poller, sender and chat, runs them in one loop, stops cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import html
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramAPIError, TelegramUnauthorizedError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.chat.commands import TEXTS, ChatContext, build_router
from bot.config import Settings
from bot.events import Event
from bot.notify import render
from bot.notify.routing import deliveries
from bot.notify.sender import Rendered, Sender
from bot.planfix.client import PlanfixClient
from bot.planfix.errors import PlanfixConfigError, PlanfixError
from bot.planfix.models import Task
from bot.sdnotify import SystemdNotifier
from bot.watch.poller import Poller
from state.store import Store

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
    )


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
    _fatal_reported: bool = False

    @classmethod
    def build(cls, settings: Settings) -> Daemon:
        store = Store.open(settings.state.path)
        client = make_client(settings)
        bot = make_bot(settings)
        lang = settings.display.language
        web_url = settings.planfix.task_web_url
        holder: dict[str, Poller] = {}

        def zone():
            return settings.display_zone(holder["poller"].api_timezone if holder else None)

        def render_for_chat(event: Event, chat_id: int) -> Rendered:
            url = render.task_url(web_url, event.task_general)
            short = f'<b>#{event.task_general}</b> <a href="{html.escape(url)}">{html.escape(url)}</a>'
            return Rendered(render.render_event(event, lang=lang, tz=zone(), web_url=web_url), short, url)

        sender = Sender(
            bot=bot,
            store=store,
            render=render_for_chat,
            admin_ids=settings.telegram.admin_ids,
            open_button_text=lambda chat_id: TEXTS[lang]["open"],
        )

        def route(event: Event, now: datetime):
            return deliveries(
                event, now, routes=settings.routes, users=settings.users, zone=zone(),
                migrated=store.chat_migrations(),
            )

        poller = Poller(
            client=client,
            store=store,
            route=route,
            overlap=timedelta(minutes=settings.poll.overlap_minutes),
            on_queued=sender.wake,
            language=lang,
        )
        holder["poller"] = poller

        def render_card(task: Task) -> str:
            name = poller.statuses[task.status].name if task.status in poller.statuses else f"#{task.status}"
            return render.render_task_card(task, status_name=name, lang=lang, tz=zone(), web_url=web_url)

        dispatcher = Dispatcher()
        dispatcher["chat"] = ChatContext(
            settings=settings, client=client, store=store, render_card=render_card,
            task_url=lambda general: render.task_url(web_url, general),
        )
        dispatcher.include_router(build_router(settings))
        return cls(settings, store, client, bot, poller, sender, dispatcher)

    async def poll_job(self) -> None:
        """One scheduled poll; errors are logged and the next run tries again from the same cursor."""
        try:
            await self.poller.poll_once()
        except PlanfixConfigError as exc:
            log.error("poll.config_error", error=str(exc), code=exc.code)
            if not self._fatal_reported:
                self._fatal_reported = True
                await self.sender.tell_admins(f"⚠️ Planfix refuses the bot's credentials: {html.escape(str(exc))}")
        except PlanfixError as exc:
            log.warning("poll.failed", error=str(exc), code=exc.code, kind=type(exc).__name__)
        except TimeoutError:
            log.warning("poll.timeout")
        except Exception:
            log.exception("poll.crashed")
        else:
            self._fatal_reported = False

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

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.settings.poll.interval_seconds
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.scheduler.add_job(
            self.poll_job, "interval", seconds=interval, id="poll", max_instances=1, coalesce=True,
            misfire_grace_time=max(1, int(interval / 2)), next_run_time=datetime.now(UTC),
        )
        self.scheduler.start()
        sender_task = asyncio.create_task(self.sender.run(), name="sender")
        chat_task = asyncio.create_task(self._run_chat(), name="chat")
        heartbeat = asyncio.create_task(self._service_heartbeat(SystemdNotifier()), name="heartbeat")
        log.info("daemon.started", interval=interval, routes=len(self.settings.routes), users=len(self.settings.users))
        try:
            await stop.wait()
        finally:
            log.info("daemon.stopping")
            self.scheduler.shutdown(wait=False)
            heartbeat.cancel()
            SystemdNotifier().stopping()
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

    def health_line(self) -> str:
        """One line for systemd's STATUS= and for logs: last poll, outbox, sends."""
        last = self.poller.last_success
        polled = f"last poll {last:%H:%M:%S} UTC" if last else "no successful poll yet"
        pending = self.store.outbox_counts().get("pending", 0)
        return f"{polled}; {pending} messages queued; {self.sender.sent} sent, {self.sender.failed} failed"

    async def _service_heartbeat(self, notifier: SystemdNotifier) -> None:
        """READY=1 after the first successful poll, then STATUS= and WATCHDOG=1 from the event loop, so that
        a blocked loop stops the pings and systemd restarts the service."""
        if not notifier.enabled:
            return
        period = min(5.0, (notifier.watchdog_seconds or 10.0) / 2)
        ready = False
        while True:
            if not ready and self.poller.last_success is not None:
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


async def run_daemon(settings: Settings, *, stop: asyncio.Event | None = None,
                     started: Callable[[Daemon], Awaitable[None]] | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set), then shut down cleanly; returns the exit status."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    daemon = Daemon.build(settings)
    if started:
        await started(daemon)
    await daemon.run(stop)
    return 0
