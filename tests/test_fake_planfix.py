"""FakePlanfix's own rules, over raw HTTP: auth, envelope errors, dates, paging, faults and test controls."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from defusedxml import ElementTree as SafeET

from bot.fakes.planfix import FakePlanfix, seed_demo
from tests.clocks import Clock

KEY = "fake-key"
TOKEN = "fake-token"


@pytest.fixture
def clock():
    # 09:34:56 UTC = 12:34:56 in Moscow, the fake's default API zone.
    return Clock(datetime(2025, 3, 4, 9, 34, 56, tzinfo=UTC))


@pytest.fixture
async def fake(clock):
    server = FakePlanfix(api_key=KEY, token=TOKEN, clock=clock)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http():
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def envelope(method: str, body: str = "", *, account: str = "demo", sid: str | None = None) -> bytes:
    sid_xml = f"<sid>{sid}</sid>" if sid else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><request method="{method}">'
        f"<account>{account}</account>{sid_xml}{body}</request>"
    ).encode()


async def call(http, fake, method, body="", *, auth=(KEY, TOKEN), raw: bytes | None = None, **kwargs):
    """POST one request; return (HTTP status, parsed <response>)."""
    response = await http.post(fake.url, content=raw or envelope(method, body, **kwargs), auth=auth)
    return response.status_code, SafeET.fromstring(response.content)


async def error_code(http, fake, method, body="", **kwargs) -> str | None:
    status, doc = await call(http, fake, method, body, **kwargs)
    assert status == 200  # API errors always travel as HTTP 200
    return doc.findtext("code") if doc.get("status") == "error" else None


# --- auth and envelope ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"auth": None}, "0001"),
        ({"auth": ("other-key", TOKEN)}, "0001"),
        ({"account": "elsewhere"}, "0004"),
        ({"account": ""}, "0009"),
        ({"auth": (KEY, "unknown-token")}, "0012"),
        ({"auth": (KEY, "")}, "0012"),
        ({"auth": (KEY, ""), "sid": "0" * 32}, "0005"),
    ],
    ids=["no-auth", "wrong-key", "wrong-account", "no-account", "unknown-token", "login-mode-no-sid", "unknown-sid"],
)
async def test_auth_rules(fake, http, kwargs, code):
    """§14 auth: key as Basic user, the account, then the token or a live sid — each failure its code."""
    assert await error_code(http, fake, "user.get", **kwargs) == code


async def test_login_issues_a_sid_that_expires(fake, http, clock):
    """auth.login checks login/password (1001), issues a 32-hex sid valid for sid_ttl on the fake clock."""
    bad = "<login>bot</login><password>nope</password>"
    assert await error_code(http, fake, "auth.login", bad, auth=(KEY, "")) == "1001"
    _, doc = await call(http, fake, "auth.login", "<login>bot</login><password>secret</password>", auth=(KEY, ""))
    sid = doc.findtext("sid")
    assert re.fullmatch(r"[0-9a-f]{32}", sid)
    assert await error_code(http, fake, "user.get", auth=(KEY, "X"), sid=sid) is None  # password ignored
    clock.now += timedelta(seconds=fake.sid_ttl)
    assert await error_code(http, fake, "user.get", auth=(KEY, ""), sid=sid) == "0005"


async def test_unknown_method_missing_param_and_bad_xml(fake, http):
    """Unknown method → 0008, missing required parameter → 0009, unparsable request → 0003."""
    assert await error_code(http, fake, "task.frobnicate") == "0008"
    assert await error_code(http, fake, "task.get") == "0009"
    assert await error_code(http, fake, "action.getListByPeriod", "<fromDate>01-01-2025</fromDate>") == "0009"
    bad_dates = "<fromDate>2025-01-01</fromDate><toDate>x</toDate>"
    assert await error_code(http, fake, "action.getListByPeriod", bad_dates) == "0015"
    assert await error_code(http, fake, "x", raw=b"<request method='x'><account>demo") == "0003"


async def test_only_post_on_xml_path(fake, http):
    """GET is not an API call (405); other paths do not exist (404)."""
    assert (await http.get(fake.url)).status_code == 405
    assert (await http.post(fake.url.replace("/xml/", "/other/"), content=b"")).status_code == 404


async def test_requests_are_recorded_with_secrets_masked(fake, http):
    """Every request is logged with method, params by path and outcome; password and sid are masked."""
    await call(http, fake, "auth.login", "<login>bot</login><password>secret</password>", auth=(KEY, ""))
    await call(http, fake, "task.get", "<task><general>77</general></task>")
    login, task = fake.requests
    assert (login.method, login.param("password"), login.auth, login.outcome) == ("auth.login", "***", "key", "ok")
    assert (task.param("task/general"), task.auth, task.outcome) == ("77", "token", "3001")
    assert task.monotonic > login.monotonic and task.wall.tzinfo is not None


# --- rendering: dates, HTML, shapes ---------------------------------------------------------------------------


async def test_dates_are_local_minutes_and_deadlines_keep_date_only(fake, http):
    """Times render in the API user's zone at minute resolution; a date deadline stays dd-mm-yyyy."""
    task = fake.add_task(title="Dated", deadline=date(2025, 3, 5))
    _, doc = await call(http, fake, "task.get", f"<task><id>{task.id}</id></task>")
    assert doc.findtext("task/beginDateTime") == "04-03-2025 12:34"
    assert doc.findtext("task/endTime") == "05-03-2025"
    fake.change_deadline(task.id, datetime(2025, 3, 6, 9, 0, 59, tzinfo=UTC), by=1)
    _, doc = await call(http, fake, "task.get", f"<task><id>{task.id}</id></task>")
    assert doc.findtext("task/endTime") == "06-03-2025 12:00"
    _, doc = await call(http, fake, "action.getList", f"<task><id>{task.id}</id></task>")
    change = doc.find("actions/action/taskExpectDateChanged")  # newest first: the deadline move
    assert (change.findtext("oldDate"), change.findtext("newDate")) == ("05-03-2025 23:59", "06-03-2025 12:00")
    assert (change.findtext("oldDateIsSet"), change.findtext("newDateIsSet")) == ("1", "1")
    assert doc.findtext("actions/action/type") == "TASKCHANGED"
    assert doc.findtext("actions/action/description") == "{log26}"


