"""A fake Telegram Bot API on 127.0.0.1 that aiogram talks to over real HTTP, with Telegram's validation and faults."""

# aiogram reaches it through `AiohttpSession(api=TelegramAPIServer.from_base(fake.base_url))`, the option users set
# for a local Bot API server. Requests arrive as POST {base}/bot{token}/{method} with form fields (aiogram) or a
# JSON body (other clients); complex fields (reply_markup, link_preview_options, ...) are JSON-encoded strings.

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.fakes.telegram_html import (
    ParsedText,
    TelegramHTMLError,
    TelegramTextError,
    check_message_text,
    parse_telegram_html,
)

__all__ = ["FakeTelegram", "SentMessage", "TelegramHTMLError", "parse_telegram_html"]

log = logging.getLogger(__name__)

SENDING_METHODS = frozenset({"sendmessage", "editmessagetext"})  # what `method=None` fault rules target
_BLOCKABLE = SENDING_METHODS | {"sendchataction"}
_SCOPE_TYPES = frozenset({"default", "all_private_chats", "all_group_chats", "all_chat_administrators", "chat",
                          "chat_administrators", "chat_member"})
_JSON_FIELDS = frozenset(
    {"reply_markup", "link_preview_options", "entities", "allowed_updates", "commands", "scope",
     "reply_parameters"}
)
_INT_FIELDS = frozenset(
    {"chat_id", "message_id", "offset", "limit", "timeout", "message_thread_id", "user_id", "cache_time",
     "reply_to_message_id", "from_chat_id"}
)
_BOOL_FIELDS = frozenset(
    {"disable_notification", "protect_content", "disable_web_page_preview", "show_alert", "drop_pending_updates",
     "allow_sending_without_reply"}
)
_INTEGER = re.compile(r"^-?\d+$")
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same "
    "as a current content and reply markup of the message"
)
_CONFLICT = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
_FAULT_KINDS = frozenset({"http500", "bad_gateway", "hang", "drop", "lost_reply"})


@dataclass
class SentMessage:
    """A message the fake accepted (sendMessage) or changed (editMessageText), as the chat would now show it."""

    chat_id: int
    message_id: int
    text: str  # raw, as sent (markup included)
    parse_mode: str | None
    plain_text: str  # what the user sees: tags removed, entities decoded
    reply_markup: dict[str, Any] | None  # as sent (inline keyboard, reply keyboard, force_reply, ...)
    disable_notification: bool
    link_preview_disabled: bool
    message_thread_id: int | None
    edited: bool
    at: float  # time.monotonic() when accepted; compare them to check pacing
    entities: tuple[dict[str, Any], ...] = ()


