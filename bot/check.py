"""`planfix-bot check`: validate the config, reach Planfix and Telegram, print one line per check with the fix.

Checks, in order: the Planfix endpoint answers (reachable, and as Planfix), the data centre is right (0024), the
account exists (0004, 0022/0023 plan), the credentials work (0001/0012/1001), the token may call every method
the daemon uses (0020), the API user's time zone, the daily budget header, and the Telegram bot token.
Each line is `ok`, `warn` (works, but look at this) or `FAIL ... — fix: ...`; the exit status is 0 when nothing
failed, 1 otherwise. A config error never gets here: the CLI exits with status 2 before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiogram.exceptions import TelegramAPIError, TelegramUnauthorizedError

from bot.app import make_bot, make_client
from bot.config import Settings
from bot.planfix.client import PlanfixClient
from bot.planfix.errors import ENDPOINTS, PlanfixEndpointError, PlanfixError, fix_hint
from bot.planfix.models import User
from bot.redact import redact

AUTH_CODES = {"0001", "0005", "0012", "1001", "1002", "0013", "0014"}
ACCOUNT_CODES = {"0002", "0004", "0010", "0022", "0023"}


@dataclass(frozen=True)
class Line:
    """One check's outcome: `ok`, `warn` or `FAIL`, what was found, and for a failure what to do."""

    status: str
    name: str
    detail: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"{self.status:<4} {self.name}: {self.detail}"
        return f"{text} — fix: {self.fix}" if self.fix else text


def ok(name: str, detail: str) -> Line:
    return Line("ok", name, detail)


def warn(name: str, detail: str, fix: str = "") -> Line:
    return Line("warn", name, detail, fix)


def fail(name: str, detail: str, fix: str) -> Line:
    return Line("FAIL", name, detail, fix)


async def check_planfix(settings: Settings, client: PlanfixClient) -> list[Line]:
    """Endpoint, data centre, account, auth, rights, time zone and budget header, as far as they can be told."""
    pf = settings.planfix
    try:
        user = await client.user_get()
    except PlanfixError as exc:
        return _first_call_failed(settings, exc)
    mode = "token" if pf.token else "login/password"
    lines = [
        ok("endpoint", f"{pf.url} answers as the Planfix XML API"),
        ok("data centre", "the account lives behind this endpoint"),
        ok("account", repr(pf.account)),
        ok("auth", f"{mode} accepted; API user #{user.id} {user.full_name!r}"),
    ]
    lines.append(await _check_rights(client))
    if settings.actions.enabled:
        lines.append(await _check_writes(client))
    lines.append(_check_zone(user))
    lines.append(check_links(settings, user))
    lines.append(_check_budget(settings, client))
    return lines


def _first_call_failed(settings: Settings, exc: PlanfixError) -> list[Line]:
    pf = settings.planfix
    code = exc.code
    skipped = "not checked (Planfix must accept the bot first)"
    if isinstance(exc, PlanfixEndpointError):
        return [fail("endpoint", str(exc), exc.fix)]
    if code is None:
        if "connection error" in str(exc) or "no response within" in str(exc):
            return [fail("endpoint", f"cannot reach {pf.url}: {exc}",
                         f"check planfix.url and the network; endpoints: {ENDPOINTS}")]
        return [fail("endpoint", f"{pf.url} did not answer like the Planfix XML API: {exc}",
                     f"set planfix.url to your data centre's endpoint: {ENDPOINTS}")]
    lines = [ok("endpoint", f"{pf.url} answers as the Planfix XML API")]
    if code == "0024":
        return [*lines, fail("data centre", str(exc), f"set planfix.url to your account's endpoint: {ENDPOINTS}"),
                Line("skip", "account", skipped), Line("skip", "auth", skipped)]
    lines.append(ok("data centre", "not reported wrong"))
    if code in ACCOUNT_CODES:
        return [*lines, fail("account", str(exc), fix_hint(code)), Line("skip", "auth", skipped)]
    lines.append(ok("account", repr(pf.account)))
    if code in AUTH_CODES:
        return [*lines, fail("auth", str(exc), fix_hint(code))]
    if code == "0007":
        return [*lines, fail("auth", f"cannot tell: {exc}", "wait for the daily request limit to reset, then check again")]
    return [*lines, fail("auth", str(exc), "check the [planfix] section; see the message above")]


async def _check_rights(client: PlanfixClient) -> Line:
    """Call each method the daemon uses, as cheaply as possible; 0020 means the token may not call it."""
    now = datetime.now(UTC)
    calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("task.getList", lambda: client.task_list_page(1, page_size=1)),
        ("action.getListByPeriod", lambda: client.action_list_by_period(now - timedelta(minutes=5), now, page_size=1,
                                                                         max_pages=1)),
        ("taskStatus.getSetList+getListOfSet", client.task_statuses),
    ]
    found: list[str] = []
    sample_id: int | None = None
    for index, (method, call) in enumerate(calls):
        try:
            result = await call()
        except PlanfixError as exc:
            return fail("rights", f"{method}: {exc}", _rights_fix(exc, method))
        found.append(method)
        if index == 0 and getattr(result, "items", None):
            sample_id = result.items[0].id
    if sample_id is None:
        return warn("rights", f"{', '.join(found)} allowed; task.getMulti and task.get not tried: the API user sees "
                    "no task", "make sure the token's user takes part in (or may see) the tasks to watch")
    for method, call in (("task.getMulti", lambda: client.task_get_multi([sample_id])),
                         ("task.get", lambda: client.task_get(id=sample_id))):
        try:
            await call()
        except PlanfixError as exc:
            return fail("rights", f"{method}: {exc}", _rights_fix(exc, method))
        found.append(method)
    return ok("rights", "the token may call " + ", ".join(found))


