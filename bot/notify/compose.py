"""Wiring for the notify layer: the per-chat renderer and the configured Sender (used by bot/app.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from zoneinfo import ZoneInfo

from aiogram import Bot

from bot.config import Settings
from bot.events import DIGEST, Event
from bot.notify import render
from bot.notify.markup import escape, link
from bot.notify.routing import Audience, route_of_chat, send_time_deferral
from bot.notify.sender import Rendered, Sender
from state.store import Store

Renderer = Callable[[Sequence[Event], int], Rendered]
Buttons = Callable[[Sequence[Event], int, str], Sequence[tuple[str, str]]]  # events, chat, language → buttons


def make_renderer(settings: Settings, zone: Callable[[], ZoneInfo], store: Store | None = None, *,
                  language: Callable[[int], str] | None = None, buttons: Buttons | None = None,
                  status_names: render.StatusNames | None = None) -> Renderer:
    """Events → the message for one chat: HTML in the chat's language (`language`, else display.language) and the
    display zone, a short fallback, the button's link, and the route's `silent` option (also for a group that has
    since migrated to a new id). Status names come from `status_names` in the chat's language, at send time."""
    default_lang = settings.display.language
    web_url = settings.planfix.task_web_url
    silent_routes = [r for r in settings.routes if r.silent]

    def render_for_chat(events: Sequence[Event], chat_id: int) -> Rendered:
        last = events[-1]
        if last.kind == DIGEST or not last.task_general:
            url = web_url  # a digest spans many tasks: the button opens Planfix, each line links its task
        else:
            url = render.task_url(web_url, last.task_general)
        short = f"<b>#{escape(last.task_general)}</b> {link(url, escape(url))}"
        migrated = store.chats.chat_migrations() if (store is not None and silent_routes) else {}
        silent = route_of_chat(chat_id, silent_routes, migrated) is not None
        lang = language(chat_id) if language is not None else default_lang
        text = render.render_events(list(events), lang=lang, tz=zone(), web_url=web_url,
                                    **({"names": status_names} if status_names is not None else {}))
        more = tuple(buttons(events, chat_id, lang)) if buttons is not None and url != web_url else ()
        return Rendered(text, short, url, silent=silent, buttons=more)

    return render_for_chat


def build_sender(settings: Settings, store: Store, bot: Bot, *, zone: Callable[[], ZoneInfo],
                 open_button_text: str | Callable[[int], str], language: Callable[[int], str] | None = None,
                 audience: Audience | None = None, buttons: Buttons | None = None,
                 status_names: render.StatusNames | None = None) -> Sender:
    """The Sender as configured by [delivery], [[routes]] and telegram.admin_ids; `language` and `audience`
    add per-chat languages and the mutes and snoozes chats asked for."""
    delivery = settings.delivery
    button = open_button_text if callable(open_button_text) else (lambda chat_id: open_button_text)
    return Sender(
        bot=bot,
        store=store,
        render=make_renderer(settings, zone, store, language=language, buttons=buttons, status_names=status_names),
        admin_ids=settings.telegram.admin_ids,
        open_button_text=button,
        coalesce_window=timedelta(seconds=delivery.coalesce_seconds),
        send_timeout=delivery.send_timeout_seconds,
        long_wait_alert=delivery.long_wait_alert_seconds,
        max_in_flight=delivery.max_in_flight,
        defer=send_time_deferral(settings.routes, zone, store.chats.chat_migrations, audience=audience),
    )