class ApiError(Exception):
    """An error answer in Telegram's shape: HTTP status = error_code."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code, self.description, self.parameters = code, description, parameters

    def response(self) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": self.code, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return web.json_response(body, status=self.code)


@dataclass
class _Rule:
    """An injected error or fault, consumed by the next matching requests."""

    times: int
    chat_id: int | None
    method: str | None  # lower-case; None = any sending method
    error: ApiError | None = None
    fault: str | None = None
    seconds: float = 0.0

    def matches(self, method: str, params: dict[str, Any]) -> bool:
        if self.method is None and method not in SENDING_METHODS:
            return False
        if self.method not in (None, "*", method):
            return False
        return self.chat_id is None or params.get("chat_id") == self.chat_id


@dataclass
class _Bucket:
    """Token bucket for strict_limits: `capacity` requests at once, refilled at `rate` per second."""

    capacity: float
    rate: float
    tokens: float = -1.0
    updated: float = 0.0

    def wait(self, now: float) -> float:
        if self.tokens < 0:
            self.tokens, self.updated = self.capacity, now
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1


@dataclass
class _Window:
    """Sliding window for strict_limits: at most `limit` requests in any `period` seconds (how Telegram counts a
    group's 20 messages a minute: a burst of 20 and then one per 3 s is refused within the first minute)."""

    limit: int
    period: float
    times: deque[float] = field(default_factory=deque)

    def wait(self, now: float) -> float:
        while self.times and self.times[0] <= now - self.period:
            self.times.popleft()
        return 0.0 if len(self.times) < self.limit else self.times[len(self.times) - self.limit] + self.period - now

    def take(self, now: float) -> None:
        self.times.append(now)


@dataclass
class _Update:
    update_id: int
    kind: str  # "message" | "callback_query" | "chat_member"
    payload: dict[str, Any] = field(default_factory=dict)

    def to_api(self) -> dict[str, Any]:
        return {"update_id": self.update_id, self.kind: self.payload}


class FakeTelegram:
    """The Bot API methods planfix-bot uses, over real HTTP on loopback, with injectable Telegram failures."""

    # strict_limits: Telegram's published guidance (bots FAQ); the real limits are unpublished and vary.
    PER_CHAT_PER_SECOND = 1.0
    PER_CHAT_BURST = 3
    GROUP_PER_MINUTE = 20
    GROUP_WINDOW_SECONDS = 60.0  # GROUP_PER_MINUTE messages in any window this long
    GLOBAL_PER_SECOND = 30

    def __init__(
        self,
        *,
        token: str = "123456:TEST-TOKEN",
        bot_id: int = 123456,
        username: str = "planfix_test_bot",
        strict_limits: bool = False,
    ) -> None:
        self.token, self.bot_id, self.username, self.strict_limits = token, bot_id, username, strict_limits
        self.base_url = ""
        self.sent: list[SentMessage] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.on_message: Callable[[SentMessage], None] | None = None
        self.rate_limit_hits = 0
        self.in_flight = 0  # sending requests received and not yet answered (a hang keeps them here)
        self.commands: dict[str, list[dict[str, Any]]] = {}  # json(scope)+language -> setMyCommands list
        self.chats: dict[int, dict[str, Any]] = {}  # what user_sends() taught the fake about chats
        self.chat_admins: dict[int, set[int]] = {}  # group chat id -> its administrators' user ids (getChatMember)
        self._gone: dict[int, dict[int, str]] = {}  # group chat id -> user id -> "left" | "kicked"
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}  # current Message objects
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._update_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._creators: dict[int, int] = {}
        self._open_callbacks: set[str] = set()
        self._updates: list[_Update] = []
        self._delivered: dict[int, _Update] = {}  # every update ever queued, for redeliver()
        self._rules: list[_Rule] = []
        self._blocked: dict[int, str] = {}
        self._migrated: dict[int, int] = {}
        self._buckets: dict[object, _Bucket | _Window] = {}
        self._poll_generation = 0
        self._changed = asyncio.Event()  # replaced after every set(): wakes long polls and wait_for_messages
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._methods: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "getme": self._get_me,
            "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text,
            "editmessagereplymarkup": self._edit_message_reply_markup,
            "deletewebhook": self._true,
            "getupdates": self._get_updates,
            "setmycommands": self._set_my_commands,
            "deletemycommands": self._delete_my_commands,
            "getmycommands": self._get_my_commands,
            "answercallbackquery": self._answer_callback_query,
            "getchat": self._get_chat,
            "getchatmember": self._get_chat_member,
            "sendchataction": self._send_chat_action,
            "close": self._true,
            "logout": self._true,
        }

    # ── lifecycle ────────────────────────────────────────────────────────────────────────────────────────────

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0 = ephemeral); state survives stop()/start(port=...) to fake an outage."""
        self._closing.clear()
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        # A short shutdown_timeout: hung long polls must not hold the test suite for aiohttp's default 60 s.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.base_url = f"http://{host}:{self._runner.addresses[0][1]}"
        return self.base_url

    async def stop(self) -> None:
        self._closing.set()
        self._wake()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ── what tests read ──────────────────────────────────────────────────────────────────────────────────────

    def messages_to(self, chat_id: int) -> list[SentMessage]:
        return [m for m in self.sent if m.chat_id == chat_id]

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name.lower() == method.lower()]

    def message(self, chat_id: int, message_id: int) -> dict[str, Any] | None:
        """The Message object as the chat shows it now (after edits), or None."""
        return self._messages.get((chat_id, message_id))

    async def wait_for_messages(self, n: int, *, chat_id: int | None = None, timeout: float = 10) -> list[SentMessage]:
        """Wait until `sent` (edits included) holds at least n messages (to chat_id, if given); return them."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = self.sent if chat_id is None else self.messages_to(chat_id)
            if len(found) >= n:
                return list(found)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                texts = [m.plain_text[:80] for m in found]
                where = "" if chat_id is None else f" to chat {chat_id}"
                raise TimeoutError(f"expected {n} messages{where} within {timeout} s, got {len(found)}: {texts}")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    # ── users talking to the bot ─────────────────────────────────────────────────────────────────────────────

    def user_sends(
        self,
        *,
        chat_id: int,
        user_id: int,
        text: str,
        chat_type: str = "private",
        username: str | None = None,
        first_name: str = "Test",
        message_thread_id: int | None = None,
        reply_to: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> int:
        """Queue a Message update (served by getUpdates); returns its update_id. `reply_to`: the message id in this
        chat it replies to; `extra`: more Message fields (e.g. a photo; text="" then sends no text)."""
        user = {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": "ru"}
        if username:
            user["username"] = username
        chat = self._remember_chat(chat_id, chat_type, user)
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat_id),
            "from": user,
            "chat": chat,
            "date": int(time.time()),
        }
        if text:
            message["text"] = text
        if reply_to is not None:
            replied = self._messages.get((chat_id, reply_to)) or {
                "message_id": reply_to, "chat": chat, "date": int(time.time())}
            message["reply_to_message"] = {k: v for k, v in replied.items() if k != "reply_to_message"}
        message.update(extra or {})
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        if message_thread_id is not None:
            message.update(message_thread_id=message_thread_id, is_topic_message=True)
        self._messages[(chat_id, message["message_id"])] = message
        return self._queue("message", message)

    def user_presses(self, *, chat_id: int, user_id: int, message_id: int, data: str) -> int:
        """Queue a callback_query update for an inline button under message_id; returns its update_id."""
        message = self._messages.get((chat_id, message_id)) or {
            "message_id": message_id, "chat": self._chat(chat_id), "date": int(time.time()), "text": "…"
        }
        callback_id = str(next(self._callback_ids))
        self._open_callbacks.add(callback_id)
        query = {
            "id": callback_id,
            "from": {"id": user_id, "is_bot": False, "first_name": "Test"},
            "message": message,
            "chat_instance": str(abs(chat_id)),
            "data": data,
        }
        return self._queue("callback_query", query)

    def redeliver(self, update_id: int) -> None:
        """Serve an update again, as Telegram does when the bot's confirmation (the next offset) was lost."""
        update = self._delivered[update_id]
        self._updates.append(update)
        self._wake()

    def set_chat_admins(self, chat_id: int, *user_ids: int) -> None:
        """Who getChatMember reports as administrators of a group (the first one as its creator)."""
        self.chat_admins[chat_id] = set(user_ids)
        self._creators[chat_id] = user_ids[0] if user_ids else 0

    def set_member_status(self, chat_id: int, user_id: int, status: str, *, bot_is_admin: bool = True) -> int | None:
        """A person's standing in a group changes ("creator", "administrator", "member", "left" or "kicked").
        Telegram tells a bot about it with a chat_member update only when the bot administers the group (and asked
        for them in allowed_updates); returns that update's id, or None when `bot_is_admin` is False."""
        if status not in ("creator", "administrator", "member", "left", "kicked"):
            raise ValueError(status)
        old = self._member(chat_id, user_id)
        admins = self.chat_admins.setdefault(chat_id, set())
        gone = self._gone.setdefault(chat_id, {})
        gone.pop(user_id, None)
        if self._creators.get(chat_id) == user_id and status != "creator":
            self._creators[chat_id] = 0
        if status in ("creator", "administrator"):
            admins.add(user_id)
            if status == "creator":
                self._creators[chat_id] = user_id
        else:
            admins.discard(user_id)
            if status in ("left", "kicked"):
                gone[user_id] = status
        if not bot_is_admin:
            return None
        update = {"chat": self._chat(chat_id), "from": old["user"], "date": int(time.time()),
                  "old_chat_member": old, "new_chat_member": self._member(chat_id, user_id)}
        return self._queue("chat_member", update)

    def take_updates(self) -> list[dict[str, Any]]:
        """Remove and return the queued updates (as getUpdates would serve them), for tests that feed updates to
        a dispatcher directly instead of running polling."""
        updates, self._updates = self._updates, []
        return [u.to_api() for u in updates]

    # ── fault injection ──────────────────────────────────────────────────────────────────────────────────────

    def inject_error(
        self,
        error_code: int,
        description: str,
        *,
        chat_id: int | None = None,
        method: str | None = None,
        times: int = 1,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next `times` matching requests with this error (method None = any sending method)."""
        error = ApiError(error_code, description, parameters)
        self._rules.append(_Rule(times, chat_id, method and method.lower(), error=error))

    def inject_retry_after(self, seconds: int, *, chat_id: int | None = None, times: int = 1,
                           method: str | None = None) -> None:
        self.inject_error(429, f"Too Many Requests: retry after {seconds}", chat_id=chat_id, method=method,
                          times=times, parameters={"retry_after": seconds})

    def inject_migrate(self, chat_id: int, new_chat_id: int) -> None:
        """The group became a supergroup: every later request to chat_id fails with migrate_to_chat_id."""
        self._migrated[chat_id] = new_chat_id

    def block(self, chat_id: int, description: str = "Forbidden: bot was blocked by the user") -> None:
        self._blocked[chat_id] = description

    def unblock(self, chat_id: int) -> None:
        self._blocked.pop(chat_id, None)

    def clear_faults(self) -> None:
        """Forget every injected error and fault not yet consumed (blocks and migrations stay)."""
        self._rules.clear()

    def inject_fault(self, kind: str, *, times: int = 1, seconds: float = 0, method: str | None = None,
                     chat_id: int | None = None) -> None:
        """Transport faults for the next matching requests (method None = any sending method, "*" = any):
        "http500"; "bad_gateway" (502 with an HTML body, like a proxy); "hang" (wait `seconds`, then handle
        normally, even if the client gave up); "drop" (close the connection, nothing handled); "lost_reply"
        (handle it, then close the connection: Telegram got the message but the client can't know)."""
        if kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(_FAULT_KINDS)}")
        self._rules.append(_Rule(times, chat_id, method and method.lower(), fault=kind, seconds=seconds))

    # ── HTTP ─────────────────────────────────────────────────────────────────────────────────────────────────

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params = await _read_params(request)
        self.calls.append((method, params))
        if request.match_info["token"] != self.token:
            return ApiError(401, "Unauthorized").response()
        name = method.lower()
        handler = self._methods.get(name)
        if handler is None:
            return ApiError(404, "Not Found").response()
        rule = self._take_rule(name, params)
        sending = name in SENDING_METHODS
        self.in_flight += sending
        try:
            if rule and rule.fault:
                early = await self._fault_before(rule, request)
                if early is not None:
                    return early
            if rule and rule.error:
                raise rule.error
            self._check_chat_state(name, params)
            result = await handler(params)
        except ApiError as error:
            return error.response()
        finally:
            self.in_flight -= sending
        if rule and rule.fault == "lost_reply":
            return _drop(request)
        return web.json_response({"ok": True, "result": result})

    async def _fault_before(self, rule: _Rule, request: web.Request) -> web.StreamResponse | None:
        if rule.fault == "http500":
            return ApiError(500, "Internal Server Error").response()
        if rule.fault == "bad_gateway":
            return web.Response(status=502, text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        if rule.fault == "drop":
            return _drop(request)
        if rule.fault == "hang":
            try:
                await asyncio.wait_for(self._closing.wait(), rule.seconds)
            except TimeoutError:
                pass
        return None

    def _take_rule(self, method: str, params: dict[str, Any]) -> _Rule | None:
        for rule in self._rules:
            if rule.matches(method, params):
                rule.times -= 1
                if rule.times <= 0:
                    self._rules.remove(rule)
                return rule
        return None

    def _check_chat_state(self, method: str, params: dict[str, Any]) -> None:
        chat_id = params.get("chat_id")
        if chat_id in self._migrated:
            raise ApiError(400, "Bad Request: group chat was upgraded to a supergroup chat",
                           {"migrate_to_chat_id": self._migrated[chat_id]})
        if method in _BLOCKABLE and chat_id in self._blocked:
            raise ApiError(403, self._blocked[chat_id])

    def _check_rate(self, chat_id: int) -> None:
        if not self.strict_limits:
            return
        now = time.monotonic()
        buckets = [
            self._bucket("global", self.GLOBAL_PER_SECOND, self.GLOBAL_PER_SECOND),
            self._bucket(("chat", chat_id), self.PER_CHAT_BURST, self.PER_CHAT_PER_SECOND),
        ]
        window = self._window(chat_id) if chat_id < 0 else None
        wait = max([b.wait(now) for b in buckets] + ([window.wait(now)] if window else []))
        if wait > 0:
            self.rate_limit_hits += 1
            seconds = max(1, math.ceil(wait))
            raise ApiError(429, f"Too Many Requests: retry after {seconds}", {"retry_after": seconds})
        for b in buckets:
            b.take()
        if window:
            window.take(now)

    def _bucket(self, key: object, capacity: float, rate: float) -> _Bucket:
        bucket = self._buckets.setdefault(key, _Bucket(capacity, rate))
        assert isinstance(bucket, _Bucket)
        return bucket

    def _window(self, chat_id: int) -> _Window:
        window = self._buckets.setdefault(("group", chat_id), _Window(self.GROUP_PER_MINUTE, self.GROUP_WINDOW_SECONDS))
        assert isinstance(window, _Window)
        return window

    # ── methods ──────────────────────────────────────────────────────────────────────────────────────────────

    async def _true(self, params: dict[str, Any]) -> bool:
        return True

    async def _get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._bot_user() | {
            "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False
        }

    async def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = _chat_id(params)
        parsed = _parse_text(params)
        markup = _reply_markup(params)
        self._check_rate(chat_id)
        message = self._message_object(chat_id, self._next_message_id(chat_id), parsed, markup, params)
        self._record(message, params, edited=False)
        return message

    async def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        if params.get("inline_message_id"):
            return True
        chat_id = _chat_id(params)
        message_id = params.get("message_id")
        if not isinstance(message_id, int):
            raise ApiError(400, "Bad Request: message identifier is not specified")
        current = self._messages.get((chat_id, message_id))
        if current is None or current.get("from", {}).get("id") != self.bot_id:
            raise ApiError(400, "Bad Request: message to edit not found")
        parsed = _parse_text(params)
        markup = _reply_markup(params)  # an edit without reply_markup removes the keyboard, as in Telegram
        entities = [e.to_api() for e in parsed.entities]
        if (current["text"], current.get("entities", []), current.get("reply_markup")) == (
            parsed.text, entities, _inline(markup)
        ):
            raise ApiError(400, _NOT_MODIFIED)
        self._check_rate(chat_id)
        message = self._message_object(chat_id, message_id, parsed, markup, params)
        message["date"] = current["date"]
        message["edit_date"] = int(time.time())
        self._record(message, params, edited=True)
        return message

    async def _edit_message_reply_markup(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        """Only the inline keyboard changes; recorded in `sent` like a text edit (same text, edited=True)."""
        if params.get("inline_message_id"):
            return True
        chat_id = _chat_id(params)
        message_id = params.get("message_id")
        current = self._messages.get((chat_id, message_id)) if isinstance(message_id, int) else None
        if current is None or current.get("from", {}).get("id") != self.bot_id:
            raise ApiError(400, "Bad Request: message to edit not found")
        markup = _reply_markup(params)
        if _inline(markup) == current.get("reply_markup"):
            raise ApiError(400, _NOT_MODIFIED)
        message = dict(current, edit_date=int(time.time()))
        message.pop("reply_markup", None)
        if _inline(markup) is not None:
            message["reply_markup"] = markup
        previous = next((m for m in reversed(self.sent) if (m.chat_id, m.message_id) == (chat_id, message_id)), None)
        text = previous.text if previous else current["text"]
        self._record(message, {**params, "text": text, "parse_mode": previous.parse_mode if previous else None},
                     edited=True)
        return message

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        self._poll_generation += 1
        generation = self._poll_generation
        self._wake()  # an older long poll still waiting learns it was superseded (409, as Telegram does)
        self._confirm(params.get("offset"))
        limit = min(max(_int(params.get("limit"), 100), 1), 100)
        allowed = params.get("allowed_updates") or None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(_int(params.get("timeout"), 0), 0)
        while True:
            if generation != self._poll_generation:
                raise ApiError(409, _CONFLICT)
            batch = self._pending(limit, allowed)
            remaining = deadline - loop.time()
            if batch or remaining <= 0 or self._closing.is_set():
                return [u.to_api() for u in batch]
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    async def _set_my_commands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise ApiError(400, "Bad Request: can't parse commands JSON object")
        self._check_scope(params.get("scope"))
        self.commands[_commands_key(params)] = commands
        return True

    def _check_scope(self, scope: Any) -> None:
        """BotCommandScope as Telegram checks it: a known type; a chat scope names a chat the bot knows (a
        private chat only once its user has written to the bot: "chat not found" otherwise)."""
        if scope is None:
            return
        if not isinstance(scope, dict) or scope.get("type") not in _SCOPE_TYPES:
            raise ApiError(400, "Bad Request: can't parse BotCommandScope")
        if scope["type"] in ("chat", "chat_administrators", "chat_member"):
            chat_id = scope.get("chat_id")
            if not isinstance(chat_id, int) or (chat_id > 0 and chat_id not in self.chats):
                raise ApiError(400, "Bad Request: chat not found")
            if scope["type"] == "chat_member" and not isinstance(scope.get("user_id"), int):
                raise ApiError(400, "Bad Request: user not found")

    def menu_for(self, chat_id: int, language: str = "") -> list[str]:
        """The command menu a user sees in their private chat with the bot, resolved like Telegram: the chat's
        scope, then all private chats, then the default, each with the user's language before without it."""
        for scope in ({"type": "chat", "chat_id": chat_id}, {"type": "all_private_chats"}, {"type": "default"}):
            for lang in ((language, "") if language else ("",)):
                key = json.dumps(scope, sort_keys=True) + "|" + lang
                if key in self.commands:
                    return [c["command"] for c in self.commands[key]]
        return []

    async def _delete_my_commands(self, params: dict[str, Any]) -> bool:
        self.commands.pop(_commands_key(params), None)
        return True

    async def _get_my_commands(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self.commands.get(_commands_key(params), [])

    async def _answer_callback_query(self, params: dict[str, Any]) -> bool:
        query_id = str(params.get("callback_query_id", ""))
        if query_id not in self._open_callbacks:
            raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        self._open_callbacks.discard(query_id)
        return True

    async def _get_chat(self, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat(_chat_id(params))
        gifts = dict.fromkeys(
            ("unlimited_gifts", "limited_gifts", "unique_gifts", "premium_subscription", "gifts_from_channels"),
            False,
        )
        return chat | {"accent_color_id": 0, "max_reaction_count": 11, "accepted_gift_types": gifts}

    async def _get_chat_member(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = _chat_id(params)
        user_id = params.get("user_id")
        if not isinstance(user_id, int):
            raise ApiError(400, "Bad Request: invalid user_id specified")
        return self._member(chat_id, user_id)

    def _member(self, chat_id: int, user_id: int) -> dict[str, Any]:
        """A ChatMember object as getChatMember and chat_member updates show it."""
        user = {"id": user_id, "is_bot": False, "first_name": f"User {user_id}"}
        if chat_id > 0:  # a private chat: the other party is a plain member
            return {"status": "member", "user": user}
        gone = self._gone.get(chat_id, {}).get(user_id)
        if gone == "kicked":
            return {"status": "kicked", "user": user, "until_date": 0}
        if gone == "left":
            return {"status": "left", "user": user}
        if self._creators.get(chat_id) == user_id:
            return {"status": "creator", "user": user, "is_anonymous": False}
        if user_id in self.chat_admins.get(chat_id, set()):
            rights = dict.fromkeys(
                ("can_be_edited", "is_anonymous", "can_manage_chat", "can_delete_messages", "can_manage_video_chats",
                 "can_restrict_members", "can_promote_members", "can_change_info", "can_invite_users",
                 "can_post_stories", "can_edit_stories", "can_delete_stories", "can_send_welcome_messages"),
                False,
            )
            return {"status": "administrator", "user": user, **rights}
        return {"status": "member", "user": user}

    async def _send_chat_action(self, params: dict[str, Any]) -> bool:
        _chat_id(params)
        return True

    # ── state helpers ────────────────────────────────────────────────────────────────────────────────────────

    def _bot_user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "Planfix Test Bot", "username": self.username}

    def _chat(self, chat_id: int) -> dict[str, Any]:
        if chat_id in self.chats:
            return dict(self.chats[chat_id])
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": f"User {chat_id}"}
        kind = "supergroup" if str(chat_id).startswith("-100") else "group"
        return {"id": chat_id, "type": kind, "title": f"Chat {chat_id}"}

    def _remember_chat(self, chat_id: int, chat_type: str, user: dict[str, Any]) -> dict[str, Any]:
        if chat_type == "private":
            chat = {"id": chat_id, "type": "private", "first_name": user["first_name"]}
            if "username" in user:
                chat["username"] = user["username"]
        else:
            chat = {"id": chat_id, "type": chat_type, "title": f"Chat {chat_id}"}
        self.chats[chat_id] = chat
        return dict(chat)

    def _next_message_id(self, chat_id: int) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    def _message_object(self, chat_id: int, message_id: int, parsed: ParsedText, markup: dict[str, Any] | None,
                        params: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": self._bot_user(),
            "chat": self._chat(chat_id),
            "date": int(time.time()),
            "text": parsed.text,
        }
        if parsed.entities:
            message["entities"] = [e.to_api() for e in parsed.entities]
        if _inline(markup) is not None:  # Telegram echoes only inline keyboards on the Message
            message["reply_markup"] = markup
        if params.get("message_thread_id") is not None:
            message.update(message_thread_id=params["message_thread_id"], is_topic_message=True)
        if _preview_disabled(params):
            message["link_preview_options"] = {"is_disabled": True}
        return message

    def _record(self, message: dict[str, Any], params: dict[str, Any], *, edited: bool) -> None:
        chat_id = message["chat"]["id"]
        self._messages[(chat_id, message["message_id"])] = message
        sent = SentMessage(
            chat_id=chat_id,
            message_id=message["message_id"],
            text=params["text"],
            parse_mode=params.get("parse_mode"),
            plain_text=message["text"],
            reply_markup=params.get("reply_markup"),
            disable_notification=bool(params.get("disable_notification")),
            link_preview_disabled=_preview_disabled(params),
            message_thread_id=params.get("message_thread_id"),
            edited=edited,
            at=time.monotonic(),
            entities=tuple(message.get("entities", ())),
        )
        self.sent.append(sent)
        self._wake()
        if self.on_message is not None:
            try:
                self.on_message(sent)
            except Exception:  # a broken hook must not turn into a Telegram error for the bot under test
                log.exception("FakeTelegram.on_message hook failed")

    def _queue(self, kind: str, payload: dict[str, Any]) -> int:
        update = _Update(next(self._update_ids), kind, payload)
        self._delivered[update.update_id] = update
        self._updates.append(update)
        self._wake()
        return update.update_id

    def _confirm(self, offset: Any) -> None:
        if not isinstance(offset, int) or offset == 0:
            return
        if offset < 0:  # Telegram: the last -offset updates; everything before is forgotten
            self._updates = self._updates[offset:]
        else:
            self._updates = [u for u in self._updates if u.update_id >= offset]

    def _pending(self, limit: int, allowed: list[str] | None) -> list[_Update]:
        if allowed:  # Telegram never delivers update types the poller opted out of
            self._updates = [u for u in self._updates if u.kind in allowed]
        return self._updates[:limit]

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


# ── request parsing ──────────────────────────────────────────────────────────────────────────────────────────


async def _read_params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                params.update(body)
        else:
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return {key: _coerce(key, value) for key, value in params.items()}


def _coerce(key: str, value: Any) -> Any:
    """Form fields arrive as strings; give them the JSON types Telegram's documentation names."""
    if not isinstance(value, str):
        return value
    if key in _JSON_FIELDS:
        try:
            return json.loads(value)
        except ValueError:
            return value
    if key in _INT_FIELDS and _INTEGER.match(value):
        return int(value)
    if key in _BOOL_FIELDS:
        return value.lower() in ("true", "1")
    return value


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _chat_id(params: dict[str, Any]) -> int:
    chat_id = params.get("chat_id")
    if chat_id in (None, ""):
        raise ApiError(400, "Bad Request: chat_id is empty")
    if not isinstance(chat_id, int):
        raise ApiError(400, "Bad Request: chat not found")
    return chat_id


def _parse_text(params: dict[str, Any]) -> ParsedText:
    text = params.get("text")
    if not isinstance(text, str) or not text:
        raise ApiError(400, "Bad Request: message text is empty")
    try:
        return check_message_text(text, params.get("parse_mode"))
    except TelegramTextError as error:
        raise ApiError(400, error.description) from None


def _reply_markup(params: dict[str, Any]) -> dict[str, Any] | None:
    markup = params.get("reply_markup")
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    for row in markup.get("inline_keyboard", []):
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(data.encode()) <= 64:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    return markup


def _inline(markup: dict[str, Any] | None) -> dict[str, Any] | None:
    return markup if markup is not None and "inline_keyboard" in markup else None


def _preview_disabled(params: dict[str, Any]) -> bool:
    options = params.get("link_preview_options")
    if isinstance(options, dict) and options.get("is_disabled"):
        return True
    return bool(params.get("disable_web_page_preview"))


def _commands_key(params: dict[str, Any]) -> str:
    scope = params.get("scope") or {"type": "default"}
    return json.dumps(scope, sort_keys=True) + "|" + str(params.get("language_code") or "")


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the TCP connection without an answer; the client sees a disconnect."""
    if request.transport is not None:
        request.transport.close()
    raise asyncio.CancelledError  # nothing may be written after the connection is gone
