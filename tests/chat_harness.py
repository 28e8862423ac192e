"""Dispatcher-level harness for the chat tests: the real routers in a real Dispatcher, a Bot pointed at the fake
Telegram over HTTP, the real Planfix client against the fake Planfix, a real state file, and a real Poller to fill
the snapshots. Updates are fed straight to the dispatcher (no polling), so each call returns once handled."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
from aiogram import Dispatcher
from aiogram.types import Update

from bot.app import make_bot
from bot.chat.audience import ChatAudience
from bot.chat.commands import build_router
from bot.chat.context import ChatContext
from bot.config import parse_settings
from bot.fakes.planfix import FakePlanfix
from bot.fakes.telegram import FakeTelegram, SentMessage
from bot.notify.routing import deliveries
from bot.planfix.budget import Budget
from bot.planfix.client import PlanfixClient
from bot.watch.poller import Poller
from state.prefs import Prefs, TaskIndex
from state.store import Store

TEAM = -1001777  # a route group
ANNA_TG, BORIS_TG, ADMIN_TG, STRANGER_TG = 501, 502, 900, 666
ANNA, BORIS, CYRIL = 10, 11, 12  # Planfix user ids


_SSL = ssl.create_default_context()
_DISPATCHER: list[Dispatcher] = []


def dispatcher() -> Dispatcher:
    """One Dispatcher with the real routers for the whole test run (building aiogram routers costs ~70 ms); each
    harness puts its own ChatContext into it."""
    if not _DISPATCHER:
        dp = Dispatcher()
        dp.include_router(build_router())
        _DISPATCHER.append(dp)
    return _DISPATCHER[0]


class ChatHarness:
    def __init__(self, tmp: Path, **config: Any) -> None:
        self.tmp = tmp
        self.config = config
        self.pf = FakePlanfix(account="acme")
        self.tg = FakeTelegram()
        for user_id, name in ((ANNA, "Anna"), (BORIS, "Boris"), (CYRIL, "Cyril")):
            self.pf.add_user(user_id, name)
        self.now: datetime | None = None  # set to freeze the chat side's clock

    async def __aenter__(self) -> ChatHarness:
        await self.pf.start()
        await self.tg.start()
        raw: dict[str, Any] = {
            "planfix": {"url": self.pf.url, "account": "acme", "api_key": self.pf.api_key, "token": self.pf.token,
                        "web_url": "https://acme.planfix.com", "requests_per_second": 50.0, "timeout_seconds": 5},
            "telegram": {"token": self.tg.token, "api_base": self.tg.base_url, "admin_ids": [ADMIN_TG]},
            "state": {"path": str(self.tmp / "state.sqlite3")},
            "display": {"language": "en", "timezone": "Europe/Moscow"},
            "users": [{"telegram_id": ANNA_TG, "planfix_id": ANNA}, {"telegram_id": BORIS_TG, "planfix_id": BORIS}],
            "routes": [{"chat_id": TEAM}],
        }
        raw.update(self.config)
        self.settings = parse_settings(raw, environ={})
        self.store = Store.open(":memory:")
        # The real client and budget; plain-HTTP transport and 1000 rps just save each test ~0.1 s of set-up.
        self.client = PlanfixClient(url=self.pf.url, account="acme", api_key=self.pf.api_key, token=self.pf.token,
                                    timeout=5, transport=httpx.AsyncHTTPTransport(verify=False),
                                    budget=Budget(requests_per_second=1000))
        with mock.patch("ssl.create_default_context", return_value=_SSL):  # loading CA files costs 30 ms a bot
            self.bot = make_bot(self.settings)
        self.prefs = Prefs(self.store.db)
        self.audience = ChatAudience(self.prefs, self.settings)
        self.poller = Poller(client=self.client, store=self.store, route=self.route, language="en")
        self.ctx = ChatContext(
            settings=self.settings, client=self.client, store=self.store, prefs=self.prefs,
            tasks=TaskIndex(self.store.db), zone=lambda: self.settings.display_zone(self.poller.api_timezone),
            statuses=lambda: self.poller.statuses, last_poll=lambda: self.poller.last_success,
            poll_interval=lambda: 30.0, clock=self.clock, progress=self.poller.resume_progress,
        )
        self.dp = dispatcher()
        self.dp["chat"] = self.ctx
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        # aiogram's session.close() sleeps 250 ms for TLS shutdown; there is no TLS on loopback.
        inner = getattr(self.bot.session, "_session", None)
        if inner is not None:
            await inner.close()
        self.store.close()
        await self.tg.stop()
        await self.pf.stop()

    def clock(self) -> datetime:
        return self.now or datetime.now(UTC)

    def route(self, event, now):
        return deliveries(event, now, routes=self.settings.routes, users=self.settings.users,
                          zone=self.settings.display_zone("Europe/Moscow"), migrated=self.store.chats.chat_migrations(),
                          audience=self.audience)

    async def poll(self) -> None:
        """One feed poll (the first one baselines every task silently)."""
        await self.poller.poll_once()

    def planfix_requests(self, method: str | None = None) -> int:
        return sum(1 for r in self.pf.requests if method is None or r.method == method)

    async def _feed(self) -> None:
        for raw in self.tg.take_updates():
            await self.dp.feed_update(self.bot, Update.model_validate(raw, context={"bot": self.bot}))

    async def send(self, text: str, *, user: int = ANNA_TG, chat: int | None = None, chat_type: str | None = None,
                   thread: int | None = None) -> list[SentMessage]:
        """`user` writes `text` in `chat` (their private chat by default); returns what the bot sent or edited."""
        chat = user if chat is None else chat
        chat_type = chat_type or ("private" if chat > 0 else "supergroup")
        before = len(self.tg.sent)
        self.tg.user_sends(chat_id=chat, user_id=user, text=text, chat_type=chat_type, message_thread_id=thread)
        await self._feed()
        return self.tg.sent[before:]

    async def press(self, message: SentMessage, data: str, *, user: int = ANNA_TG) -> list[SentMessage]:
        """`user` presses a button with `data` under `message`; returns what the bot sent or edited."""
        before = len(self.tg.sent)
        self.tg.user_presses(chat_id=message.chat_id, user_id=user, message_id=message.message_id, data=data)
        await self._feed()
        return self.tg.sent[before:]

    def callback_answers(self) -> list[dict[str, Any]]:
        return self.tg.calls_of("answerCallbackQuery")

    def last_alert(self) -> str:
        return str(self.callback_answers()[-1].get("text", ""))


def buttons(message: SentMessage) -> dict[str, str]:
    """Button text → callback_data (or url) of an inline keyboard."""
    found: dict[str, str] = {}
    for row in (message.reply_markup or {}).get("inline_keyboard", []):
        for button in row:
            found[button["text"]] = button.get("callback_data") or button.get("url", "")
    return found
