"""Who may use the bot and which tasks each person may see: the one place that decides visibility."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.config import UserLink
from bot.planfix.models import Task


@dataclass(frozen=True)
class Viewer:
    """A Telegram user allowed to use commands: a bot admin, a linked Planfix user, or both."""

    telegram_id: int
    planfix_id: int | None
    is_admin: bool


def viewer_for(telegram_id: int | None, *, users: Sequence[UserLink], admin_ids: Sequence[int]) -> Viewer | None:
    """The viewer for a Telegram user id, or None for a stranger."""
    if telegram_id is None:
        return None
    link = next((u for u in users if u.telegram_id == telegram_id), None)
    is_admin = telegram_id in admin_ids
    if link is None and not is_admin:
        return None
    return Viewer(telegram_id, link.planfix_id if link else None, is_admin)


def may_see(viewer: Viewer, task: Task) -> bool:
    """Admins see every task the API token sees; a linked user only tasks their Planfix user takes part in."""
    if viewer.is_admin:
        return True
    return viewer.planfix_id is not None and viewer.planfix_id in task.participant_ids()
