"""Rendering: Telegram accepts every message whatever Planfix holds, within 4096 UTF-16 units, in ru and en."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from defusedxml import ElementTree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.events import DEADLINE, OVERDUE, STATUS, Event, legacy_payload
from bot.fakes.telegram_html import parse_telegram_entities, parse_telegram_html
from bot.notify import markup, render
from bot.notify.render import (
    MESSAGE_LIMIT,
    escape,
    planfix_html_to_telegram,
    render_event,
    task_url,
    truncate,
    utf16_len,
)
from bot.planfix.models import Deadline, PersonRef, ProjectRef, Task

MOSCOW = ZoneInfo("Europe/Moscow")
WEB = "https://acme.planfix.ru"
AT = datetime(2018, 3, 6, 21, 30, tzinfo=UTC)
HOSTILE = [
    "<", ">", "&", '"', "'", "a < b && c > d", "<script>alert(1)</script>", "</b>", "<b>", "&amp;lt;", "&nbsp;",
    "&", "Tom & Jerry", "_*[]()~`>#+-=|{}.!", "😀👨‍👩‍👧‍👦🇷🇺", "\U0001f600" * 3, "שלום עולם مرحبا", "\u202eevil\u202c",
    "zero\u200bwidth\u200d\ufeff", "\x00\x07\x1b", "line\nbreak\r\n\ttab", '" onclick="alert(1)', "{event21}",
    "x" * 10_000, "😀" * 5_000, "&" * 10_000, "<" * 5_000 + ">" * 5_000,
]


def event(kind: str = STATUS, **fields) -> Event:
    """An event; its payload from the old field names (`old_value`, `new_value`, `subject_id`, `items`)."""
    legacy = {"old_value": "В работе", "new_value": "Выполненная"}
    legacy.update({k: fields.pop(k) for k in ("old_value", "new_value", "subject_id", "items") if k in fields})
    values = dict(
        kind=kind, key="k", task_id=1, task_general=525330, task_title="Выгрузка из toggl", occurred_at=AT,
        project_title=None, actor_name="Иван Петров", payload=legacy_payload(kind, legacy),
    )
    values.update(fields)
    return Event(**values)


def card_task(**fields) -> Task:
    values = dict(
        id=1, general=525330, title="Выгрузка из toggl", description="<p>Выработка&nbsp;<b>сама</b><br/>",
        importance="HIGH", project=ProjectRef(3, "Интеграции"), deadline=Deadline(AT, date_only=False),
        owner=PersonRef(9, "Станислав Попов"), workers=(PersonRef(1, "Иван Петров"), PersonRef(2, "Анна")),
        worker_groups=(PersonRef(5, "Разработка"),),
    )
    values.update(fields)
    return Task(**values)


def accepted(message: str) -> str:
    """The text Telegram would show; fails the test if Telegram would refuse the message."""
    plain = parse_telegram_html(message)
    assert 1 <= utf16_len(plain) <= MESSAGE_LIMIT
    return plain


def xml_text(fragment: str) -> str:
    """A description as the XML parser hands it over (entity-escaped once in the XML, like the fixtures)."""
    return ElementTree.fromstring(f"<description>{fragment}</description>").text or ""


# ── events ───────────────────────────────────────────────────────────────────────────────────────────────────


def test_status_change_in_russian():
    """A status event names the task (linked), the old → new status and who changed it."""
    message = render_event(event(project_title="Интеграции"), lang="ru", tz=MOSCOW, web_url=WEB)
    assert message == (
        '🔄 <b>#525330</b> <a href="https://acme.planfix.ru/task/525330">Выгрузка из toggl</a>\n'
        "Проект: Интеграции\n"
        "Статус: В работе → <b>Выполненная</b>\n"
        "Изменил(а): Иван Петров"
    )
    accepted(message)


def test_status_change_in_english_without_optional_parts():
    """English strings; no project or actor lines when unknown; a first status has no arrow."""
    message = render_event(event(old_value=None, actor_name=None), lang="en", tz=MOSCOW, web_url=WEB)
    assert accepted(message) == "🔄 #525330 Выгрузка из toggl\nStatus: Выполненная"


def test_link_points_at_the_task_number():
    """The title links to {web_url}/task/{general}, whatever trailing slash web_url has."""
    assert task_url("https://acme.planfix.ru/", 525330) == "https://acme.planfix.ru/task/525330"
    message = render_event(event(), lang="ru", tz=MOSCOW, web_url=WEB + "/")
    [link] = [e for e in parse_telegram_entities(message).entities if e.type == "text_link"]
    assert link.url == f"{WEB}/task/525330"


def test_deadline_datetimes_are_shown_in_the_display_zone():
    """A deadline at 21:30 UTC is 00:30 the next day in Moscow; a date-only deadline stays that date."""
    moved = event(DEADLINE, old_value="2018-03-05", new_value=AT.isoformat())
    assert "Срок: 05.03.2018 → 07.03.2018 00:30" in accepted(render_event(moved, lang="ru", tz=MOSCOW, web_url=WEB))
    los_angeles = ZoneInfo("America/Los_Angeles")
    assert "Deadline: 05.03.2018 → 06.03.2018 13:30" in accepted(
        render_event(moved, lang="en", tz=los_angeles, web_url=WEB)
    )


def test_deadline_set_and_removed():
    """A deadline set where there was none reads "не задан" / "not set" before the arrow; a removed one says so in
    words ("снят" / "removed"), not with a dash."""
    set_ = event(DEADLINE, old_value=None, new_value="2018-03-07")
    removed = event(DEADLINE, old_value="2018-03-07", new_value=None)
    assert "Срок: не задан → 07.03.2018" in accepted(render_event(set_, lang="ru", tz=MOSCOW, web_url=WEB))
    assert "Deadline: 07.03.2018 → removed" in accepted(render_event(removed, lang="en", tz=MOSCOW, web_url=WEB))
    assert "Срок: 07.03.2018 → снят" in accepted(render_event(removed, lang="ru", tz=MOSCOW, web_url=WEB))


def test_overdue_names_the_missed_deadline():
    """An overdue event says when the task was due, in the display zone."""
    due = (AT + timedelta(hours=12)).isoformat()
    overdue = event(OVERDUE, old_value=None, new_value=due, actor_name=None)
    assert accepted(render_event(overdue, lang="ru", tz=MOSCOW, web_url=WEB)).endswith(
        "⏰ #525330 Выгрузка из toggl\nПросрочена (срок был 07.03.2018 12:30)"
    )
    assert "Overdue (was due 07.03.2018 12:30)" in accepted(render_event(overdue, lang="en", tz=MOSCOW, web_url=WEB))


def test_unparseable_deadline_text_is_shown_escaped():
    """A deadline value that isn't ISO is shown as text rather than dropping the notification."""
    odd = event(DEADLINE, old_value="<завтра>", new_value="2018-13-45")
    assert "<завтра> → 2018-13-45" in accepted(render_event(odd, lang="ru", tz=MOSCOW, web_url=WEB))


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("lang", ["ru", "en"])
def test_hostile_values_are_escaped_everywhere(value, lang):
    """Markup characters, emoji, RTL, zero-width, control and huge values in any field still give a valid message."""
    for kind in (STATUS, DEADLINE, OVERDUE, "custom<kind>"):
        hostile = event(
            kind, task_title=value, old_value=value, new_value=value, project_title=value, actor_name=value,
            importance="HIGH",
        )
        plain = accepted(render_event(hostile, lang=lang, tz=MOSCOW, web_url=WEB))
        shown = truncate(" ".join(value.split()), markup.TITLE_LIMIT)
        assert shown in plain or not shown