async def test_dates_follow_the_api_users_zone(fake, http):
    """Re-zoning the API user re-zones every date the fake speaks (Yekaterinburg = UTC+5)."""
    fake.add_user(1, "Planfix", "Bot", login="bot", timezone="Asia/Yekaterinburg")
    task = fake.add_task(title="Zoned", record_action=False)
    _, doc = await call(http, fake, "task.get", f"<task><id>{task.id}</id></task>")
    assert doc.findtext("task/beginDateTime") == "04-03-2025 14:34"
    _, doc = await call(http, fake, "user.get")
    assert doc.findtext("user/timezone") == "Asia/Yekaterinburg"


async def test_removed_deadline_renders_unset(fake, http):
    """Removing a deadline: empty endTime, newDateIsSet 0."""
    task = fake.add_task(title="Free", deadline=date(2025, 3, 5), record_action=False)
    fake.change_deadline(task.id, None, by=1)
    _, doc = await call(http, fake, "action.getList", f"<task><id>{task.id}</id></task>")
    assert doc.findtext("actions/action/taskExpectDateChanged/newDateIsSet") == "0"
    assert doc.findtext("actions/action/taskExpectDateChanged/newDate") == ""
    _, doc = await call(http, fake, "task.get", f"<task><id>{task.id}</id></task>")
    assert doc.findtext("task/endTime") == ""


async def test_description_html_is_escaped_xml_text(fake, http):
    """Planfix HTML travels entity-escaped (not CDATA) and parses back to the same HTML."""
    html = "<p>Line<br/>two &amp; <b>bold</b></p>"
    task = fake.add_task(title="Html", description=html, record_action=False)
    request = envelope("task.get", f"<task><id>{task.id}</id></task>")
    response = await http.post(fake.url, content=request, auth=(KEY, TOKEN))
    assert b"&lt;p&gt;Line&lt;br/&gt;two &amp;amp; &lt;b&gt;" in response.content
    assert SafeET.fromstring(response.content).findtext("task/description") == html