# Answers to an action.add without a task that show the token may call it (the call itself was accepted, only
# its parameters were not): required parameter missing / invalid / invalid here, or no such task.
_WRITE_PROBE_ALLOWED = frozenset({"0009", "0015", "0016", "0017", "3001"})


async def _check_writes(client: PlanfixClient) -> Line:
    """[actions] enabled: may the token add comments? Probed with an action.add that names no task, so nothing is
    posted: a token that may call it gets "required parameter missing" (0009), one that may not gets 0020
    "function call forbidden". (Which check Planfix makes first is UNCONFIRMED; any other answer is a warning.)"""
    try:
        await client.request("action.add", [("action", [("description", "planfix-bot check")])])
    except PlanfixError as exc:
        if exc.code in _WRITE_PROBE_ALLOWED:
            return ok("writes", f"the token may call action.add (probed without a task: answer {exc.code}, "
                      "nothing posted)")
        if exc.code == "0020":
            return fail("writes", f"action.add: {exc}", _rights_fix(exc, "action.add") + ", or set actions.enabled = "
                        "false")
        return warn("writes", f"cannot tell whether the token may add comments: {exc}",
                    "retry; replies from Telegram will say why if Planfix refuses them")
    return warn("writes", "action.add without a task was accepted (unexpected); check the API user's comments",
                "tell the maintainers: this Planfix behaves differently from the documentation")


def _rights_fix(exc: PlanfixError, method: str) -> str:
    if exc.code == "0020":
        return f"allow {method.split('+')[0]} for this token in Planfix: Account management → API access"
    return fix_hint(exc.code) if exc.code else "retry; if it persists, see the message"


def _check_zone(user: User) -> Line:
    if not user.timezone:
        return warn("time zone", "the API user has no time zone; the bot assumes UTC for Planfix dates",
                    "set the time zone in the API user's Planfix profile")
    try:
        ZoneInfo(user.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return warn("time zone", f"{user.timezone!r} is not a known IANA zone; the bot assumes UTC",
                    "set a standard time zone in the API user's Planfix profile")
    return ok("time zone", f"{user.timezone} (Planfix dates and the daily budget reset are read in it)")


def web_base(user: User, account: str) -> str | None:
    """The account's web address as the API user's data shows it (the userPic URL's host), if it can be told:
    only a host named after the account counts (https://ACCOUNT.planfix.ru)."""
    parts = urlsplit(user.user_pic)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or host.split(".")[0] != account.lower():
        return None
    return f"https://{host}"


def check_links(settings: Settings, user: User) -> Line:
    """Task links: is the default (or planfix.web_url) the address Planfix serves this account at?"""
    current = settings.planfix.task_web_url
    seen = web_base(user, settings.planfix.account)
    if seen is None:
        return ok("links", f"task links use {current}/task/NUMBER (the API user's data does not tell the account's "
                  "web address; set planfix.web_url if the links are wrong)")
    if seen.rstrip("/") == current.rstrip("/"):
        return ok("links", f"task links use {current}/task/NUMBER")
    return warn("links", f"task links would use {current}, but Planfix serves this account at {seen}",
                f'set planfix.web_url = "{seen}"')


def _check_budget(settings: Settings, client: PlanfixClient) -> Line:
    daily = settings.planfix.daily_request_budget
    remaining = client.rate_limit_remaining
    if remaining is None:
        return ok("budget", f"Planfix sent no X-RateLimit-Remaining header; the bot counts its own requests against "
                  f"planfix.daily_request_budget = {daily}")
    if remaining <= client.budget.reserve:
        return warn("budget", f"X-RateLimit-Remaining = {remaining}: today's requests are almost used up",
                    "wait for the daily reset; check for other integrations using the same account")
    return ok("budget", f"X-RateLimit-Remaining = {remaining} (planfix.daily_request_budget = {daily})")


async def check_telegram(settings: Settings) -> Line:
    bot = make_bot(settings)
    try:
        me = await bot.get_me()
        return ok("telegram", f"bot @{me.username} (id {me.id})")
    except TelegramUnauthorizedError:
        return fail("telegram", "the bot token was refused", "set telegram.token to the token @BotFather gave you")
    except (TelegramAPIError, OSError, TimeoutError) as exc:
        return fail("telegram", f"cannot reach {settings.telegram.api_base}: {exc}",
                    "check telegram.api_base and the network")
    finally:
        await bot.session.close()


async def run_check(settings: Settings, out: Callable[[str], None] = print) -> int:
    """`planfix-bot check`: one line per check; 0 when nothing failed, 1 otherwise."""
    client = make_client(settings)
    try:
        lines = await check_planfix(settings, client)
    finally:
        await client.aclose()
    lines.append(await check_telegram(settings))
    for line in lines:
        out(redact(str(line)))  # error texts from libraries can carry the bot token in a URL
    failed = [line for line in lines if line.status == "FAIL"]
    out(f"{len(failed)} check(s) failed" if failed else "all checks passed")
    return 1 if failed else 0
