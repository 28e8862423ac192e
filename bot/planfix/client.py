"""Async Planfix XML API client: the request envelope, both auth modes, one shared rate limit, typed results."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, tzinfo
from types import TracebackType
from typing import TypeVar, Union
from xml.etree.ElementTree import Element, SubElement, tostring  # building requests only, never parsing
from zoneinfo import ZoneInfo

import httpx
import structlog

from bot import __version__
from bot.planfix.budget import Budget
from bot.planfix.dates import Covered, covering_wall_time, format_date, format_datetime, format_wall
from bot.planfix.errors import (
    WRONG_ENDPOINT,
    PlanfixConfigError,
    PlanfixError,
    PlanfixLimitError,
    PlanfixRequestError,
    PlanfixSessionError,
    PlanfixTransientError,
    endpoint_error,
)
from bot.planfix.models import Action, Page, Status, Task, User
from bot.planfix.xmlparse import (
    child,
    parse_action_page,
    parse_one_task,
    parse_response,
    parse_sid,
    parse_status_page,
    parse_status_set_page,
    parse_task_page,
    parse_user,
    shape_error,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

# A request parameter: a leaf value or a nested list of (name, value) pairs, e.g. ("task", [("id", 42)]).
ParamValue = Union[str, int, bool, date, datetime, None, Sequence["Param"]]
Param = tuple[str, ParamValue]
Params = Union[Sequence[Param], Callable[[Element], None]]

MAX_PAGE_SIZE = 100  # every Planfix list method caps pageSize at 100 (PLANFIX-API.md §7)
MAX_PAGES = 1000  # a list longer than this many pages (100,000 items) is cut off, with a log line
PAST_THE_END = "0015"  # what a page past the end of a list may answer instead of an empty list (§16)
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


class PlanfixClient:
    """The Planfix XML API over httpx. One instance = one account, one session, one rate budget.

    Token mode (preferred) sends Basic (api_key, token) and no sid. Login mode sends Basic (api_key, "") and
    logs in lazily with auth.login; on a session error (0005) it logs in again once and repeats the request.
    Every HTTP request, auth.login included, first takes a slot from one `Budget` (budget.py): concurrent
    callers together stay within `requests_per_second`, higher priorities go first, and background requests
    stop while the daily budget is paused. Transient failures are raised, not retried: retry policy belongs to
    the caller (bot/watch/jobs.py). Dates in requests and responses are in `api_timezone` (set it from
    `user_get().timezone`).
    """

    def __init__(
        self,
        *,
        url: str,
        account: str,
        api_key: str,
        token: str | None = None,
        login: str | None = None,
        password: str | None = None,
        requests_per_second: float = 1.0,
        timeout: float = 30.0,
        max_body_bytes: int = 20_000_000,
        transport: httpx.AsyncBaseTransport | None = None,
        api_timezone: tzinfo = ZoneInfo("UTC"),
        budget: Budget | None = None,
    ) -> None:
        if not token and not (login and password is not None):
            raise PlanfixConfigError("Planfix auth needs a token, or a login and a password")
        if requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive")
        self.budget = budget or Budget(requests_per_second=requests_per_second)
        self.request_counts: Counter[tuple[str, str]] = Counter()  # (method, "ok" | error code | failure kind)
        self.items_skipped: Counter[str] = Counter()  # malformed list items left out, by method
        self.url = url
        self.account = account
        self.api_timezone = api_timezone
        self.requests_made = 0
        self.rate_limit_remaining: int | None = None
        self._token_mode = bool(token)
        self._login = login or ""
        self._password = password or ""
        self._secrets = tuple(s for s in (api_key, token, password) if s)
        self._sid: str | None = None
        self._login_lock = asyncio.Lock()
        self._timeout = timeout
        self._max_body_bytes = max_body_bytes
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            auth=httpx.BasicAuth(api_key, token if self._token_mode else ""),
            headers={
                "Content-Type": "application/xml; charset=utf-8",
                "Accept": "application/xml",
                "User-Agent": f"planfix-bot/{__version__}",
            },
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        mode = "token" if self._token_mode else "login"
        return f"PlanfixClient(url={self.url!r}, account={self.account!r}, auth={mode})"

    async def __aenter__(self) -> PlanfixClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- the envelope -----------------------------------------------------------------------------------------

    async def request(self, method: str, params: Params = ()) -> Element:
        """Call one API method and return the `<response>` element of a successful answer.

        `params` is a list of (name, value) pairs (values: str, int, bool, date, aware datetime, None = omit,
        or a nested list of pairs) or a callable that appends children to the `<request>` element.
        Raises a PlanfixError subclass (see errors.py) for every failure.
        """
        sid = await self._session()
        try:
            return await self._send(method, params, sid)
        except PlanfixSessionError:
            if sid is None:  # token mode: no session to renew
                raise
            self._forget_sid(sid)
        log.info("planfix.relogin", method=method)
        sid = await self._session()
        try:
            return await self._send(method, params, sid)
        except PlanfixSessionError:
            self._forget_sid(sid or "")  # so the next call starts with a fresh login
            raise

    async def _fetch(self, method: str, params: Params, parse: Callable[[Element], T]) -> T:
        """request() and parse the answer; a shape error found while parsing names the method."""
        response = await self.request(method, params)
        try:
            result = parse(response)
        except PlanfixError as exc:
            if exc.method is not None:
                raise
            raise type(exc)(f"{method}: {exc.message}", code=exc.code, method=method) from None
        if isinstance(result, Page) and result.skipped:
            self.items_skipped[method] += len(result.skipped)
            log.warning("planfix.items_skipped", method=method, count=len(result.skipped), items=result.skipped[:5])
        return result

    async def _session(self) -> str | None:
        """The sid to send: None in token mode; logs in first if there is none yet (one login at a time)."""
        if self._token_mode:
            return None
        async with self._login_lock:
            if self._sid is None:
                credentials: list[Param] = [("login", self._login), ("password", self._password)]
                self._sid = parse_sid(await self._send("auth.login", credentials, None))
            return self._sid

    def _forget_sid(self, sid: str) -> None:
        # Another caller may already have replaced it with a fresh one; keep that.
        if self._sid == sid:
            self._sid = None

    async def _send(self, method: str, params: Params, sid: str | None) -> Element:
        body = build_request(method, self.account, sid, params, self.api_timezone)
        await self.budget.acquire()
        try:
            self.requests_made += 1
            started = time.monotonic()
            try:
                async with asyncio.timeout(self._timeout):
                    raw = await self._post(method, body)
                response = parse_response(raw, method, token_mode=self._token_mode, secrets=self._all_secrets())
            except PlanfixError as exc:
                if isinstance(exc, PlanfixLimitError) and exc.code == "0007":
                    self.budget.note_limit_error()
                elif exc.code is not None:
                    self.budget.note_answer()
                self._log_failure(method, started, exc)
                raise exc.redacted(self._all_secrets()) from exc.__cause__
            except (TimeoutError, httpx.TimeoutException) as exc:
                error = PlanfixTransientError(f"{method}: no response within {self._timeout:g} s", method=method)
                self._log_failure(method, started, error)
                raise error from exc
            except httpx.HTTPError as exc:
                detail = f"{type(exc).__name__}: {exc}"
                error = PlanfixTransientError(f"{method}: connection error ({detail})", method=method)
                self._log_failure(method, started, error)
                raise error.redacted(self._all_secrets()) from exc
            self.budget.note_answer()
            self.request_counts[(method, "ok")] += 1
            log.debug("planfix.request", method=method, http_status=200, duration_ms=_ms_since(started), bytes=len(raw))
            return response
        finally:
            self.budget.release()

    async def _post(self, method: str, body: bytes) -> bytes:
        """POST the body; return the response body, refusing non-200 and anything over max_body_bytes."""
        async with self._http.stream("POST", self.url, content=body) as response:
            self._note_rate_limit(response.headers)
            if response.status_code in WRONG_ENDPOINT:
                # Not a transient fault: retrying a wrong endpoint for ever would hide it.
                raise endpoint_error(method, self.url, response.status_code, response.headers.get("Location"))
            if response.status_code != 200:
                raise PlanfixTransientError(
                    f"{method}: HTTP {response.status_code}", method=method, http_status=response.status_code
                )
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self._max_body_bytes:
                raise self._oversized(method)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self._max_body_bytes:
                    raise self._oversized(method)  # leaving the block closes the connection mid-body
                chunks.append(chunk)
        return b"".join(chunks)

    def _oversized(self, method: str) -> PlanfixTransientError:
        return PlanfixTransientError(
            f"{method}: response body larger than {self._max_body_bytes} bytes, refused", method=method
        )

    def _note_rate_limit(self, headers: httpx.Headers) -> None:
        remaining = headers.get("X-RateLimit-Remaining", "").strip()
        if remaining.lstrip("-").isdigit():
            self.rate_limit_remaining = int(remaining)
            self.budget.note_header(self.rate_limit_remaining)

    def _all_secrets(self) -> tuple[str, ...]:
        return (*self._secrets, self._sid) if self._sid else self._secrets

    def _log_failure(self, method: str, started: float, exc: PlanfixError) -> None:
        # A bounded label: the API error code, else the HTTP status, else the kind of failure.
        outcome = exc.code or (f"http_{exc.http_status}" if exc.http_status else type(exc).__name__)
        self.request_counts[(method, outcome)] += 1
        log.debug(
            "planfix.request_failed",
            method=method,
            http_status=exc.http_status,
            code=exc.code,
            error=type(exc).__name__,
            duration_ms=_ms_since(started),
        )

    # --- methods ----------------------------------------------------------------------------------------------

    async def user_get(self, user_id: int | None = None) -> User:
        """user.get; None = the API user itself (whose `timezone` the API speaks in)."""
        params: list[Param] = [("user", [("id", user_id)])] if user_id is not None else []
        return await self._fetch("user.get", params, lambda r: parse_user(child(r, "user")))

    async def task_get(self, *, id: int | None = None, general: int | None = None) -> Task:  # noqa: A002
        """task.get by internal id or by task number (`general`); unknown → PlanfixItemError (3001)."""
        if id is None and general is None:
            raise ValueError("task_get needs id or general")
        ref: list[Param] = [("id", id), ("general", general)]
        return await self._fetch("task.get", [("task", ref)], lambda r: parse_one_task(r, self.api_timezone))

    async def task_get_multi(self, ids: Sequence[int]) -> list[Task]:
        """task.getMulti by internal ids, ≤100 per request. Planfix may leave out ids it cannot return (deleted or
        hidden) instead of failing (PLANFIX-API.md §16), or fail the whole batch with one task's error code: the
        watcher (bot/watch/poller.py fetch_cards) double-checks and narrows down."""
        tasks: list[Task] = []
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), MAX_PAGE_SIZE):
            chunk = unique[start : start + MAX_PAGE_SIZE]
            page = await self._fetch("task.getMulti", [("tasks", [("id", i) for i in chunk])], self._task_page)
            tasks.extend(page.items)
        return _unique_by_id(tasks)

    async def task_get_list(
        self,
        *,
        target: str = "all",
        filter: str | None = None,  # noqa: A002
        page_size: int = MAX_PAGE_SIZE,
        max_pages: int | None = None,
    ) -> list[Task]:
        """task.getList, paging until done (or `max_pages`); items carry no members/auditors."""
        params: list[Param] = [("target", target), ("filter", filter)]
        return _unique_by_id(await self._all_pages("task.getList", params, self._task_page, page_size, max_pages))

    async def task_list_page(
        self,
        number: int,
        *,
        target: str = "all",
        filter: str | None = None,  # noqa: A002
        page_size: int = MAX_PAGE_SIZE,
    ) -> Page[Task]:
        """One page of task.getList (1-based), with its totalCount: for callers that spread paging over time.
        A page past the end that answers 0015 comes back as an empty page (the end of the list)."""
        if number < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page number must be ≥ 1 and page_size within 1..{MAX_PAGE_SIZE}")
        params: list[Param] = [("target", target), ("filter", filter), ("pageCurrent", number), ("pageSize", page_size)]
        return await self._page("task.getList", params, self._task_page, number)

    async def _page(self, method: str, params: Sequence[Param], parse: Callable[[Element], Page[T]],
                    number: int) -> Page[T]:
        try:
            return await self._fetch(method, params, parse)
        except PlanfixRequestError as exc:
            if number > 1 and exc.code == PAST_THE_END:
                log.info("planfix.list_end_by_error", method=method, page=number, code=exc.code)
                return Page(items=[], count=0)
            raise

    async def action_list(self, task_id: int, *, page_size: int = MAX_PAGE_SIZE) -> list[Action]:
        """action.getList of one task (internal id), oldest first."""
        params: list[Param] = [("task", [("id", task_id)]), ("sort", "asc")]
        return _in_time_order(await self._all_pages("action.getList", params, self._action_page, page_size))

    async def recent_actions(self, task_id: int, count: int = 5) -> list[Action]:
        """The newest `count` (1..100) actions of one task (internal id) in ONE request (action.getList sorted
        desc, first page), returned oldest first: for /task, which shows only the last few."""
        if not 1 <= count <= MAX_PAGE_SIZE:
            raise ValueError(f"count must be within 1..{MAX_PAGE_SIZE}")
        params: list[Param] = [("task", [("id", task_id)]), ("sort", "desc"), ("pageCurrent", 1), ("pageSize", count)]
        page = await self._fetch("action.getList", params, self._action_page)
        return _in_time_order(page.items)

    async def action_list_by_period(
        self,
        from_dt: datetime,
        to_dt: datetime,
        *,
        page_size: int = MAX_PAGE_SIZE,
        task_id: int | None = None,
        max_pages: int | None = None,
    ) -> list[Action]:
        """action.getListByPeriod over [from_dt, to_dt] (aware; sent at minute resolution in api_timezone),
        sort=asc, all pages, de-duplicated by action id, oldest first.

        Seconds are truncated, so callers should overlap windows by a minute and drop ids already seen.
        """
        if from_dt > to_dt:
            raise ValueError("from_dt is after to_dt")
        params: list[Param] = [*window_params(from_dt, to_dt, self.api_timezone), ("sort", "asc")]
        if task_id is not None:
            params.append(("task", [("id", task_id)]))
        actions = await self._all_pages("action.getListByPeriod", params, self._action_page, page_size, max_pages)
        return _in_time_order(actions)

    async def task_statuses(self) -> dict[int, Status]:
        """Every task status of every process: taskStatus.getSetList, then getListOfSet per set, unioned by id
        (the first process listing an id wins)."""
        sets = await self._fetch("taskStatus.getSetList", (), parse_status_set_page)
        statuses: dict[int, Status] = {}
        for status_set in sets.items:
            page = await self._fetch(
                "taskStatus.getListOfSet",
                [("taskStatusSet", [("id", status_set.id)])],
                lambda r, set_id=status_set.id: parse_status_page(r, set_id),
            )
            for status in page.items:
                statuses.setdefault(status.id, status)
        return statuses

    async def status_set(self, set_id: int) -> list[Status]:
        """The statuses of one process (taskStatus.getListOfSet), in Planfix's order."""
        page = await self._fetch(
            "taskStatus.getListOfSet", [("taskStatusSet", [("id", set_id)])], lambda r: parse_status_page(r, set_id)
        )
        return list(page.items)

    async def action_add(
        self,
        *,
        task_id: int,
        description: str,
        new_status: int | None = None,
        owner: int | None = None,
    ) -> int:
        """action.add (PLANFIX-API.md §16): a comment (`description` is Planfix HTML) on the task with this internal
        id, optionally changing its status (`taskNewStatus`) and authored by `owner` (default: the API user).
        Returns the new action's id. A write: the caller decides about retries (never blindly: it may have been
        made although the answer was lost)."""
        action: list[Param] = [
            ("description", description),
            ("task", [("id", task_id)]),
            ("taskNewStatus", new_status),
            ("owner", [("id", owner)] if owner is not None else None),
        ]
        return await self._fetch("action.add", [("action", action)], _added_action_id)

    def _task_page(self, response: Element) -> Page[Task]:
        return parse_task_page(response, self.api_timezone)

    def _action_page(self, response: Element) -> Page[Action]:
        return parse_action_page(response, self.api_timezone)

    async def _all_pages(
        self,
        method: str,
        params: Sequence[Param],
        parse: Callable[[Element], Page[T]],
        page_size: int,
        max_pages: int | None = None,
    ) -> list[T]:
        """Request pages 1, 2, … until a short or empty page (see is_last_page), a page that brings no id not
        seen before (a server repeating itself), 0015 past the end, `max_pages`, or MAX_PAGES (logged)."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be within 1..{MAX_PAGE_SIZE}")
        items: list[T] = []
        seen: set[int] = set()
        number = 1
        while True:
            page = await self._page(method, [*params, ("pageCurrent", number), ("pageSize", page_size)], parse, number)
            new = [item for item in page.items if item.id not in seen]  # type: ignore[attr-defined]
            seen.update(item.id for item in new)  # type: ignore[attr-defined]
            items.extend(new)
            if is_last_page(page, number, page_size) or (max_pages is not None and number >= max_pages):
                return items
            if page.items and not new:
                log.warning("planfix.list_repeats", method=method, page=number, effect="list ends here")
                return items
            if number >= MAX_PAGES:
                log.warning("planfix.list_capped", method=method, pages=number, items=len(items),
                            effect=f"only the first {MAX_PAGES} pages are read")
                return items
            number += 1


def is_last_page(page: Page[T], number: int, page_size: int) -> bool:
    """True when page `number` ends the list: fewer rows than asked for (or none). Never `totalCount` alone: a
    real task.getList answered totalCount="2" count="3" with one task twice (PLANFIX-API.md §16)."""
    return page.rows < page_size


def build_request(method: str, account: str, sid: str | None, params: Params, tz: tzinfo) -> bytes:
    """The UTF-8 request document; every value becomes escaped element text."""
    root = Element("request", method=method)
    SubElement(root, "account").text = account
    if sid:
        SubElement(root, "sid").text = sid
    if callable(params):
        params(root)
    else:
        _append_params(root, params, tz)
    return XML_DECLARATION + tostring(root, encoding="unicode").encode("utf-8")


def _append_params(parent: Element, params: Iterable[Param], tz: tzinfo) -> None:
    for name, value in params:
        if value is None:
            continue
        element = SubElement(parent, name)
        if isinstance(value, (list, tuple)):
            _append_params(element, value, tz)
        else:
            element.text = param_text(value, tz)


def window_params(from_dt: datetime, to_dt: datetime, tz: tzinfo) -> list[Param]:
    """fromDate/toDate as local wall times in `tz`: an ambiguous one (the hour repeated when clocks go back)
    is widened to cover both of its readings, since Planfix takes dates without an offset. The feed's overlap
    and de-duplication by action id make the wider window harmless."""
    start = covering_wall_time(from_dt, tz, earliest=True)
    end = covering_wall_time(to_dt, tz, earliest=False)
    if Covered.WIDENED in (start.reason, end.reason):
        log.debug("planfix.window_widened", reason="ambiguous local time", from_=format_wall(start.wall),
                  to=format_wall(end.wall))
    return [("fromDate", format_wall(start.wall)), ("toDate", format_wall(end.wall))]


def param_text(value: str | int | bool | date | datetime, tz: tzinfo) -> str:
    """One parameter value as Planfix expects it: bools 1/0, dates dd-mm-yyyy[ hh:mm] in the API zone."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime):  # before date: datetime is a date subclass
        return format_datetime(value, tz)
    if isinstance(value, date):
        return format_date(value)
    if isinstance(value, (int, str)):
        return str(value)
    raise TypeError(f"unsupported Planfix parameter type: {type(value).__name__}")


def _added_action_id(response: Element) -> int:
    """The id in action.add's `<action><id>N</id></action>` answer."""
    raw = (child(child(response, "action"), "id").text or "").strip()
    if not raw.isdigit() or int(raw) <= 0:
        raise shape_error(f"action.add answered an action id {raw[:20]!r}", "action.add")
    return int(raw)


def _unique_by_id(items: Iterable[T]) -> list[T]:
    """Drop repeated ids (lists can shift while paging), keeping the first copy and the order."""
    seen: dict[int, T] = {}
    for item in items:
        seen.setdefault(item.id, item)  # type: ignore[attr-defined]
    return list(seen.values())


def _in_time_order(actions: Iterable[Action]) -> list[Action]:
    return sorted(_unique_by_id(actions), key=lambda a: (a.at, a.id))


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