async def test_task_shapes_like_the_fixture(fake, http):
    """task.get has members/auditors in users/user; task.getList items do not; ids and numbers differ."""
    fake.add_user(7, "Ann", "Lee")
    task = fake.add_task(title="Shape", workers=(7,), members=(7,), auditors=(1,), project=(9830, "P"))
    assert task.id != task.general
    _, doc = await call(http, fake, "task.get", f"<task><general>{task.general}</general></task>")
    assert doc.findtext("task/workers/users/user/name") == "Ann Lee"
    assert doc.findtext("task/auditors/users/user/id") == "1"
    assert (doc.findtext("task/project/id"), doc.findtext("task/client/id")) == ("9830", "0")
    _, doc = await call(http, fake, "task.getList", "<pageCurrent>1</pageCurrent><pageSize>10</pageSize>")
    assert doc.find("tasks/task/members") is None and doc.find("tasks/task/auditors") is None
    assert doc.find("tasks/task/workers") is not None


async def test_status_change_and_overdue_actions(fake, http):
    """change_status records an ACTION with <statusChange>; mark_overdue sets isOverdued and {event21}."""
    task = fake.add_task(title="Flow", owner=1, record_action=False)
    fake.change_status(task.id, 2, by=1, comment="<p>go</p>")
    fake.mark_overdue(task.id)
    _, doc = await call(http, fake, "action.getList", f"<task><id>{task.id}</id></task><sort>asc</sort>")
    status, overdue = doc.findall("actions/action")
    assert status.findtext("type") == "ACTION"
    assert (status.findtext("statusChange/oldStatus"), status.findtext("statusChange/newStatus")) == ("1", "2")
    assert status.findtext("description") == "<p>go</p>"
    assert (overdue.findtext("type"), overdue.findtext("description")) == ("TASKOVERDUED", "{event21}")
    _, doc = await call(http, fake, "task.get", f"<task><id>{task.id}</id></task>")
    assert (doc.findtext("task/status"), doc.findtext("task/isOverdued")) == ("2", "1")


async def test_silent_edit_and_delete(fake, http):
    """edit_task_silently records no action; delete_task makes task.get answer 3001."""
    task = fake.add_task(title="Quiet", record_action=False)
    fake.edit_task_silently(task.id, status=3, title="Renamed")
    assert fake.actions == []
    with pytest.raises(TypeError):
        fake.edit_task_silently(task.id, colour="red")
    _, doc = await call(http, fake, "task.get", f"<task><id>{task.id}</id></task>")
    assert (doc.findtext("task/title"), doc.findtext("task/status")) == ("Renamed", "3")
    fake.delete_task(task.id)
    assert await error_code(http, fake, "task.get", f"<task><id>{task.id}</id></task>") == "3001"


async def test_user_get_and_statuses(fake, http):
    """user.get without id is the API user with its zone; status sets and Ru/En names are served."""
    _, doc = await call(http, fake, "user.get")
    assert (doc.findtext("user/id"), doc.findtext("user/timezone")) == ("1", "Europe/Moscow")
    assert await error_code(http, fake, "user.get", "<user><id>404</id></user>") == "6004"
    _, doc = await call(http, fake, "taskStatus.getSetList")
    assert doc.find("taskStatusSets").get("totalCount") == "1"
    _, doc = await call(http, fake, "taskStatus.getListOfSet", "<taskStatusSet><id>2</id></taskStatusSet>")
    names = {s.findtext("id"): s.findtext("texts/text[lang='En']/name") for s in doc.findall("taskStatuses/taskStatus")}
    assert names["3"] == "Completed" and len(names) == 7
    _, doc = await call(http, fake, "taskStatus.getListOfSet", "<taskStatusSet><id>99</id></taskStatusSet>")
    assert doc.find("taskStatuses").get("totalCount") == "0"


# --- lists and paging -----------------------------------------------------------------------------------------


