"""`planfix-bot check`: validate the config, reach Planfix and Telegram, print one line per check."""

from __future__ import annotations

from collections.abc import Callable

from aiogram.exceptions import TelegramAPIError, TelegramUnauthorizedError

from bot.app import make_bot, make_client
from bot.config import Settings
from bot.planfix.errors import PlanfixError


async def run_check(settings: Settings, out: Callable[[str], None] = print) -> int:
    """`planfix-bot check`: reach Planfix and Telegram, print what was found, 0 when all is well."""
    ok = True
    client = make_client(settings)
    try:
        user = await client.user_get()
        out(f"ok   planfix: account {settings.planfix.account!r}, API user #{user.id} {user.full_name!r}, "
            f"time zone {user.timezone or 'unknown'}")
        if client.rate_limit_remaining is not None:
            out(f"ok   planfix: {client.rate_limit_remaining} requests left today")
    except PlanfixError as exc:
        ok = False
        out(f"FAIL planfix: {exc}")
    finally:
        await client.aclose()
    bot = make_bot(settings)
    try:
        me = await bot.get_me()
        out(f"ok   telegram: bot @{me.username} (id {me.id})")
    except TelegramUnauthorizedError:
        ok = False
        out("FAIL telegram: the bot token was refused (check telegram.token)")
    except (TelegramAPIError, OSError, TimeoutError) as exc:
        ok = False
        out(f"FAIL telegram: cannot reach {settings.telegram.api_base}: {exc}")
    finally:
        await bot.session.close()
    return 0 if ok else 1
