"""The notify wiring: per-chat rendering (language, zone, button link, silent routes) and the configured Sender."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.config import parse_settings
from bot.events import DIGEST, STATUS, Digest, Event, StatusMove
from bot.fakes.telegram_html import parse_telegram_html
from bot.notify.compose import build_sender, make_renderer
from state.store import Store

MSK = ZoneInfo("Europe/Moscow")


def settings(**extra):
    raw = {"planfix": {"account": "acme", "api_key": "k", "token": "t", "web_url": "https://acme.planfix.com"},
           "telegram": {"token": "1:abc", "admin_ids": [900]}, "display": {"language": "ru"},
           "routes": [{"chat_id": -5, "silent": True}, {"chat_id": -7}]}
    raw.update(extra)
    return parse_settings(raw, environ={})


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "s.sqlite3")
    yield s
    s.close()


def status(general=42) -> Event:
    return Event(kind=STATUS, key="k", task_id=1, task_general=general, task_title="Отчёт",
                 payload=StatusMove(None, None, "A", "B"), occurred_at=datetime(2026, 11, 23, 9, 0, tzinfo=UTC))


def test_a_silent_route_is_silent_also_after_its_group_migrated(store):
    """silent = true on a route: its chat, and the supergroup it became, get disable_notification; others not."""
    render = make_renderer(settings(), lambda: MSK, store)
    assert render([status()], -5).silent is True and render([status()], -7).silent is False
    store.chats.migrate_chat(-5, -1005, datetime.now(UTC))
    assert render([status()], -1005).silent is True


def test_the_button_links_the_task_and_a_digest_links_planfix(store):
    """Every message carries a link for "Open in Planfix": the task, or Planfix itself for a digest."""
    render = make_renderer(settings(), lambda: MSK, store)
    assert render([status()], -7).url == "https://acme.planfix.com/task/42"
    digest = Event(kind=DIGEST, key="d", task_id=0, task_general=0, task_title="", occurred_at=status().occurred_at,
                   payload=Digest("burst", (status().to_json(),)))
    assert render([digest], -7).url == "https://acme.planfix.com"
    rendered = render([status()], -7)
    assert "Статус: A → B" in parse_telegram_html(rendered.html)
    assert parse_telegram_html(rendered.fallback_html) == "#42 https://acme.planfix.com/task/42"


def test_build_sender_applies_the_delivery_section(store):
    """[delivery] keys reach the Sender: window, timeout, alert threshold, concurrency; admins from telegram."""
    sender = build_sender(
        settings(delivery={"coalesce_seconds": 3, "send_timeout_seconds": 7, "long_wait_alert_seconds": 60,
                           "max_in_flight": 4}),
        store, bot=None, zone=lambda: MSK, open_button_text="Открыть",  # type: ignore[arg-type]
    )
    assert sender.coalesce_window == timedelta(seconds=3) and sender.send_timeout == 7
    assert sender.long_wait_alert == 60 and sender.max_in_flight == 4 and list(sender.admin_ids) == [900]
    assert sender.open_button_text(-7) == "Открыть"