async def test_period_bounds_are_inclusive_minutes_and_sort_defaults_to_desc(fake, http, clock):
    """getListByPeriod keeps actions whose minute lies within [fromDate, toDate]; default order newest first."""
    task = fake.add_task(title="Feed", record_action=False)
    for minute, second in ((0, 0), (5, 59), (6, 0)):
        clock.now = datetime(2025, 3, 4, 7, minute, second, tzinfo=UTC)  # 10:mm Moscow
        fake.add_comment(task.id, f"m{minute}", by=1)
    body = "<fromDate>04-03-2025 10:00</fromDate><toDate>04-03-2025 10:05</toDate>"
    _, doc = await call(http, fake, "action.getListByPeriod", body)
    assert [a.findtext("description") for a in doc.findall("actions/action")] == ["m5", "m0"]
    whole_day = "<fromDate>04-03-2025</fromDate><toDate>04-03-2025</toDate>"
    _, doc = await call(http, fake, "action.getListByPeriod", f"{whole_day}<sort>asc</sort>")
    assert [a.findtext("description") for a in doc.findall("actions/action")] == ["m0", "m5", "m6"]
    _, doc = await call(http, fake, "action.getListByPeriod", f"{body}<task><id>999</id></task>")
    assert doc.find("actions").attrib == {"totalCount": "0", "count": "0"}


async def test_paging_count_only_and_page_size_limit(fake, http):
    """pageCurrent/pageSize slice lists; pageCurrent=0 is count only; pageSize>100 → 0021 unless clamped."""
    for n in range(7):
        fake.add_task(title=f"T{n}", record_action=False)
    _, doc = await call(http, fake, "task.getList", "<pageCurrent>2</pageCurrent><pageSize>3</pageSize>")
    tasks = doc.find("tasks")
    assert (tasks.get("count"), tasks.get("totalCount"), len(tasks)) == ("3", "7", 3)
    _, doc = await call(http, fake, "task.getList", "<pageCurrent>0</pageCurrent>")
    assert doc.find("tasks").attrib == {"totalCount": "7", "count": "0"} and len(doc.find("tasks")) == 0
    assert await error_code(http, fake, "task.getList", "<pageSize>101</pageSize>") == "0021"
    fake.clamp_page_size = True
    _, doc = await call(http, fake, "task.getList", "<pageSize>500</pageSize>")
    assert doc.find("tasks").get("count") == "7"


async def test_get_multi_omits_unknown_and_caps_at_100(fake, http):
    """task.getMulti returns known ids and numbers, leaves unknown ones out, refuses more than 100."""
    one = fake.add_task(title="One", record_action=False)
    two = fake.add_task(title="Two", record_action=False)
    body = f"<tasks><id>{one.id}</id><id>12345</id><general>{two.general}</general></tasks>"
    _, doc = await call(http, fake, "task.getMulti", body)
    assert [t.findtext("title") for t in doc.findall("tasks/task")] == ["One", "Two"]
    assert doc.find("tasks").get("count") == "2"
    many = "".join(f"<id>{n}</id>" for n in range(101))
    assert await error_code(http, fake, "task.getMulti", f"<tasks>{many}</tasks>") == "0021"
    assert await error_code(http, fake, "task.getMulti", "<tasks/>") == "0009"


async def test_task_list_filters(fake, http):
    """task.getList filter ACTIVE drops inactive statuses, OVERDUE keeps flagged ones, MY the API user's."""
    fake.add_user(5, "Other")
    open_task = fake.add_task(title="Open", owner=5, record_action=False)
    fake.add_task(title="Done", status=3, owner=5, record_action=False)
    mine = fake.add_task(title="Mine", owner=1, record_action=False)
    fake.mark_overdue(open_task.id)

    async def titles(flags: str) -> list[str]:
        _, doc = await call(http, fake, "task.getList", f"<filter>{flags}</filter>")
        return [t.findtext("title") for t in doc.findall("tasks/task")]

    assert await titles("ACTIVE") == ["Open", "Mine"]
    assert await titles("OVERDUE") == ["Open"]
    assert await titles("ACTIVE MY") == [mine.title]


# --- faults and controls --------------------------------------------------------------------------------------