def test_quotes_in_web_url_cannot_break_out_of_href():
    """The href is attribute-escaped: a quote in web_url stays inside the link target."""
    message = render_event(event(), lang="en", tz=MOSCOW, web_url='https://x.planfix.ru/" onclick="x')
    assert '<a href="https://x.planfix.ru/&quot; onclick=&quot;x/task/525330">' in message
    accepted(message)


def test_fields_are_cut_before_markup():
    """A 10,000-character title is cut to 300 units with "…" inside the link, never through a tag or entity."""
    message = render_event(event(task_title="&" * 10_000), lang="ru", tz=MOSCOW, web_url=WEB)
    title_line = accepted(message).split("\n")[0]
    assert title_line == "🔄 #525330 " + "&" * 299 + "…"


def test_overflow_falls_back_to_number_and_link(monkeypatch):
    """If the fields still don't fit, a short message with the number and the link is sent instead."""
    monkeypatch.setattr(markup, "TITLE_LIMIT", 50_000)
    message = render_event(event(task_title="x" * 5_000), lang="ru", tz=MOSCOW, web_url=WEB)
    plain = accepted(message)
    assert plain.startswith("🔄 #525330\n") and plain.endswith(f"{WEB}/task/525330")


def test_rendering_is_deterministic():
    """The same event renders to the same bytes every time (coalescing edits compare them)."""
    assert render_event(event(), lang="ru", tz=MOSCOW, web_url=WEB) == render_event(
        event(), lang="ru", tz=MOSCOW, web_url=WEB
    )


