"""The real PlanfixClient over real HTTP against FakePlanfix on 127.0.0.1: auth, errors, faults, paging, limits."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
import structlog
from defusedxml import ElementTree as SafeET

from bot import __version__
from bot.fakes.planfix import FakePlanfix
from bot.planfix.client import PlanfixClient, build_request
from bot.planfix.errors import (
    PlanfixConfigError,
    PlanfixError,
    PlanfixItemError,
    PlanfixLimitError,
    PlanfixRequestError,
    PlanfixSessionError,
    PlanfixTransientError,
)
from tests.clocks import Clock

API_KEY = "key-5f1e9a"
TOKEN = "token-77c0d2"
PASSWORD = "pw-3b8e41"
FAST = 1000.0  # requests per second for every test but the rate-limit one


@pytest.fixture
def clock():
    return Clock(datetime(2025, 11, 21, 11, 0, 30, tzinfo=UTC))


@pytest.fixture
async def fake(clock):
    server = FakePlanfix(api_key=API_KEY, token=TOKEN, password=PASSWORD, clock=clock)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def make_client(fake):
    clients: list[PlanfixClient] = []

    def make(**overrides) -> PlanfixClient:
        options = {
            "url": fake.url,
            "account": fake.account,
            "api_key": API_KEY,
            "token": TOKEN,
            "requests_per_second": FAST,
            "timeout": 5.0,
            "api_timezone": fake.tz,
        }
        options.update(overrides)
        client = PlanfixClient(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def login_client(make_client, **overrides) -> PlanfixClient:
    return make_client(token=None, login="bot", password=PASSWORD, **overrides)


def secrets_absent(exc: BaseException, *secrets: str) -> bool:
    shown = f"{exc!s} {exc!r}"
    return not any(secret in shown for secret in secrets)


# --- auth -----------------------------------------------------------------------------------------------------


async def test_token_mode_sends_no_sid_and_never_logs_in(fake, make_client):
    """Token auth: Basic (key, token), no auth.login, no <sid>, the API user comes back with its zone."""
    client = make_client()
    user = await client.user_get()
    await client.task_statuses()
    assert (user.id, user.timezone) == (1, "Europe/Moscow")
    assert fake.requests_for("auth.login") == []
    assert all(r.auth == "token" and r.param("sid") is None for r in fake.requests)
    assert client.requests_made == len(fake.requests) == 3


async def test_login_mode_logs_in_lazily_once(fake, make_client):
    """Login mode: the first call logs in, later calls reuse the sid, concurrent first calls share one login."""
    client = login_client(make_client)
    assert fake.requests == []
    await asyncio.gather(client.user_get(), client.user_get(), client.task_get_list())
    await client.user_get()
    assert len(fake.requests_for("auth.login")) == 1
    assert all(r.param("sid") == "***" for r in fake.requests if r.method != "auth.login")
    assert all(r.auth == "key" for r in fake.requests)


async def test_expired_session_relogs_once_and_retries(fake, make_client):
    """0005 → one fresh auth.login and the same request again, invisible to the caller."""
    client = login_client(make_client)
    await client.user_get()
    fake.expire_sessions()
    task = fake.add_task(title="After expiry")
    assert (await client.task_get(id=task.id)).title == "After expiry"
    assert [r.method for r in fake.requests] == ["auth.login", "user.get", "task.get", "auth.login", "task.get"]
    assert [r.outcome for r in fake.requests_for("task.get")] == ["0005", "ok"]


async def test_session_expiry_by_ttl_on_the_fake_clock(fake, make_client, clock):
    """A sid past its TTL gets 0005 and the client recovers by logging in again."""
    client = login_client(make_client)
    await client.user_get()
    clock.now += timedelta(seconds=fake.sid_ttl + 1)
    await client.user_get()
    assert len(fake.requests_for("auth.login")) == 2


async def test_relogin_happens_only_once(fake, make_client):
    """If the retried request gets 0005 again, PlanfixSessionError is raised; no login loop."""
    client = login_client(make_client)
    await client.user_get()
    fake.inject_error("0005", method="user.get", times=2)
    with pytest.raises(PlanfixSessionError):
        await client.user_get()
    assert len(fake.requests_for("auth.login")) == 2
    await client.user_get()  # the next call starts with a fresh login and works
    assert len(fake.requests_for("auth.login")) == 3


async def test_token_mode_does_not_relogin_on_0005(fake, make_client):
    """In token mode there is no session to renew: 0005 is raised as is."""
    fake.inject_error("0005")
    with pytest.raises(PlanfixSessionError):
        await make_client().user_get()
    assert fake.requests_for("auth.login") == []


async def test_wrong_login_password_is_config_error(fake, make_client):
    """auth.login with a wrong password → 1001 → PlanfixConfigError without the password in it."""
    client = make_client(token=None, login="bot", password="wrong-pass-xyz")
    with pytest.raises(PlanfixConfigError) as info:
        await client.user_get()
    assert info.value.code == "1001"
    assert secrets_absent(info.value, "wrong-pass-xyz", API_KEY)


@pytest.mark.parametrize(
    ("overrides", "code"),
    [({"api_key": "wrong-key-4242"}, "0001"), ({"token": "wrong-token-4242"}, "0012"), ({"account": "other"}, "0004")],
    ids=["key", "token", "account"],
)
async def test_bad_credentials_are_config_errors_without_secrets(fake, make_client, overrides, code):
    """Wrong key/token/account → PlanfixConfigError; neither the key nor the token shows in str or repr."""
    client = make_client(**overrides)
    with pytest.raises(PlanfixConfigError) as info:
        await client.task_get(id=1)
    assert info.value.code == code
    assert secrets_absent(info.value, API_KEY, TOKEN, "wrong-key-4242", "wrong-token-4242")
    assert secrets_absent(info.value.__cause__ or info.value, API_KEY, TOKEN)
    assert API_KEY not in repr(client) and TOKEN not in repr(client)


def test_client_needs_some_credentials():
    """Neither a token nor login+password is a config error at construction."""
    with pytest.raises(PlanfixConfigError):
        PlanfixClient(url="http://127.0.0.1:1/xml/", account="a", api_key="k")


async def test_server_message_with_a_secret_is_redacted(fake, make_client):
    """Free text from the server is scrubbed of the key and token before it reaches the exception."""
    fake.inject_error("0015", message=f"bad request from {API_KEY} with {TOKEN}")
    with pytest.raises(PlanfixRequestError) as info:
        await make_client().user_get()
    assert secrets_absent(info.value, API_KEY, TOKEN) and "***" in str(info.value)


async def test_logs_name_the_method_but_no_secrets(fake, make_client):
    """Debug logs carry method, status and duration; never the key, token, password or sid."""
    client = login_client(make_client)
    with structlog.testing.capture_logs() as logs:
        await client.user_get()
        fake.inject_error("3001")
        with pytest.raises(PlanfixItemError):
            await client.task_get(id=5)
    assert [entry["method"] for entry in logs] == ["auth.login", "user.get", "task.get"]
    assert logs[0]["http_status"] == 200 and "duration_ms" in logs[0]
    assert logs[-1]["code"] == "3001"
    dumped = repr(logs)
    assert API_KEY not in dumped and PASSWORD not in dumped and client._sid not in dumped


# --- the envelope ---------------------------------------------------------------------------------------------


async def test_envelope_headers_and_escaping():
    """The request document, headers and Basic auth are exactly as §2/§4 say; values are XML-escaped."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b'<response status="ok"><users count="0" totalCount="0"/></response>')

    client = PlanfixClient(
        url="https://api.example/xml/", account="acc", api_key="k", token="t", transport=httpx.MockTransport(answer)
    )
    async with client:
        await client.request("user.getList", [("status", "A<&>'\""), ("nested", [("id", 5), ("flag", True)])])
    request = seen[0]
    assert request.method == "POST" and str(request.url) == "https://api.example/xml/"
    assert request.headers["Content-Type"] == "application/xml; charset=utf-8"
    assert request.headers["Accept"] == "application/xml"
    assert request.headers["User-Agent"] == f"planfix-bot/{__version__}"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"k:t").decode()
    assert request.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    doc = SafeET.fromstring(request.content)
    assert doc.get("method") == "user.getList" and doc.findtext("account") == "acc"
    assert doc.find("sid") is None
    assert doc.findtext("status") == "A<&>'\"" and b"A&lt;&amp;&gt;" in request.content
    assert (doc.findtext("nested/id"), doc.findtext("nested/flag")) == ("5", "1")


