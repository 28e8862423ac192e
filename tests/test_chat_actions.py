"""Writing to Planfix from Telegram, the pure parts: authorship, comment text, our own writes found again, which task
a message is about, the buttons under notices, and the feed's view of our own actions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.chat.access import Viewer
from bot.chat.actions import Author, choose_author, comment_html, is_our_write, planfix_reason
from bot.chat.replies import attribute_own, notice_buttons, skip_own_actor
from bot.config import parse_settings
from bot.events import Event
from bot.planfix.errors import error_for_code
from bot.planfix.models import Action, PersonRef, StatusChange
from state.actions import Actions, Write
from state.records import DeliveryRow, EventRow, PollCommit
from state.store import Store

NOW = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)


def settings(enabled: bool = True):
    return parse_settings({
        "planfix": {"account": "a", "api_key": "k", "token": "t"},
        "telegram": {"token": "123:abc", "admin_ids": [900]},
        "users": [{"telegram_id": 501, "planfix_id": 10}],
        "actions": {"enabled": enabled},
    }, environ={})


def write(**fields) -> Write:
    base = dict(key="u:1", chat_id=501, user_id=501, planfix_id=10, actor_name="Anna", task_id=7, general=1001,
                description="hi &lt;there&gt;<br>again", owner=10, new_status=None, created_at=NOW)
    return Write(**{**base, **fields})


def test_the_author_is_the_person_where_allowed_else_the_api_user_with_the_name():
    linked, admin = Viewer(501, 10, False), Viewer(900, None, True)
    assert choose_author(linked, post_as_user=True, owner_refused=False) == Author(10, name_in_text=False)
    assert choose_author(linked, post_as_user=True, owner_refused=True) == Author(None, name_in_text=True)
    assert choose_author(linked, post_as_user=False, owner_refused=False) == Author(None, name_in_text=True)
    assert choose_author(admin, post_as_user=True, owner_refused=False) == Author(None, name_in_text=True)


def test_comment_text_is_escaped_html_with_line_breaks():
    assert comment_html(" a <b> & c\nd ", by=None) == "a &lt;b&gt; &amp; c<br>d"
    assert comment_html("ok", by="Анна <x>") == "<b>Анна &lt;x&gt;</b>: ok"


def test_planfix_reason_prefers_planfix_words():
    assert planfix_reason(error_for_code("0016", "action.add", message="Нельзя")) == "Нельзя"
    assert planfix_reason(error_for_code("0105", "action.add")) == "no permission to edit the object"


def test_our_write_is_found_by_text_status_and_time():
    mine = write()
    action = Action(id=55, type="ACTION", task_id=7, at=NOW, description="hi &lt;there&gt;<br />again",
                    owner=PersonRef(10, "Anna"))
    assert is_our_write(action, mine, set())
    assert not is_our_write(action, mine, {55})  # already claimed by another write
    assert not is_our_write(action, write(description="other"), set())
    assert not is_our_write(Action(id=56, type="ACTION", task_id=7, at=NOW - timedelta(hours=1),
                                   description="hi &lt;there&gt;<br>again"), mine, set())
    status = write(new_status=5, description="→ Done (Telegram)")
    changed = Action(id=57, type="ACTION", task_id=7, at=NOW, description="→ Done (Telegram)",
                     status_change=StatusChange(2, 5))
    assert is_our_write(changed, status, set()) and not is_our_write(changed, write(new_status=3,
                                                                                    description="→ Done (Telegram)"), set())


def event(kind: str = "status", action_id: int | None = None, general: int = 1001) -> Event:
    return Event(kind=kind, key=f"{kind}:{general}", task_id=7, task_general=general, task_title="T", occurred_at=NOW,
                 action_id=action_id)


def test_a_message_knows_its_task_from_the_outbox_or_the_card_record():
    store = Store.open(":memory:")
    actions = Actions(store.db)
    one, digest = event(), event("digest", general=0)
    store.commit_poll(PollCommit(now=NOW, events=[EventRow(e.key, e.kind, e.task_id, e.to_json()) for e in (one,)],
                                 deliveries=[DeliveryRow(one.key, 501)]))
    [row] = store.outbox.outbox_rows(501)
    store.outbox.mark_sent([row["id"]], 42, NOW)
    found = actions.task_of_message(501, 42)
    assert (found.task_id, found.general) == (7, 1001)
    assert actions.task_of_message(501, 43) is None and actions.task_of_message(502, 42) is None
    actions.remember_message(501, 43, 0, 1002, NOW)
    assert actions.task_of_message(501, 43).general == 1002
    assert digest.task_general == 0


def test_buttons_under_notices():
    buttons = notice_buttons(settings())
    assert [t for t, _ in buttons([event()], 501, "en")] == ["Status ▸"]
    assert buttons([event()], -100, "en") == []  # a group: no status button
    assert [t for t, _ in buttons([event("overdue")], -100, "en")] == ["💤 Snooze 1 h"]
    assert [d for _, d in buttons([event("reminder")], 501, "en")] == ["a1:m:1001:0", "t1:z:1001"]
    assert [t for t, _ in notice_buttons(settings(False))([event()], 501, "en")] == []


def test_our_own_actions_are_attributed_and_not_told_to_their_maker():
    store = Store.open(":memory:")
    actions = Actions(store.db)
    actions.begin(write(), NOW)
    actions.finish("u:1", 55, NOW)
    actions.begin(write(key="u:2", user_id=900, planfix_id=None, actor_name="Root", owner=None), NOW)
    actions.finish("u:2", 56, NOW)
    feed = [Action(id=55, type="ACTION", task_id=7, at=NOW, owner=PersonRef(1, "Planfix Bot")),
            Action(id=56, type="ACTION", task_id=7, at=NOW, owner=PersonRef(1, "Planfix Bot")),
            Action(id=57, type="ACTION", task_id=7, at=NOW, owner=PersonRef(11, "Boris"))]
    owners = [a.owner for a in attribute_own(actions)(feed)]
    assert owners == [PersonRef(10, "Anna"), PersonRef(1, "Root"), PersonRef(11, "Boris")]
    rows = [DeliveryRow("k", 501), DeliveryRow("k", 900), DeliveryRow("k", -100)]
    assert [r.chat_id for r in skip_own_actor(actions, rows, event(action_id=55))] == [900, -100]
    assert [r.chat_id for r in skip_own_actor(actions, rows, event(action_id=56))] == [501, -100]
    assert skip_own_actor(actions, rows, event(action_id=57)) == rows
    assert actions.begin(write(description="changed"), NOW).state == "done"  # a redelivery finds the old record


def test_a_write_left_unsettled_by_a_crash_is_still_known_to_the_feed_by_its_text():
    """The process died between Planfix's answer and recording it: the feed sees the comment first. It is matched
    by its text (as recovery does), attributed to its person without the name put in front, and not told back to
    them (an admin without a Planfix user included); the intent stays for recovery to settle and confirm."""
    store = Store.open(":memory:")
    actions = Actions(store.db)
    actions.begin(write(key="u:3", user_id=900, planfix_id=None, actor_name="Root", owner=None,
                        description="<b>Root</b>: checked"), NOW)
    unsettled: dict[int, Write] = {}
    feed = [Action(id=60, type="ACTION", task_id=7, at=NOW, owner=PersonRef(1, "Planfix Bot"),
                   description="<b>Root</b>: checked"),
            Action(id=61, type="ACTION", task_id=7, at=NOW, owner=PersonRef(11, "Boris"), description="other")]
    seen = attribute_own(actions, clock=lambda: NOW, unsettled=unsettled)(feed)
    assert [(a.owner, a.description) for a in seen] == [(PersonRef(1, "Root"), "checked"),
                                                        (PersonRef(11, "Boris"), "other")]
    rows = [DeliveryRow("k", 501), DeliveryRow("k", 900)]
    assert [r.chat_id for r in skip_own_actor(actions, rows, event(action_id=60), unsettled)] == [501]
    assert actions.get("u:3").state == "intent"