# ── the /task card ───────────────────────────────────────────────────────────────────────────────────────────


# ── Planfix HTML → Telegram HTML ─────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("fragment", "expected"),
    [
        ("&lt;p&gt;Выработка должна попадать из toggl в планфикс сама.&lt;br/&gt;",
         "Выработка должна попадать из toggl в планфикс сама."),
        ("{event23}&lt;br/&gt;{event24}: 16-02-2018, {event25}: &lt;b&gt;3&lt;/b&gt; {event26}",
         "16-02-2018, <b>3</b>"),
        ("{event6}: &lt;a href='/?action=user&amp;id=8152' &gt;Станислав Попов&lt;/a&gt;&lt;br&gt;{event8}: "
         "03.02.2018 &amp;mdash; 07.02.2018",
         "Станислав Попов\n03.02.2018 — 07.02.2018"),
        ("{log26}&lt;br&gt;[&lt;i&gt;{log29}&lt;/i&gt;]:&amp;nbsp;Интеграция с toggl&lt;br/&gt;&lt;div "
         "class='log-expand' onclick='log_toggleExtra(this); return false;' title='{log27}'&gt;&lt;/div&gt;",
         "[]: Интеграция с toggl"),
        ("&lt;ul&gt;&lt;li&gt;one&lt;/li&gt;&lt;li&gt;&lt;strong&gt;two&lt;/strong&gt;&lt;/li&gt;&lt;/ul&gt;"
         "&lt;script&gt;alert(1)&lt;/script&gt;&amp;lt;tag&amp;gt; &amp;amp; &amp;quot;",
         "• one\n• <b>two</b>\n&lt;tag&gt; &amp; \""),
    ],
)
def test_planfix_fixture_descriptions_convert_to_the_subset(fragment, expected):
    """Real fixture descriptions become valid Telegram HTML: tags mapped, placeholders gone, entities decoded."""
    converted = planfix_html_to_telegram(xml_text(fragment), max_len=500)
    assert converted == expected
    parse_telegram_html(converted)


def test_relative_planfix_links_become_absolute_with_a_base():
    """/?action=user&id=… links are resolved against the account URL; javascript: links lose their tag."""
    source = xml_text("&lt;a href='/?action=user&amp;id=8152' &gt;Станислав&lt;/a&gt; &lt;a href='javascript:x()'&gt;"
                      "js&lt;/a&gt; &lt;a href=\"https://ex.com/a b\"&gt;ext&lt;/a&gt;")
    converted = planfix_html_to_telegram(source, max_len=500, base_url=WEB)
    links = [e.url for e in parse_telegram_entities(converted).entities if e.type == "text_link"]
    assert links == [f"{WEB}/?action=user&id=8152", "https://ex.com/a%20b"]
    assert parse_telegram_html(converted) == "Станислав js ext"


def test_misnested_planfix_markup_is_repaired():
    """Overlapping tags in the source come out properly nested; stray end tags are ignored."""
    converted = planfix_html_to_telegram("<b>bold <i>both</b> italic</i></u> end", max_len=100)
    assert converted == "<b>bold <i>both</i></b> italic end"


