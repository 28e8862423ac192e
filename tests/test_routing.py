"""Routing: which chats get an event, quiet hours deferral, never the actor."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.config import ConfigError, Route, UserLink, parse_settings
from bot.events import Assigned, Event
from bot.notify.routing import deliveries, quiet_until, recipients, route_of_chat, send_time_deferral

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


# ── issue 5: per-route zone, urgent bypass, send-time deferral, config keys ──────────────────────────────────

TOKYO = ZoneInfo("Asia/Tokyo")


def test_quiet_hours_are_read_in_the_routes_own_time_zone():
    """A route with timezone = "Asia/Tokyo" is quiet 22:00-08:00 Tokyo time, whatever the display zone says."""
    route = Route(chat_id=-1, quiet_hours="22:00-08:00", timezone="Asia/Tokyo")
    at_18_tokyo = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    at_23_tokyo = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)  # 17:00 in Moscow: not quiet there
    assert deliveries(event(), at_18_tokyo, routes=[route], users=[], zone=MSK)[0].not_before is None
    [row] = deliveries(event(), at_23_tokyo, routes=[route], users=[], zone=MSK)
    assert row.not_before == datetime(2026, 11, 24, 8, 0, tzinfo=TOKYO)


def test_a_same_day_window_and_its_edges():
    """"13:00-14:00" covers 13:00 up to (not including) 14:00."""
    assert quiet_until(datetime(2026, 11, 23, 10, 0, tzinfo=UTC), "13:00-14:00", MSK) == datetime(
        2026, 11, 23, 14, 0, tzinfo=MSK)
    assert quiet_until(datetime(2026, 11, 23, 11, 0, tzinfo=UTC), "13:00-14:00", MSK) is None
    assert quiet_until(datetime(2026, 11, 23, 9, 59, tzinfo=UTC), "13:00-14:00", MSK) is None


def test_urgent_tasks_bypass_quiet_hours_only_where_the_route_allows():
    """importance HIGH goes out at once on a route with urgent_bypasses_quiet_hours; elsewhere it waits too."""
    late = datetime(2026, 11, 23, 20, 30, tzinfo=UTC)  # 23:30 MSK
    bypass = Route(chat_id=-1, quiet_hours="22:00-08:00", urgent_bypasses_quiet_hours=True)
    strict = Route(chat_id=-2, quiet_hours="22:00-08:00")
    urgent = Event(kind="status", key="u", task_id=1, task_general=1, task_title="T", occurred_at=late,
                   importance="HIGH")
    rows = {r.chat_id: r.not_before for r in deliveries(urgent, late, routes=[bypass, strict], users=[], zone=MSK)}
    assert rows == {-1: None, -2: datetime(2026, 11, 24, 8, 0, tzinfo=MSK)}
    normal = deliveries(event(), late, routes=[bypass], users=[], zone=MSK)
    assert normal[0].not_before == datetime(2026, 11, 24, 8, 0, tzinfo=MSK)


def test_personal_notices_have_no_quiet_hours():
    """A linked user's private notice is not deferred by some route's quiet hours."""
    late = datetime(2026, 11, 23, 20, 30, tzinfo=UTC)
    rows = deliveries(event(), late, routes=[Route(chat_id=-1, quiet_hours="22:00-08:00")],
                      users=[UserLink(telegram_id=100, planfix_id=10)], zone=MSK)
    assert {r.chat_id: r.not_before for r in rows}[100] is None


def test_send_time_deferral_follows_migrated_groups():
    """The sender's quiet-hours check finds the route of a group by its new id after a migration."""
    route = Route(chat_id=-5, quiet_hours="22:00-08:00")
    defer = send_time_deferral([route], lambda: MSK, lambda: {-5: -1005})
    late = datetime(2026, 11, 23, 20, 30, tzinfo=UTC)
    assert defer(-1005, event(), late) == datetime(2026, 11, 24, 8, 0, tzinfo=MSK)
    assert defer(-5, event(), late) == datetime(2026, 11, 24, 8, 0, tzinfo=MSK)
    assert defer(100, event(), late) is None
    assert defer(-1005, event(), NOW) is None
    assert route_of_chat(-1005, [route], {-5: -1005}) is route


@pytest.mark.parametrize(("raw", "key"), [
    ({"routes": [{"chat_id": 1, "timezone": "Mars/Olympus"}]}, "routes[1].timezone"),
    ({"routes": [{"chat_id": 1, "silent": "loud"}]}, "routes[1].silent"),
    ({"routes": [{"chat_id": 1, "urgent_bypasses_quiet_hours": 3}]}, "routes[1].urgent_bypasses_quiet_hours"),
    ({"delivery": {"coalesce_seconds": -1}}, "delivery.coalesce_seconds"),
    ({"delivery": {"send_timeout_seconds": 0}}, "delivery.send_timeout_seconds"),
    ({"delivery": {"long_wait_alert_seconds": 0}}, "delivery.long_wait_alert_seconds"),
    ({"delivery": {"max_in_flight": 0}}, "delivery.max_in_flight"),
    ({"delivery": {"coalesce": 5}}, "delivery.coalesce"),
])
def test_delivery_config_errors_name_the_key(raw, key):
    """Every key issue 5 adds is validated, and a bad value is reported under its own name."""
    base = {"planfix": {"account": "a", "api_key": "k", "token": "t"}, "telegram": {"token": "1:abc"}}
    with pytest.raises(ConfigError) as info:
        parse_settings(base | raw, environ={})
    assert info.value.key == key


def test_delivery_defaults():
    """Defaults: 10 s coalescing window, 30 s send timeout, admins told of 429 waits of 5 min or more."""
    settings = parse_settings({"planfix": {"account": "a", "api_key": "k", "token": "t"},
                               "telegram": {"token": "1:abc"}, "routes": [{"chat_id": 1}]}, environ={})
    assert settings.delivery.coalesce_seconds == 10 and settings.delivery.send_timeout_seconds == 30
    assert settings.delivery.long_wait_alert_seconds == 300 and settings.delivery.max_in_flight == 16
    route = settings.routes[0]
    assert (route.timezone, route.urgent_bypasses_quiet_hours, route.silent) == (None, False, False)


def test_assigned_goes_to_the_new_assignee_and_to_routes_that_ask_for_it_only():
    """`assigned` is personal: among linked users only the new assignee hears it (not other participants, not
    the one who assigned); routes get it only if their `events` list "assigned"."""
    from bot.events import ASSIGNED

    users = [UserLink(telegram_id=100, planfix_id=10), UserLink(telegram_id=101, planfix_id=11),
             UserLink(telegram_id=102, planfix_id=12)]
    routes = [Route(chat_id=-1), Route(chat_id=-2, events=["status", "assigned"])]
    ev = Event(kind=ASSIGNED, key="assigned:1:1:11", task_id=1, task_general=5, task_title="T",
               occurred_at=datetime(2026, 11, 23, tzinfo=UTC), payload=Assigned(11, "Bob"), actor_id=12,
               participants=(10, 11, 12))
    assert sorted(r.chat_id for r in recipients(ev, routes, users)) == [-2, 101]
    self_assigned = Event(**{**ev.__dict__, "actor_id": 11})
    assert [r.chat_id for r in recipients(self_assigned, routes, users)] == [-2]
