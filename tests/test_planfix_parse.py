"""Parsing real Planfix responses and hostile or odd XML into models; error codes; Planfix dates."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.planfix.dates import format_date, format_datetime, localize, parse_date, parse_datetime, parse_deadline
from bot.planfix.errors import (
    CODE_DESCRIPTIONS,
    PlanfixConfigError,
    PlanfixError,
    PlanfixItemError,
    PlanfixLimitError,
    PlanfixRequestError,
    PlanfixSessionError,
    PlanfixTransientError,
    error_class,
    error_for_code,
)
from bot.planfix.models import Deadline
from bot.planfix.xmlparse import (
    child,
    parse_action,
    parse_action_page,
    parse_response,
    parse_sid,
    parse_status_page,
    parse_task,
    parse_user,
    parse_user_page,
    text,
)

MOSCOW = ZoneInfo("Europe/Moscow")
YEKATERINBURG = ZoneInfo("Asia/Yekaterinburg")
BERLIN = ZoneInfo("Europe/Berlin")


def _fixtures_dir() -> Path | None:
    # The shared folder beside the repo is the source of truth; the copy in tests/fixtures keeps a lone clone
    # testable (the files are MIT-licensed, see LICENSE-planfix-go there).
    candidates = [
        Path(__file__).resolve().parents[2] / "shared" / "planfix-fixtures",
        Path(__file__).resolve().parent / "fixtures" / "planfix",
    ]
    if os.environ.get("PLANFIX_FIXTURES"):
        candidates.insert(0, Path(os.environ["PLANFIX_FIXTURES"]))
    return next((p for p in candidates if p.is_dir()), None)


FIXTURES = _fixtures_dir()
needs_fixtures = pytest.mark.skipif(
    FIXTURES is None, reason="real Planfix fixtures not found: expected ../shared/planfix-fixtures or $PLANFIX_FIXTURES"
)


def fixture(name: str) -> bytes:
    assert FIXTURES is not None
    return (FIXTURES / name).read_bytes()


def ok(name: str) -> object:
    return parse_response(fixture(name), name.removesuffix(".xml"))


# What each real fixture must turn into: a callable checking the parsed result, or the exception class.
FIXTURE_OUTCOMES: dict[str, Callable[[bytes], object] | type[PlanfixError]] = {
    "action.add.xml": lambda body: parse_response(body, "action.add"),
    "action.get.xml": lambda body: parse_action(child(parse_response(body), "action"), MOSCOW),
    "action.getList.xml": lambda body: parse_action_page(parse_response(body), MOSCOW),
    "analitic.getHandbook.xml": lambda body: parse_response(body, "analitic.getHandbook"),
    "analitic.getList.xml": lambda body: parse_response(body, "analitic.getList"),
    "analitic.getOptions.xml": lambda body: parse_response(body, "analitic.getOptions"),
    "auth.login.xml": lambda body: parse_sid(parse_response(body, "auth.login")),
    "error.invalidXml.xml": PlanfixTransientError,
    "error.sessionExpired.xml": PlanfixSessionError,
    "error.unknown.xml": PlanfixRequestError,
    "error.xml": PlanfixConfigError,
    "task.get.xml": lambda body: parse_task(child(parse_response(body), "task"), MOSCOW),
    "user.get.xml": lambda body: parse_user(child(parse_response(body), "user")),
    "user.getList.xml": lambda body: parse_user_page(parse_response(body)),
}


# --- every real fixture ---------------------------------------------------------------------------------------


@needs_fixtures
def test_every_fixture_has_an_expected_outcome():
    """A new fixture file cannot slip in without a parse expectation."""
    assert FIXTURES is not None
    assert {p.name for p in FIXTURES.glob("*.xml")} == set(FIXTURE_OUTCOMES)


@needs_fixtures
@pytest.mark.parametrize("name", sorted(FIXTURE_OUTCOMES))
def test_fixture_parses_as_expected(name):
    """Each real response parses as it is, or raises the exception class its error code maps to."""
    outcome = FIXTURE_OUTCOMES[name]
    if isinstance(outcome, type):
        with pytest.raises(outcome):
            parse_response(fixture(name), "some.method")
    else:
        assert outcome(fixture(name)) is not None


@needs_fixtures
def test_task_get_fixture_fields():
    """task.get: number vs id, numeric status, date-only deadline at 23:59 local, refs, id-0 refs ignored."""
    task = parse_task(child(ok("task.get.xml"), "task"), YEKATERINBURG)
    assert (task.id, task.general) == (1128468, 525330)
    assert (task.status, task.status_set) == (4, 2)
    assert task.deadline == Deadline(due=datetime(2018, 3, 5, 23, 59, tzinfo=YEKATERINBURG), date_only=True)
    assert task.deadline.due.utcoffset() == timedelta(hours=5)
    assert task.deadline.local_date == date(2018, 3, 5)
    assert task.deadline.to_json() == "2018-03-05"
    assert task.begin == datetime(2018, 2, 3, 17, 9, tzinfo=YEKATERINBURG)
    assert task.owner is not None and task.owner.id == 9230 and task.owner.name == "Станислав Попов"
    assert task.project is not None and task.project.id == 9830
    assert [p.id for p in task.workers] == [9230] and [g.id for g in task.worker_groups] == [4717]
    assert [p.id for p in task.members] == [9230] and [p.id for p in task.auditors] == [9230]
    assert task.participant_ids() == frozenset({9230})
    assert task.importance == "AVERAGE" and task.is_overdue is False
    assert task.description == "<p>Выработка должна попадать из toggl в планфикс сама.<br/>"


@needs_fixtures
def test_action_get_fixture_status_and_deadline_change():
    """action.get: a human ACTION carries <statusChange> 2→4 and a deadline move; task id is internal."""
    action = parse_action(child(ok("action.get.xml"), "action"), YEKATERINBURG)
    assert (action.id, action.type, action.task_id) == (6379544, "ACTION", 1128468)
    assert action.at == datetime(2018, 2, 18, 21, 12, tzinfo=YEKATERINBURG)
    assert action.status_change is not None
    assert (action.status_change.old, action.status_change.new) == (2, 4)
    change = action.deadline_change
    assert change is not None and change.old is not None and change.new is not None
    assert change.old.due == datetime(2018, 2, 16, 23, 59, tzinfo=YEKATERINBURG)
    assert change.new.due == datetime(2018, 3, 5, 12, 0, tzinfo=YEKATERINBURG)
    assert action.owner is not None and action.owner.id == 9230
    assert action.task_title == "Интеграция с toggl"
    assert action.description.startswith("<p>Действие")
    assert action.files == ("action.get.xml",)  # <files><file><name>: named in a comment notice


@needs_fixtures
def test_action_get_list_fixture():
    """action.getList: 31 actions, attributes in reverse order, system placeholders kept verbatim."""
    page = parse_action_page(ok("action.getList.xml"), YEKATERINBURG)
    assert (len(page.items), page.count, page.total_count) == (31, 31, 31)
    assert len({a.id for a in page.items}) == 31
    overdue = [a for a in page.items if a.type == "TASKOVERDUED"]
    assert [a.id for a in overdue] == [6378998, 6349288]
    assert overdue[0].description == "{event21}"
    assert overdue[0].status_change is None and overdue[0].deadline_change is None
    changed = next(a for a in page.items if a.type == "TASKCHANGED" and a.deadline_change)
    assert changed.deadline_change is not None and changed.deadline_change.new is not None
    assert changed.deadline_change.new.due == datetime(2018, 2, 16, 23, 59, tzinfo=YEKATERINBURG)
    employed = next(a for a in page.items if a.type == "WORKEREMPLOYED")
    # One XML unescape only: the double-escaped entity survives as HTML for the renderer to handle.
    assert "<a href='/?action=user&id=8152' >" in employed.description
    assert "&mdash;" in employed.description
    assert next(a for a in page.items if a.id == 6364522).description == ""


@needs_fixtures
def test_user_get_fixture():
    """user.get: the IANA time zone is read and values padded with a newline are stripped."""
    response = ok("user.get.xml")
    user = parse_user(child(response, "user"))
    assert (user.id, user.name, user.last_name, user.login) == (9230, "Станислав", "Попов", "popstas")
    assert user.timezone == "Asia/Yekaterinburg"
    assert user.full_name == "Станислав Попов"
    assert (user.role, user.status, user.email) == ("ADMIN", "ACTIVE", "popstas@company.ru")
    assert text(child(response, "user"), "userPic").endswith("h=cf6a1c72aeb86097e2411550870e94a0")


@needs_fixtures
def test_user_get_list_fixture():
    """user.getList: both users, empty lastName as "", count/totalCount read."""
    page = parse_user_page(ok("user.getList.xml"))
    assert [u.id for u in page.items] == [36718, 9230]
    assert (page.count, page.total_count) == (2, 2)
    assert page.items[0].last_name == "" and page.items[0].timezone == "Asia/Dushanbe"


@needs_fixtures
@pytest.mark.parametrize(
    ("name", "cls", "code"),
    [
        ("error.sessionExpired.xml", PlanfixSessionError, "0005"),
        ("error.xml", PlanfixConfigError, "0004"),
        ("error.unknown.xml", PlanfixRequestError, "123123123"),
    ],
)
def test_error_fixtures_map_to_classes(name, cls, code):
    """Error responses raise the class of their code, carrying code and method."""
    with pytest.raises(cls) as info:
        parse_response(fixture(name), "task.get")
    assert (info.value.code, info.value.method) == (code, "task.get")
    assert code in str(info.value)


@needs_fixtures
def test_truncated_fixture_is_transient():
    """A truncated body (error.invalidXml.xml) is a transient failure, not a crash."""
    with pytest.raises(PlanfixTransientError, match="malformed or truncated"):
        parse_response(fixture("error.invalidXml.xml"), "task.get")


@needs_fixtures
def test_auth_login_fixture_sid():
    """auth.login: the sid is read from the response."""
    assert parse_sid(ok("auth.login.xml")) == "sid_after_login"


# --- hostile and odd XML --------------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<response status="ok"><sid>&lol9;</sid></response>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE response [<!ENTITY leak SYSTEM "file:///etc/passwd">]>
<response status="ok"><sid>&leak;</sid></response>"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion-laughs", "external-entity"])
def test_entity_tricks_are_refused_quickly(body):
    """DTD/entity bodies are refused before any expansion: transient error, fast, nothing leaked."""
    started = time.monotonic()
    with pytest.raises(PlanfixTransientError, match="DTD or entity") as info:
        parse_response(body, "auth.login")
    assert time.monotonic() - started < 0.5
    assert "root:" not in str(info.value)


@pytest.mark.parametrize(
    "body",
    [
        b'<response status="ok"><actions count="0" totalCount="0"/></response>',
        b'<response status="ok"><actions totalCount="0" count="0"></actions></response>',
        b'<response status="ok"><actions/></response>',
    ],
    ids=["self-closing", "open-close", "no-attributes"],
)
def test_empty_lists_are_empty_pages(body):
    """Empty list roots, self-closing or not, with or without attributes, are empty pages, not errors."""
    page = parse_action_page(parse_response(body), UTC)
    assert page.items == [] and page.count == 0
    assert page.total_count in (0, None)


def test_list_attributes_in_any_order():
    """count/totalCount are read by name whatever their order."""
    one = b'<response status="ok"><users count="1" totalCount="7"><user><id>5</id></user></users></response>'
    two = b'<response status="ok"><users totalCount="7" count="1"><user><id>5</id></user></users></response>'
    assert parse_user_page(parse_response(one)) == parse_user_page(parse_response(two))
    assert parse_user_page(parse_response(one)).total_count == 7


def test_whitespace_everywhere_is_stripped():
    """Values padded with spaces and newlines parse as if they were tight."""
    body = b"""<response status=" ok ">
      <task>
        <id>
          42
        </id>
        <general> 7 </general>
        <title>  Title \n</title>
        <status>
        2</status>
        <endTime>  05-03-2018 12:30
        </endTime>
        <owner><id> 0 </id><name></name></owner>
        <project><id>0</id><title/></project>
        <workers><users><user><id> 3 </id><name> Ann </name></user></users></workers>
      </task>
    </response>"""
    task = parse_task(child(parse_response(body), "task"), MOSCOW)
    assert (task.id, task.general, task.title, task.status) == (42, 7, "Title", 2)
    assert task.deadline == Deadline(due=datetime(2018, 3, 5, 12, 30, tzinfo=MOSCOW))
    assert task.owner is None and task.project is None
    assert [(p.id, p.name) for p in task.workers] == [(3, "Ann")]


def test_single_and_many_children_parse_alike():
    """One worker or several: the same tuple shape (findall, not dict-or-list)."""
    one = parse_task(_task_xml("<workers><users><user><id>1</id></user></users></workers>"), UTC)
    two = parse_task(
        _task_xml("<workers><users><user><id>1</id></user><user><id>2</id></user></users></workers>"), UTC
    )
    assert [p.id for p in one.workers] == [1] and [p.id for p in two.workers] == [1, 2]


def test_unknown_elements_and_empty_nodes_are_ignored():
    """Extra fields and empty nodes do not disturb parsing; missing optional data becomes defaults."""
    extra = "<jabber/><coeff>1</coeff><customData/><endTime/><statusSet/><newThing>x</newThing>"
    task = parse_task(_task_xml(extra), UTC)
    assert task.deadline is None and task.status_set is None and task.importance == "AVERAGE"


def _task_xml(extra: str):
    body = f'<response status="ok"><task><id>1</id><general>2</general>{extra}</task></response>'.encode()
    return child(parse_response(body), "task")


def _action_xml(extra: str):
    body = (
        '<response status="ok"><action><id>9</id><type>TASKCHANGED</type><dateTime>01-03-2024 10:00</dateTime>'
        f"<task><id>5</id></task>{extra}</action></response>"
    ).encode()
    return child(parse_response(body), "action")


def test_deadline_change_unset_sides_are_none():
    """`*IsSet` = 0 or an empty date means that side of the deadline change is unset."""
    action = parse_action(
        _action_xml(
            "<taskExpectDateChanged><oldDate></oldDate><newDate>05-03-2024</newDate>"
            "<newDateIsSet>1</newDateIsSet><oldDateIsSet>0</oldDateIsSet></taskExpectDateChanged>"
        ),
        MOSCOW,
    )
    assert action.deadline_change is not None
    assert action.deadline_change.old is None
    assert action.deadline_change.new == Deadline(due=datetime(2024, 3, 5, 23, 59, tzinfo=MOSCOW), date_only=True)
    removed = parse_action(
        _action_xml(
            "<taskExpectDateChanged><oldDate>01-03-2024 10:00</oldDate><newDate>01-03-2024 10:00</newDate>"
            "<newDateIsSet>0</newDateIsSet><oldDateIsSet>1</oldDateIsSet></taskExpectDateChanged>"
        ),
        MOSCOW,
    )
    assert removed.deadline_change is not None and removed.deadline_change.new is None


def test_action_without_task_has_task_id_zero():
    """A contact comment (no <task>) parses with task_id 0 instead of failing the whole page."""
    body = (
        b'<response status="ok"><action><id>1</id><type>ACTION</type><dateTime>01-03-2024 10:00</dateTime>'
        b"<contact><general>5</general></contact></action></response>"
    )
    assert parse_action(child(parse_response(body), "action"), UTC).task_id == 0


def test_status_list_of_set_names():
    """taskStatus.getListOfSet: localised names keyed by lower-cased lang, activity flags read."""
    body = """<response status="ok"><taskStatuses totalCount="2">
      <taskStatus><id>3</id><name>Завершенная</name><isActive>0</isActive><hasDeadline>0</hasDeadline>
        <texts><text><lang>Ru</lang><name>Завершенная</name></text>
          <text><lang>En</lang><name>Completed</name></text></texts>
      </taskStatus>
      <taskStatus><id>2</id><name></name><texts><text><lang>Ru</lang><name>В работе</name></text></texts></taskStatus>
    </taskStatuses></response>""".encode()
    page = parse_status_page(parse_response(body), 2)
    done, doing = page.items
    assert (done.id, done.set_id, done.is_active, done.has_deadline) == (3, 2, False, False)
    assert done.names == {"ru": "Завершенная", "en": "Completed"} and done.name_in("EN") == "Completed"
    assert doing.name == "В работе" and doing.is_active and doing.name_in("en") == "В работе"
    assert (page.count, page.total_count) == (2, 2)


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>502 Bad Gateway</body></html>",
        b'<response status="weird"/>',
        b'<response status="error"></response>',
        b'<response status="ok"><task><id>x1</id><general>2</general></task></response>',
        b'<response status="ok"><task><id>1</id><general>2</general><endTime>2018-03-05</endTime></task></response>',
        b"",
    ],
    ids=["not-response", "odd-status", "error-no-code", "bad-int", "bad-date", "empty"],
)
def test_unexpected_shapes_are_transient(body):
    """Well-formed but unexpected, or empty, bodies raise PlanfixTransientError with a clear reason."""
    with pytest.raises(PlanfixTransientError):
        parse_task(child(parse_response(body, "task.get"), "task"), UTC)


def test_missing_list_root_is_a_shape_error():
    """An ok response without the list root is an unexpected shape, not an empty list."""
    with pytest.raises(PlanfixTransientError, match="no <actions>"):
        parse_action_page(parse_response(b'<response status="ok"/>'), UTC)


def test_error_message_is_kept_and_short():
    """An optional <message> is appended to the error text, capped in length."""
    body = ('<response status="error"><code>0015</code><message>' + "x" * 1000 + "</message></response>").encode()
    with pytest.raises(PlanfixRequestError) as info:
        parse_response(body, "action.getListByPeriod")
    assert "invalid parameter value" in str(info.value) and len(str(info.value)) < 300


# --- error classes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        *[(c, PlanfixConfigError) for c in ("0001", "0002", "0004", "0010", "0012", "0013", "0014", "0020")],
        *[(c, PlanfixConfigError) for c in ("0022", "0023", "0024", "1001", "1002")],
        *[(c, PlanfixTransientError) for c in ("0011", "3014")],
        ("0007", PlanfixLimitError),
        ("0005", PlanfixSessionError),
        *[(c, PlanfixItemError) for c in ("0101", "0102", "0103", "0104", "0105", "2001", "2002", "3001")],
        *[(c, PlanfixItemError) for c in ("3008", "4002", "4008", "4009", "6004")],
        *[(c, PlanfixItemError) for c in ("3002", "3009", "4001", "5001", "6001", "7002", "8001", "9002", "10001")],
        *[(c, PlanfixRequestError) for c in ("0003", "0006", "0008", "0009", "0015", "0016", "0017", "0018")],
        *[(c, PlanfixRequestError) for c in ("0019", "0021", "11001", "9999", "123123123")],
    ],
)
def test_error_codes_map_to_classes(code, cls):
    """Every documented code lands in the class that says what to do; unknown codes are our bug."""
    exc = error_for_code(code, "task.get")
    assert type(exc) is cls and exc.code == code and exc.method == "task.get"


def test_error_hierarchy():
    """Limit and session errors are transient (retry later); everything is a PlanfixError."""
    assert issubclass(PlanfixLimitError, PlanfixTransientError)
    assert issubclass(PlanfixSessionError, PlanfixTransientError)
    for cls in (PlanfixConfigError, PlanfixTransientError, PlanfixItemError, PlanfixRequestError):
        assert issubclass(cls, PlanfixError)


def test_0012_depends_on_auth_mode():
    """0012 is a bad token (config) in token mode, a lost session (re-login) in login mode."""
    assert error_class("0012", token_mode=True) is PlanfixConfigError
    assert error_class("0012", token_mode=False) is PlanfixSessionError


def test_every_code_has_a_description():
    """Known codes describe themselves; the description is in the message."""
    assert all(CODE_DESCRIPTIONS[c] for c in CODE_DESCRIPTIONS)
    assert "task does not exist" in str(error_for_code("3001", "task.get"))


def test_redacted_removes_secrets():
    """redacted() scrubs secrets from the message and keeps class, code and method."""
    exc = error_for_code("0015", "task.get", message="bad key key-123 and sid s1d")
    clean = exc.redacted(["key-123", "s1d", ""])
    assert type(clean) is PlanfixRequestError and (clean.code, clean.method) == ("0015", "task.get")
    assert "key-123" not in str(clean) and "s1d" not in repr(clean) and "***" in str(clean)
    assert error_for_code("3001", "task.get").redacted(["zzz"]).code == "3001"


# --- dates ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("18-02-2018 21:12", datetime(2018, 2, 18, 21, 12, tzinfo=MOSCOW)),
        ("  18-02-2018 21:12\n", datetime(2018, 2, 18, 21, 12, tzinfo=MOSCOW)),
        ("18-02-2018", datetime(2018, 2, 18, 0, 0, tzinfo=MOSCOW)),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_parse_datetime(raw, expected):
    """Both Planfix formats parse to aware datetimes in the given zone; blank means None."""
    assert parse_datetime(raw, MOSCOW) == expected


@pytest.mark.parametrize("raw", ["2018-02-18", "18-02-2018 21:12:33", "31-02-2018", "yesterday"])
def test_parse_datetime_rejects_other_formats(raw):
    """Anything but dd-mm-yyyy[ hh:mm] is a ValueError (the XML layer turns it into a shape error)."""
    with pytest.raises(ValueError):
        parse_datetime(raw, MOSCOW)


def test_date_only_deadline_is_due_at_end_of_day():
    """A date-only deadline is due at 23:59 local time that day and remembers it was date-only."""
    deadline = parse_deadline(" 05-03-2018 ", YEKATERINBURG)
    assert deadline == Deadline(due=datetime(2018, 3, 5, 23, 59, tzinfo=YEKATERINBURG), date_only=True)
    assert deadline.due.astimezone(UTC) == datetime(2018, 3, 5, 18, 59, tzinfo=UTC)
    assert parse_deadline("05-03-2018 10:00", YEKATERINBURG) == Deadline(
        due=datetime(2018, 3, 5, 10, 0, tzinfo=YEKATERINBURG)
    )
    assert parse_deadline("", YEKATERINBURG) is None
    assert parse_date("13-03-1987") == date(1987, 3, 13) and parse_date(" ") is None


def test_dst_gap_and_overlap():
    """Wall times in the spring gap move forward; repeated autumn times take the first occurrence."""
    gap = parse_datetime("31-03-2024 02:30", BERLIN)
    assert gap is not None and (gap.hour, gap.minute, gap.utcoffset()) == (3, 30, timedelta(hours=2))
    overlap = parse_datetime("27-10-2024 02:30", BERLIN)
    assert overlap is not None and overlap.utcoffset() == timedelta(hours=2)
    spring_deadline = parse_deadline("31-03-2024", BERLIN)
    assert spring_deadline is not None and spring_deadline.due.utcoffset() == timedelta(hours=2)
    assert localize(datetime(2024, 1, 1, 12, 0), BERLIN).utcoffset() == timedelta(hours=1)


def test_format_datetime_converts_to_api_zone():
    """Request dates are the instant's wall time in the API zone, seconds truncated."""
    moment = datetime(2025, 11, 21, 11, 5, 59, tzinfo=UTC)
    assert format_datetime(moment, MOSCOW) == "21-11-2025 14:05"
    assert format_datetime(moment, YEKATERINBURG) == "21-11-2025 16:05"
    assert format_date(date(2025, 1, 2)) == "02-01-2025"
    with pytest.raises(ValueError):
        format_datetime(datetime(2025, 1, 1), MOSCOW)


@given(st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2100, 1, 1)))
def test_format_parse_round_trip(naive):
    """format → parse gives back the instant, truncated to the minute (Moscow has no DST since 2014)."""
    moment = naive.replace(tzinfo=UTC)
    parsed = parse_datetime(format_datetime(moment, MOSCOW), MOSCOW)
    assert parsed == moment.replace(second=0, microsecond=0)