def test_cutting_never_leaves_a_tag_open():
    """At every possible budget the cut text is valid Telegram HTML within the budget, ending in "…" when cut."""
    source = '<p><b>Жирный <i>курсив 😀 <a href="https://e.com">ссылка &amp; ещё</a></i></b></p><ul><li>пункт</li></ul>'
    full = parse_telegram_html(planfix_html_to_telegram(source, max_len=1_000))
    for budget in range(utf16_len(full) + 2):
        converted = planfix_html_to_telegram(source, max_len=budget)
        plain = parse_telegram_html(converted)
        assert utf16_len(plain) <= budget
        assert plain == full or plain.endswith("…") or not plain


def test_truncate_counts_utf16_and_never_splits_a_pair():
    """truncate measures UTF-16 units, keeps whole surrogate pairs and adds "…" only when it cuts."""
    assert truncate("short", 5) == "short"
    assert truncate("😀" * 5, 4) == "😀…"
    assert truncate("a😀b", 3) == "a…"
    assert truncate("👩‍💻 done", 3) == "👩…"
    assert truncate("anything", 0) == ""
    assert utf16_len("😀a") == 3


def test_escape_handles_quotes_and_non_strings():
    """escape() is safe in text and in attribute values alike."""
    assert escape('<a href="x">&\'') == "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;"
    assert escape(42) == "42"


# ── properties ───────────────────────────────────────────────────────────────────────────────────────────────

TEXT = st.text(max_size=400) | st.text(alphabet="<>&\"';/ab😀\u200d\n", max_size=400)
PIECES = list("<>&;#/=\"' abipldvr😀\n") + [
    "<b>", "</b>", "<i>", "</i>", "<p>", "</p>", "<br/>", "<li>", "&amp;", "&mdash;", "&nbsp;", "<a href='/x'>",
    "<a href=\"https://e.com/?a=1&amp;b=2\">", "</a>", "{event1}", "<script>", "</script>", "<!-- c -->",
]
HTMLISH = st.lists(st.sampled_from(PIECES), max_size=60).map("".join)
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    kind=st.sampled_from([STATUS, DEADLINE, OVERDUE]), lang=st.sampled_from(["ru", "en"]), title=TEXT,
    old=st.none() | TEXT, new=st.none() | TEXT, actor=st.none() | TEXT, project=st.none() | TEXT,
)
def test_any_event_renders_to_an_accepted_message(kind, lang, title, old, new, actor, project):
    """Whatever the titles, names and values hold, Telegram accepts the event message and it fits."""
    hostile = event(kind, task_title=title, old_value=old, new_value=new, actor_name=actor, project_title=project)
    plain = accepted(render_event(hostile, lang=lang, tz=MOSCOW, web_url=WEB))
    assert truncate(" ".join(title.split()), markup.TITLE_LIMIT) in plain


@FAST
@given(source=HTMLISH | TEXT, budget=st.integers(min_value=0, max_value=120))
def test_any_planfix_html_converts_within_budget(source, budget):
    """Any HTML-ish input converts to valid Telegram HTML no longer than the budget."""
    converted = planfix_html_to_telegram(source, max_len=budget, base_url=WEB)
    assert utf16_len(parse_telegram_html(converted)) <= budget


# ── issue 5: reminders, digests, coalesced messages ──────────────────────────────────────────────────────────

from bot.events import DIGEST, REMINDER  # noqa: E402
from bot.notify.render import render_events  # noqa: E402


def test_reminder_in_russian_and_english_with_the_deadline_in_the_display_zone():
    """A reminder says how long until the deadline in words and shows the deadline in display.timezone."""
    reminder = event(REMINDER, old_value="24h", new_value=AT.isoformat(), actor_name=None)
    assert accepted(render_event(reminder, lang="ru", tz=MOSCOW, web_url=WEB)) == (
        "⏳ #525330 Выгрузка из toggl\nСрок через 24 часа: 07.03.2018 00:30"
    )
    assert accepted(render_event(reminder, lang="en", tz=ZoneInfo("America/Los_Angeles"), web_url=WEB)).endswith(
        "Deadline in 24 hours: 06.03.2018 13:30"
    )


