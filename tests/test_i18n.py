"""The one catalogue: every text in ru and en with the same placeholders, real plural rules, words not dashes."""

from __future__ import annotations

import gettext
import io
import string
import struct
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.chat.views import TaskView, render_card
from bot.fakes.telegram_html import parse_telegram_html
from bot.i18n import CATALOGUE, LANGUAGES, PLURAL_FORMS, language, plural, texts
from bot.notify.markup import importance_line, keyboard, open_button, task_header, utf16_len, visible_len
from bot.notify.render import relative_deadline

MOSCOW = ZoneInfo("Europe/Moscow")
WEB = "https://acme.planfix.ru"
NOW = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)


def placeholders(value: str | tuple[str, ...]) -> set[str]:
    forms = value if isinstance(value, tuple) else (value,)
    return {name for form in forms for _, name, _, _ in string.Formatter().parse(form) if name is not None}


def test_every_key_exists_in_both_languages_with_the_same_placeholders():
    assert set(CATALOGUE) == set(LANGUAGES) == set(PLURAL_FORMS)
    ru, en = CATALOGUE["ru"], CATALOGUE["en"]
    assert set(ru) == set(en), set(ru) ^ set(en)
    for key in ru:
        assert type(ru[key]) is type(en[key]), key  # a plural entry is one in both languages
        assert placeholders(ru[key]) == placeholders(en[key]), key
        assert ru[key] and en[key], key


def test_plural_entries_have_one_form_per_plural_category():
    for lang, entries in CATALOGUE.items():
        count, _ = PLURAL_FORMS[lang]
        for key, value in entries.items():
            if isinstance(value, tuple):
                assert len(value) == count and all(value), (lang, key)


@pytest.mark.parametrize(("n", "hours", "changes"), [
    (1, "час", "изменение"), (2, "часа", "изменения"), (5, "часов", "изменений"), (11, "часов", "изменений"),
    (21, "час", "изменение"), (22, "часа", "изменения"), (25, "часов", "изменений"), (111, "часов", "изменений"),
    (0, "часов", "изменений"), (12, "часов", "изменений"), (14, "часов", "изменений"), (104, "часа", "изменения"),
])
def test_russian_plurals(n, hours, changes):
    assert plural("ru", "unit_h", n) == hours
    assert plural("ru", "changes", n) == changes


@pytest.mark.parametrize(("n", "form"), [(1, "day"), (0, "days"), (2, "days"), (11, "days"), (21, "days"),
                                         (111, "days")])
def test_english_plurals(n, form):
    assert plural("en", "unit_d", n) == form


def _mo(plural_forms: str, forms: tuple[str, ...]) -> bytes:
    """A minimal compiled catalogue: its header and one plural entry, as msgfmt would write them."""
    entries = sorted({"": f"Content-Type: text/plain; charset=UTF-8\nPlural-Forms: {plural_forms};\n",
                      "x\0y": "\0".join(forms)}.items())
    ids = [k.encode() for k, _ in entries]
    strs = [v.encode() for _, v in entries]
    start = 7 * 4 + 16 * len(entries)
    table_ids, table_strs, data = [], [], b""
    for blob, table in [(b, table_ids) for b in ids] + [(b, table_strs) for b in strs]:
        table.append((len(blob), start + len(data)))
        data += blob + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, len(entries), 28, 28 + 8 * len(entries), 0, 0)
    return header + b"".join(struct.pack("<2I", *p) for p in table_ids + table_strs) + data


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_plural_rules_are_what_gnu_gettext_computes_from_them(lang):
    """The expressions are gettext's own: a .mo carrying them picks the same form as the catalogue for any n."""
    count, expression = PLURAL_FORMS[lang]
    forms = tuple(f"form{i}" for i in range(count))
    translations = gettext.GNUTranslations(io.BytesIO(_mo(f"nplurals={count}; plural={expression}", forms)))
    for n in range(0, 250):
        assert translations.ngettext("x", "y", n) == f"form{CATALOGUE[lang]['changes'].index(plural(lang, 'changes', n))}"


@pytest.mark.parametrize(("hours", "ru", "en"), [(1, "через 1 час", "in 1 hour"), (22, "через 22 часа", "in 22 hours"),
                                                 (25, "через 25 часов", "in 25 hours")])
def test_relative_deadlines_use_the_plural_rules(hours, ru, en):
    due = (NOW + timedelta(hours=hours, minutes=1)).timestamp()
    assert relative_deadline(due, NOW, "ru") == ru
    assert relative_deadline(due, NOW, "en") == en


def test_an_unknown_language_falls_back_to_english():
    assert language("de") == language(None) == "en"
    assert texts("de")["open"] == "Open in Planfix" and plural("xx", "unit_m", 2) == "minutes"


def test_a_removed_deadline_on_the_card_says_so_in_words():
    view = TaskView(task_id=1, general=77, title="Report", status_name="New", is_active=True)
    removed = {"id": 1, "type": "TASKCHANGED", "at": NOW.isoformat(), "author": "Anna", "description": "",
               "deadline_changed": True, "deadline_old": "2026-03-07", "deadline_new": None}
    for lang, word in (("ru", "срок: 07.03.2026 → снят"), ("en", "deadline: 07.03.2026 → removed")):
        card = render_card(view, lang=lang, tz=MOSCOW, now=NOW, web_url=WEB, actions=[removed])
        assert word in parse_telegram_html(card), card


def test_notifications_and_cards_share_the_header_importance_and_open_button():
    header = task_header("📋", 5, "a <b> & " + "x" * 400, WEB, "en")
    assert header.startswith('📋 <b>#5</b> <a href="https://acme.planfix.ru/task/5">a &lt;b&gt; &amp; ')
    assert visible_len(header) == utf16_len("📋 #5 ") + 300  # the title cut to TITLE_LIMIT units
    assert task_header("📋", 5, "   ", WEB, "ru").endswith(">(без названия)</a>")
    assert importance_line("HIGH", "ru") == "❗ Важность: срочная"
    assert importance_line("AVERAGE", "en") == "Importance: normal"
    markup = keyboard([open_button(WEB, 5, "ru")], [])
    assert markup is not None and len(markup.inline_keyboard) == 1
    assert (markup.inline_keyboard[0][0].text, markup.inline_keyboard[0][0].url) == ("Открыть в ПланФиксе",
                                                                                      f"{WEB}/task/5")
    assert keyboard([], []) is None
