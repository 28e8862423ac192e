"""Chat commands /start, /help and /task, behind an access check that refuses strangers."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiogram import BaseMiddleware, Router
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions, Message, TelegramObject

from bot.chat.access import Viewer, may_see, viewer_for
from bot.config import Settings
from bot.planfix.client import PlanfixClient
from bot.planfix.errors import PlanfixError, PlanfixItemError
from bot.planfix.models import Task
from state.store import Store

log = structlog.get_logger(__name__)

TEXTS = {
    "ru": {
        "refused": "Извините, этот бот доступен только участникам команды. Ваш Telegram id: {user_id}.",
        "start": "Привет! Я сообщаю об изменениях задач в ПланФиксе.\nID этого чата: <code>{chat_id}</code>\n\n{help}",
        "help": "Команды:\n/task &lt;номер&gt; — карточка задачи\n/help — эта справка",
        "task_usage": "Укажите номер задачи: /task 1234",
        "not_found": "Задача #{number} не найдена или недоступна вам.",
        "unavailable": "ПланФикс сейчас не отвечает. Попробуйте через минуту.",
        "open": "Открыть в ПланФиксе",
    },
    "en": {
        "refused": "Sorry, this bot is for team members only. Your Telegram id: {user_id}.",
        "start": "Hello! I report task changes from Planfix.\nThis chat's id: <code>{chat_id}</code>\n\n{help}",
        "help": "Commands:\n/task &lt;number&gt; — a task card\n/help — this help",
        "task_usage": "Give a task number: /task 1234",
        "not_found": "Task #{number} was not found or is not visible to you.",
        "unavailable": "Planfix is not answering right now. Please try again in a minute.",
        "open": "Open in Planfix",
    },
}


@dataclass
class ChatContext:
    """What the command handlers need, handed to them through the dispatcher by parameter name."""

    settings: Settings
    client: PlanfixClient
    store: Store
    render_card: Callable[[Task], str]
    task_url: Callable[[int], str]

    @property
    def texts(self) -> dict[str, str]:
        return TEXTS[self.settings.display.language]


class AccessMiddleware(BaseMiddleware):
    """Lets listed users and admins through with a `viewer`; gives everyone else a short refusal."""

    def __init__(self, settings: Settings):
        self.settings = settings

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        user = getattr(event, "from_user", None)
        viewer = viewer_for(
            user.id if user else None, users=self.settings.users, admin_ids=self.settings.telegram.admin_ids
        )
        if viewer is None:
            log.info("chat.refused", user=user.id if user else None)
            if isinstance(event, Message):
                text = TEXTS[self.settings.display.language]["refused"].format(user_id=user.id if user else "?")
                await event.answer(text)
            return None
        data["viewer"] = viewer
        return await handler(event, data)


def build_router(settings: Settings) -> Router:
    router = Router(name="commands")
    router.message.middleware(AccessMiddleware(settings))
    router.message.register(cmd_start, CommandStart())
    router.message.register(cmd_help, Command("help"))
    router.message.register(cmd_task, Command("task"))
    return router


async def cmd_start(message: Message, chat: ChatContext, viewer: Viewer) -> None:
    # /start in a chat that had blocked or removed the bot makes it deliverable again.
    if chat.store.set_chat_active(message.chat.id, True, None, datetime.now(UTC)):
        log.info("chat.reactivated", chat=message.chat.id)
    texts = chat.texts
    await message.answer(texts["start"].format(chat_id=message.chat.id, help=texts["help"]))


async def cmd_help(message: Message, chat: ChatContext, viewer: Viewer) -> None:
    await message.answer(chat.texts["help"])


def parse_task_number(args: str | None) -> int | None:
    match = re.fullmatch(r"\s*#?(\d{1,12})\s*", args or "")
    return int(match.group(1)) if match else None


async def cmd_task(message: Message, command: CommandObject, chat: ChatContext, viewer: Viewer) -> None:
    texts = chat.texts
    number = parse_task_number(command.args)
    if number is None:
        await message.answer(texts["task_usage"])
        return
    try:
        task = await chat.client.task_get(general=number)
    except PlanfixItemError:
        task = None
    except PlanfixError as exc:
        log.warning("chat.planfix_unavailable", command="task", error=str(exc))
        await message.answer(texts["unavailable"])
        return
    # A task that exists but is not theirs gets the same answer as a missing one: nothing is revealed.
    if task is None or not may_see(viewer, task):
        await message.answer(texts["not_found"].format(number=number))
        return
    button = InlineKeyboardButton(text=texts["open"], url=chat.task_url(task.general))
    await message.answer(
        chat.render_card(task),
        reply_markup=InlineKeyboardMarkup(inline_keyboard=[[button]]),
        link_preview_options=LinkPreviewOptions(is_disabled=True),
    )