@pytest.mark.parametrize(("lead", "ru", "en"), [
    ("1h", "1 час", "1 hour"), ("2h", "2 часа", "2 hours"), ("5h", "5 часов", "5 hours"),
    ("21h", "21 час", "21 hours"), ("11h", "11 часов", "11 hours"), ("30m", "30 минут", "30 minutes"),
    ("1d", "1 день", "1 day"), ("3d", "3 дня", "3 days"), ("1h30m", "1 час 30 минут", "1 hour 30 minutes"),
    ("2w", "2 недели", "2 weeks"),
])
def test_reminder_lead_times_are_words_with_russian_plurals(lead, ru, en):
    """"24h"-style lead times read as words, with Russian plural forms (1 час, 2 часа, 5 часов, 21 час)."""
    reminder = event(REMINDER, old_value=lead, new_value="2018-03-07")
    assert f"Срок через {ru}: 07.03.2018" in accepted(render_event(reminder, lang="ru", tz=MOSCOW, web_url=WEB))
    assert f"Deadline in {en}: 07.03.2018" in accepted(render_event(reminder, lang="en", tz=MOSCOW, web_url=WEB))


def test_an_unreadable_or_missing_lead_time_still_gives_a_reminder():
    """A lead time we cannot read is shown as given (escaped); none at all reads "deadline soon"."""
    odd = event(REMINDER, old_value="<soon>", new_value="2018-03-07")
    assert "Deadline in <soon>: 07.03.2018" in accepted(render_event(odd, lang="en", tz=MOSCOW, web_url=WEB))
    bare = event(REMINDER, old_value=None, new_value=None)
    assert "Скоро срок: не задан" in accepted(render_event(bare, lang="ru", tz=MOSCOW, web_url=WEB))


def digest_of(items, **fields) -> Event:
    return event(DIGEST, key="digest", task_general=0, task_title="", old_value=None, new_value=None,
                 actor_name=None, items=tuple(i.to_json() if isinstance(i, Event) else i for i in items), **fields)


def test_digest_lists_each_change_with_its_task_link_and_time():
    """A digest has a counted header and one line per change: time in the display zone, linked number, title."""
    items = [event(STATUS, task_general=7, task_title="Alpha"),
             event(DEADLINE, task_general=8, task_title="Beta", old_value=None, new_value="2018-03-09")]
    message = render_event(digest_of(items), lang="en", tz=MOSCOW, web_url=WEB)
    assert accepted(message) == (
        "🗂 While the bot was away: 2 changes\n"
        "• 07.03 00:30 #7 Alpha: Status: В работе → Выполненная — Иван Петров\n"
        "• 07.03 00:30 #8 Beta: Deadline: not set → 09.03.2018 — Иван Петров"
    )
    links = [e.url for e in parse_telegram_entities(message).entities if e.type == "text_link"]
    assert links == [f"{WEB}/task/7", f"{WEB}/task/8"]
    assert accepted(render_event(digest_of(items), lang="ru", tz=MOSCOW, web_url=WEB)).startswith(
        "🗂 Пока бот не работал: 2 изменения\n")


def test_a_huge_digest_is_cut_at_a_line_with_the_rest_counted():
    """A digest of 2,000 changes fits in 4096 units, ends on a whole line, and says how many are not shown."""
    items = [event(STATUS, task_general=i, task_title="😀 title " * 20) for i in range(2000)]
    plain = accepted(render_event(digest_of(items), lang="ru", tz=MOSCOW, web_url=WEB))
    lines = plain.split("\n")
    shown = len(lines) - 2
    assert lines[0] == "🗂 Пока бот не работал: 2000 изменений"
    assert lines[-1] == f"и ещё {2000 - shown}" and all(line.startswith("• ") for line in lines[1:-1])