async def test_injected_errors_match_method_and_count(fake, http):
    """inject_error hits only the named method, `times` times, in order, with an optional <message>."""
    fake.inject_error("3014", method="task.getList", times=2, message="busy")
    assert await error_code(http, fake, "user.get") is None
    _, doc = await call(http, fake, "task.getList")
    assert (doc.findtext("code"), doc.findtext("message")) == ("3014", "busy")
    assert await error_code(http, fake, "task.getList") == "3014"
    assert await error_code(http, fake, "task.getList") is None


async def test_hang_does_not_block_other_requests(fake, http):
    """A hanging request does not stop the server from answering others meanwhile."""
    fake.inject_fault("hang", method="task.getList", seconds=0.6)
    loop = asyncio.get_running_loop()
    started = loop.time()
    slow = asyncio.create_task(call(http, fake, "task.getList"))
    await asyncio.sleep(0.05)
    await call(http, fake, "user.get")
    assert loop.time() - started < 0.4
    status, doc = await slow
    assert status == 200 and doc.get("status") == "ok" and loop.time() - started >= 0.6


@pytest.mark.parametrize(("kind", "status"), [("http500", 500), ("http502", 502)])
async def test_http_faults(fake, http, kind, status):
    """HTTP faults answer with that status and a non-XML body."""
    fake.inject_fault(kind)
    response = await http.post(fake.url, content=envelope("user.get"), auth=(KEY, TOKEN))
    assert response.status_code == status and fake.requests[-1].outcome == kind


async def test_body_faults(fake, http):
    """malformed is truncated XML, billion_laughs carries a DTD, oversized streams `size` bytes, drop closes."""
    fake.inject_fault("malformed")
    fake.inject_fault("billion_laughs")
    fake.inject_fault("oversized", size=300_000)
    fake.inject_fault("drop")
    malformed = await http.post(fake.url, content=envelope("user.get"), auth=(KEY, TOKEN))
    with pytest.raises(SafeET.ParseError):
        SafeET.fromstring(malformed.content)
    laughs = await http.post(fake.url, content=envelope("user.get"), auth=(KEY, TOKEN))
    assert b"<!DOCTYPE" in laughs.content and len(laughs.content) < 2000
    oversized = await http.post(fake.url, content=envelope("user.get"), auth=(KEY, TOKEN))
    assert len(oversized.content) > 300_000 and "content-length" not in oversized.headers
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post(fake.url, content=envelope("user.get"), auth=(KEY, TOKEN))
    with pytest.raises(ValueError):
        fake.inject_fault("gremlins")


async def test_rate_limit_header_and_daily_budget(fake, http):
    """X-RateLimit-Remaining counts down per request; at zero every call answers 0007."""
    fake.rate_limit_remaining = 1
    response = await http.post(fake.url, content=envelope("user.get"), auth=(KEY, TOKEN))
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert await error_code(http, fake, "user.get") == "0007"


async def test_rps_enforcement_records_or_answers(fake, http):
    """enforce_rps records too-fast requests; with rps_violation_code set it also answers that code."""
    fake.enforce_rps = 1.0
    await call(http, fake, "user.get")
    await call(http, fake, "user.get")
    assert len(fake.rps_violations) == 1
    fake.rps_violation_code = "0007"
    assert await error_code(http, fake, "user.get") == "0007"


async def test_seeded_demo_account(fake, http):
    """seed_demo builds a small account whose feed and tasks the API serves."""
    seed_demo(fake)
    _, doc = await call(http, fake, "task.getList")
    assert doc.find("tasks").get("totalCount") == "2"
    whole_day = "<fromDate>04-03-2025</fromDate><toDate>04-03-2025</toDate>"
    _, doc = await call(http, fake, "action.getListByPeriod", whole_day)
    types = [a.findtext("type") for a in doc.findall("actions/action")]
    assert "TASKOVERDUED" in types and types.count("TASKCREATED") == 2


def test_naive_datetimes_are_refused():
    """The model insists on aware datetimes for deadlines and on an aware clock."""
    fake = FakePlanfix()
    with pytest.raises(ValueError):
        fake.add_task(title="x", deadline=datetime(2025, 1, 1, 12, 0))
    with pytest.raises(ValueError):
        FakePlanfix(clock=lambda: datetime(2025, 1, 1)).add_task(title="x")
