"""Who else hears about an event because a chat asked (subscriptions, follows), and how long a chat's mute or a
task's snooze holds it back. Plugged into routing (bot/notify/routing.py `Audience`) by bot/app.py.

A subscription or follow delivers an event only if the person who made it may still see the task (`may_see`)
and, in a group, still qualifies there (bot/chat/makers.py); in a private chat the chat's owner must also see it,
and is never told about their own change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.chat.access import may_see, viewer_for
from bot.config import Settings
from bot.events import DAILY, DIGEST, OVERDUE, REMINDER, Event
from state.prefs import Prefs


@dataclass
class ChatAudience:
    prefs: Prefs
    settings: Settings

    def _viewer(self, telegram_id: int):
        return viewer_for(telegram_id, users=self.settings.users, admin_ids=self.settings.telegram.admin_ids)

    def may_hear(self, chat_id: int, created_by: int, event: Event,
                 suspended: frozenset[tuple[int, int]] | set[tuple[int, int]] = frozenset()) -> bool:
        if (chat_id, created_by) in suspended:
            return False  # its maker left the group or lost its admin rights (bot/chat/makers.py)
        creator = self._viewer(created_by)
        if creator is None or not may_see(creator, event):
            return False
        if chat_id > 0:  # a private chat: the chat id is its owner's Telegram user id
            owner = creator if created_by == chat_id else self._viewer(chat_id)
            if owner is None or not may_see(owner, event):
                return False
            if owner.planfix_id is not None and owner.planfix_id == event.actor_id:
                return False  # nobody is told about their own change
        return True

    def recipients(self, event: Event) -> list[int]:
        if event.kind in (DIGEST, DAILY):
            return []
        chats: list[int] = []
        suspended = self.prefs.suspended_makers()
        for sub in self.prefs.subscriptions_for(event.project_id):
            if event.kind in sub.kinds and self.may_hear(sub.chat_id, sub.created_by, event, suspended):
                chats.append(sub.chat_id)
        for follow in self.prefs.followers(event.task_id):
            if self.may_hear(follow.chat_id, follow.created_by, event, suspended):
                chats.append(follow.chat_id)
        return list(dict.fromkeys(chats))

    def defer_until(self, chat_id: int, event: Event, now: datetime) -> datetime | None:
        until = self.prefs.muted_until(chat_id, now)
        if event.kind in (REMINDER, OVERDUE):
            snoozed = self.prefs.snoozed_until(chat_id, event.task_id, now)
            if snoozed is not None and (until is None or snoozed > until):
                until = snoozed
        return until

    def language(self, chat_id: int) -> str:
        chosen = self.prefs.language(chat_id)
        return chosen if chosen in ("ru", "en") else self.settings.display.language