async def test_shape_errors_name_the_method():
    """An ok answer missing the expected element is a transient shape error that names the method."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b'<response status="ok"/>'))
    async with PlanfixClient(url="https://x/xml/", account="a", api_key="k", token="t", transport=transport) as client:
        with pytest.raises(PlanfixTransientError, match=r"^user\.get: unexpected response shape") as info:
            await client.user_get()
    assert info.value.method == "user.get"


def test_build_request_with_a_builder_and_dates():
    """A builder callable may append raw children; dates render in the API zone."""
    from xml.etree.ElementTree import SubElement

    body = build_request(
        "x.y", "acc", "sid1", lambda root: SubElement(root, "custom").set("a", "1"), ZoneInfo("UTC")
    )
    doc = SafeET.fromstring(body)
    assert doc.findtext("sid") == "sid1" and doc.find("custom").get("a") == "1"
    dated = SafeET.fromstring(
        build_request(
            "m",
            "acc",
            None,
            [("from", datetime(2025, 1, 1, 21, 30, tzinfo=UTC)), ("day", date(2025, 1, 2)), ("skip", None)],
            ZoneInfo("Europe/Moscow"),
        )
    )
    assert (dated.findtext("from"), dated.findtext("day")) == ("02-01-2025 00:30", "02-01-2025")
    assert dated.find("skip") is None


# --- API errors and faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("0007", PlanfixLimitError),
        ("0011", PlanfixTransientError),
        ("3014", PlanfixTransientError),
        ("3001", PlanfixItemError),
        ("4008", PlanfixItemError),
        ("0008", PlanfixRequestError),
        ("0021", PlanfixRequestError),
        ("0020", PlanfixConfigError),
        ("0024", PlanfixConfigError),
        ("5555", PlanfixRequestError),
    ],
)
async def test_injected_error_codes_raise_their_class(fake, make_client, code, cls):
    """Each API error code arriving over HTTP 200 raises its class with code and method set."""
    fake.inject_error(code, method="task.getList")
    client = make_client()
    with pytest.raises(PlanfixError) as info:
        await client.task_get_list()
    assert type(info.value) is cls
    assert (info.value.code, info.value.method) == (code, "task.getList")
    assert await client.task_get_list() == []  # consumed: the next call is fine


@pytest.mark.parametrize(
    ("kind", "status"),
    [("http500", 500), ("http502", 502), ("malformed", None), ("billion_laughs", None), ("drop", None)],
)
async def test_transport_faults_are_transient(fake, make_client, kind, status):
    """HTTP 5xx, truncated XML, entity bombs and dropped connections → PlanfixTransientError; no retry."""
    fake.inject_fault(kind)
    client = make_client()
    with pytest.raises(PlanfixTransientError) as info:
        await client.user_get()
    assert info.value.http_status == status and info.value.method == "user.get"
    assert len(fake.requests) == 1  # the client did not retry on its own
    assert (await client.user_get()).id == 1


async def test_oversized_body_is_refused_while_streaming(fake, make_client):
    """A body over max_body_bytes is cut off mid-stream → PlanfixTransientError, memory stays bounded."""
    fake.inject_fault("oversized", size=20_000_000)
    client = make_client(max_body_bytes=200_000)
    with pytest.raises(PlanfixTransientError, match="larger than 200000 bytes"):
        await client.user_get()
    assert (await client.user_get()).id == 1


async def test_hang_hits_the_client_timeout(fake, make_client):
    """A server that does not answer within `timeout` → PlanfixTransientError quickly."""
    fake.inject_fault("hang", seconds=0.8)
    client = make_client(timeout=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(PlanfixTransientError, match="no response within 0.3 s"):
        await client.user_get()
    assert loop.time() - started < 1.0


async def test_connection_refused_is_transient(make_client):
    """Nothing listening → PlanfixTransientError."""
    client = make_client(url="http://127.0.0.1:9/xml/", timeout=2.0)
    with pytest.raises(PlanfixTransientError, match="connection error"):
        await client.user_get()


async def test_unknown_task_is_an_item_error(fake, make_client):
    """task.get of a deleted task → PlanfixItemError 3001; asking with no key is a ValueError."""
    task = fake.add_task(title="Doomed")
    client = make_client()
    assert (await client.task_get(general=task.general)).id == task.id
    fake.delete_task(task.id)
    with pytest.raises(PlanfixItemError) as info:
        await client.task_get(id=task.id)
    assert info.value.code == "3001"
    with pytest.raises(ValueError):
        await client.task_get()


# --- paging and batching --------------------------------------------------------------------------------------


async def test_action_feed_pages_150_actions_in_one_minute(fake, make_client, clock):
    """150 actions within one minute: two pages, sort=asc, none missed, none repeated, oldest first."""
    task = fake.add_task(title="Busy", record_action=False)
    for n in range(150):
        clock.now = datetime(2025, 11, 21, 11, 1, 0, tzinfo=UTC) + timedelta(milliseconds=300 * n)
        fake.add_comment(task.id, f"comment {n}", by=1)
    client = make_client()
    actions = await client.action_list_by_period(
        datetime(2025, 11, 21, 11, 1, tzinfo=UTC), datetime(2025, 11, 21, 11, 1, 59, tzinfo=UTC)
    )
    assert [a.id for a in actions] == [a.id for a in fake.actions]
    assert len({a.id for a in actions}) == 150
    calls = fake.requests_for("action.getListByPeriod")
    assert [c.param("pageCurrent") for c in calls] == ["1", "2"]
    assert all(c.param("sort") == "asc" and c.param("pageSize") == "100" for c in calls)
    # Dates go out at minute resolution in the API user's zone (Moscow = UTC+3).
    assert (calls[0].param("fromDate"), calls[0].param("toDate")) == ("21-11-2025 14:01", "21-11-2025 14:01")


async def test_action_feed_reads_past_a_full_page_whatever_total_count_says(fake, make_client):
    """Exactly one full page: totalCount says that is all, but only a short (here empty) page ends a list."""
    task = fake.add_task(title="Hundred", record_action=False)
    for n in range(100):
        fake.add_comment(task.id, str(n), by=1)
    client = make_client()
    now = fake.now()
    actions = await client.action_list_by_period(now - timedelta(minutes=1), now, task_id=task.id)
    assert len(actions) == 100 and len(fake.requests_for("action.getListByPeriod")) == 2
    assert fake.requests[-1].param("task/id") == str(task.id)


def _action(action_id: int, minute: int) -> str:
    return (
        f"<action><id>{action_id}</id><type>ACTION</type><dateTime>21-11-2025 14:{minute:02d}</dateTime>"
        "<task><id>7</id></task></action>"
    )


async def test_action_feed_drops_duplicates_when_the_list_shifts():
    """An action seen on two pages (the list shifted while paging) is returned once, in time order."""
    pages = {
        "1": _action(2, 1) + _action(1, 0),
        "2": _action(2, 1) + _action(3, 2),
        "3": _action(4, 3),
    }

    def answer(request: httpx.Request) -> httpx.Response:
        number = SafeET.fromstring(request.content).findtext("pageCurrent")
        items = pages[number]
        count = items.count("<action>")
        body = f'<response status="ok"><actions count="{count}" totalCount="5">{items}</actions></response>'
        return httpx.Response(200, content=body.encode())

    client = PlanfixClient(
        url="https://api.example/xml/", account="acc", api_key="k", token="t", transport=httpx.MockTransport(answer)
    )
    async with client:
        moment = datetime(2025, 11, 21, 11, 0, tzinfo=UTC)
        actions = await client.action_list_by_period(moment, moment + timedelta(minutes=5), page_size=2)
    assert [a.id for a in actions] == [1, 2, 3, 4]
    assert client.requests_made == 3


async def test_task_get_multi_chunks_250_ids_into_3_requests(fake, make_client):
    """task_get_multi: ≤100 ids per request → 3 requests for 250 ids, unknown ids simply absent."""
    tasks = [fake.add_task(title=f"T{n}", record_action=False) for n in range(250)]
    client = make_client()
    found = await client.task_get_multi([t.id for t in tasks] + [tasks[0].id, 999])
    assert [t.id for t in found] == [t.id for t in tasks]
    calls = fake.requests_for("task.getMulti")
    assert [len(c.param_all("tasks/id")) for c in calls] == [100, 100, 51]
    assert await client.task_get_multi([]) == [] and len(fake.requests_for("task.getMulti")) == 3


async def test_task_get_list_pages_and_filters(fake, make_client):
    """task_get_list pages until done and passes filter; max_pages caps the walk."""
    for n in range(205):
        fake.add_task(title=f"T{n}", status=3 if n % 5 == 0 else 1, record_action=False)
    client = make_client()
    assert len(await client.task_get_list()) == 205
    assert len(fake.requests_for("task.getList")) == 3
    active = await client.task_get_list(filter="ACTIVE")
    assert len(active) == 164 and all(t.status == 1 for t in active)
    assert fake.requests[-1].param("filter") == "ACTIVE"
    assert len(await client.task_get_list(page_size=50, max_pages=2)) == 100
    assert all(t.members == () for t in active)  # task.getList carries no members/auditors
    with pytest.raises(ValueError):
        await client.task_get_list(page_size=101)


async def test_task_statuses_union_of_sets(fake, make_client):
    """task_statuses asks every process and unions the statuses with their localised names."""
    fake.add_status(10, "На проверке", set_id=5, en_name="Review")
    statuses = await make_client().task_statuses()
    assert set(statuses) == {1, 2, 3, 4, 5, 6, 7, 10}
    assert statuses[10].set_id == 5 and statuses[10].name_in("en") == "Review"
    assert statuses[3].is_active is False and statuses[2].is_active is True
    assert [r.param("taskStatusSet/id") for r in fake.requests_for("taskStatus.getListOfSet")] == ["2", "5"]


async def test_status_and_deadline_changes_come_through(fake, make_client):
    """The feed shows a status change (by node) and a deadline move in the API zone, date-only as 23:59."""
    task = fake.add_task(title="Watched", deadline=date(2025, 11, 25))
    fake.change_status(task.id, 2, by=1)
    fake.change_deadline(task.id, datetime(2025, 11, 28, 9, 0, tzinfo=UTC), by=1)
    client = make_client()
    now = fake.now()
    created, status, deadline = await client.action_list_by_period(now - timedelta(minutes=1), now)
    assert created.type == "TASKCREATED"
    assert status.status_change is not None and (status.status_change.old, status.status_change.new) == (1, 2)
    change = deadline.deadline_change
    assert change is not None and change.old is not None and change.new is not None
    assert change.old.due == datetime(2025, 11, 25, 23, 59, tzinfo=fake.tz)
    assert change.new.due == datetime(2025, 11, 28, 9, 0, tzinfo=UTC)
    fresh = await client.task_get(id=task.id)
    assert fresh.deadline is not None and fresh.deadline.date_only is False and fresh.status == 2


async def test_api_timezone_from_user_get_gives_true_instants(fake, make_client, clock):
    """With api_timezone set from user_get().timezone, parsed times are the fake's real instants."""
    fake.add_user(1, "Planfix", "Bot", login="bot", timezone="Asia/Yekaterinburg")
    fake.add_task(title="Zoned")
    client = make_client(api_timezone=UTC)
    client.api_timezone = ZoneInfo((await client.user_get()).timezone)
    now = fake.now()
    (created,) = await client.action_list_by_period(now - timedelta(minutes=1), now)
    assert created.at == clock.now.replace(second=0)
    assert fake.requests[-1].param("toDate") == "21-11-2025 16:00"


# --- rate limits ----------------------------------------------------------------------------------------------


async def test_one_shared_rate_limit_measured_at_the_server(fake, make_client):
    """At 2 rps, 5 concurrent requests (one login included) are ≥0.5 s apart at the server: ≥2 s in all."""
    client = login_client(make_client, requests_per_second=2.0)
    await asyncio.gather(*(client.user_get() for _ in range(4)))
    times = [r.monotonic for r in fake.requests]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) == 5 and fake.requests[0].method == "auth.login"
    assert min(gaps) >= 0.45, gaps  # a little slack for loopback jitter between send and arrival
    assert times[-1] - times[0] >= 1.9


async def test_rate_limit_remaining_header_is_read(fake, make_client):
    """X-RateLimit-Remaining is exposed; when the budget hits zero the server's 0007 is PlanfixLimitError."""
    fake.rate_limit_remaining = 2
    client = make_client()
    assert client.rate_limit_remaining is None
    await client.user_get()
    assert client.rate_limit_remaining == 1
    await client.user_get()
    assert client.rate_limit_remaining == 0
    with pytest.raises(PlanfixLimitError) as info:
        await client.user_get()
    assert info.value.code == "0007" and client.requests_made == 3
