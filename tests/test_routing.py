"""Routing: which chats get an event, quiet hours deferral, never the actor."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from bot.config import Route, UserLink
from bot.events import Event
from bot.notify.routing import deliveries, quiet_until, recipients

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # 12:00 in Moscow


def event(kind="status", project_id=7, actor_id=11, participants=(10, 11, 12)) -> Event:
    return Event(kind=kind, key=f"{kind}:1:1", task_id=1, task_general=100, task_title="T", occurred_at=NOW,
                 project_id=project_id, actor_id=actor_id, participants=participants)


def test_route_filters_by_event_kind_and_project():
    """A route gets only its event kinds and, when it lists projects, only those projects."""
    routes = [Route(chat_id=-1, events=["status"]), Route(chat_id=-2, projects=[8]), Route(chat_id=-3)]
    assert [r.chat_id for r in recipients(event(), routes, [])] == [-1, -3]
    assert [r.chat_id for r in recipients(event(kind="deadline"), routes, [])] == [-3]


def test_participants_get_personal_notices_but_not_the_actor():
    """Linked users taking part get a notice; the one who made the change does not; outsiders do not."""
    users = [UserLink(telegram_id=100, planfix_id=10), UserLink(telegram_id=101, planfix_id=11),
             UserLink(telegram_id=102, planfix_id=99)]
    assert [r.chat_id for r in recipients(event(), [], users)] == [100]


def test_a_chat_is_listed_once():
    """A chat that is both a route and a participant's private chat gets the event once."""
    routes = [Route(chat_id=100)]
    users = [UserLink(telegram_id=100, planfix_id=10)]
    assert len(deliveries(event(), NOW, routes=routes, users=users, zone=MSK)) == 1


def test_migrated_chat_ids_are_rewritten():
    """A group that became a supergroup is addressed by its new id."""
    rows = deliveries(event(), NOW, routes=[Route(chat_id=-5)], users=[], zone=MSK, migrated={-5: -1005})
    assert [r.chat_id for r in rows] == [-1005]


def test_quiet_hours_across_midnight():
    """A 22:00-08:00 window defers late-evening and early-morning messages to 08:00, and nothing else."""
    late = datetime(2026, 11, 23, 20, 30, tzinfo=UTC)  # 23:30 MSK
    early = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 05:00 MSK
    noon = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # 12:00 MSK
    expected = datetime(2026, 11, 24, 8, 0, tzinfo=MSK)
    assert quiet_until(late, "22:00-08:00", MSK) == expected
    assert quiet_until(early, "22:00-08:00", MSK) == expected
    assert quiet_until(noon, "22:00-08:00", MSK) is None


def test_quiet_hours_defer_never_drop():
    """Inside quiet hours the row is still queued, with a not-before time at the end of the window."""
    rows = deliveries(event(), datetime(2026, 11, 23, 20, 30, tzinfo=UTC),
                      routes=[Route(chat_id=-1, quiet_hours="22:00-08:00")], users=[], zone=MSK)
    assert len(rows) == 1 and rows[0].not_before == datetime(2026, 11, 24, 8, 0, tzinfo=MSK)