def test_an_unreadable_digest_item_is_counted_not_fatal():
    """A digest item that is not an event is skipped, counted in the header and the "more" line."""
    plain = accepted(render_event(digest_of([event(), {"kind": "status"}]), lang="en", tz=MOSCOW, web_url=WEB))
    assert plain.startswith("🗂 While the bot was away: 2 changes\n• ") and plain.endswith("\nand 1 more")


def test_coalesced_changes_show_the_task_once_and_every_change():
    """Several changes of one task: the header once (latest title), each change in order, who made each."""
    first = event(STATUS, old_value="Новая", new_value="В работе", actor_name="Анна")
    second = event(STATUS, task_title="Выгрузка v2", old_value="В работе", new_value="Готово", actor_name="Борис")
    assert accepted(render_events([first, second], lang="ru", tz=MOSCOW, web_url=WEB)) == (
        "🔄 #525330 Выгрузка v2\n"
        "Статус: Новая → В работе — Анна\n"
        "Статус: В работе → Готово — Борис"
    )
    same_actor = [first, event(DEADLINE, old_value=None, new_value="2018-03-07", actor_name="Анна")]
    assert accepted(render_events(same_actor, lang="ru", tz=MOSCOW, web_url=WEB)) == (
        "🔔 #525330 Выгрузка из toggl\n"
        "Статус: Новая → В работе\n"
        "Срок: не задан → 07.03.2018\n"
        "Изменил(а): Анна"
    )
    assert render_events([first], lang="ru", tz=MOSCOW, web_url=WEB) == render_event(
        first, lang="ru", tz=MOSCOW, web_url=WEB)


def test_a_long_run_of_changes_shows_the_latest_and_counts_the_rest():
    """Forty coalesced changes show the latest GROUP_LINES and say how many earlier ones are left out."""
    changes = [event(STATUS, old_value=str(i), new_value=str(i + 1)) for i in range(40)]
    plain = accepted(render_events(changes, lang="en", tz=MOSCOW, web_url=WEB))
    assert f"…and {40 - render.GROUP_LINES} earlier changes" in plain and plain.count("Status:") == render.GROUP_LINES
    assert "Status: 39 → 40" in plain


ALL_KINDS = [STATUS, DEADLINE, OVERDUE, REMINDER, "custom"]


@st.composite
def hostile_events(draw, kinds=ALL_KINDS):
    kind = draw(st.sampled_from(kinds))
    values = st.none() | TEXT
    return event(kind, task_title=draw(TEXT), old_value=draw(values), new_value=draw(values),
                 actor_name=draw(values), project_title=draw(values),
                 importance=draw(st.sampled_from(["HIGH", "AVERAGE", "LOW"])),
                 task_general=draw(st.integers(min_value=0, max_value=10**12)))


@FAST
@given(lang=st.sampled_from(["ru", "en"]), group=st.lists(hostile_events(), min_size=1, max_size=20),
       digest=st.lists(hostile_events(), max_size=60), as_digest=st.booleans())
def test_any_message_of_any_kind_is_accepted_and_fits(lang, group, digest, as_digest):
    """Property: for any titles, values, names and any kind — one change, coalesced changes, reminders or a
    digest — the strict fake accepts the message and it is at most 4096 UTF-16 units."""
    if as_digest:
        message = render_event(digest_of(digest), lang=lang, tz=MOSCOW, web_url=WEB)
    else:
        message = render_events(group, lang=lang, tz=MOSCOW, web_url=WEB)
    plain = accepted(message)
    assert utf16_len(plain) <= MESSAGE_LIMIT


@pytest.mark.parametrize(("lang", "line"), [("ru", "Новый исполнитель: Анна <Smith>"), ("en", "New assignee: Анна <Smith>")])
def test_assigned_names_the_new_assignee_and_who_did_it(lang, line):
    """`assigned`: the task, the new assignee (escaped) and who assigned them, in ru and en."""
    from bot.events import ASSIGNED

    text = accepted(render_event(event(ASSIGNED, old_value=None, new_value="Анна <Smith>", subject_id=2),
                                 lang=lang, tz=MOSCOW, web_url=WEB))
    assert text.startswith("👤 #525330") and line in text and "Иван Петров" in text
