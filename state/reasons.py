"""Bounded labels for why a notification was given up (metrics labels and the state file's counters)."""

from __future__ import annotations


def failure_reason(error: str) -> str:
    """A small, bounded label for a Telegram failure text (labels must not explode in number)."""
    text = error.lower()
    for needle, label in (
        ("retry after", "rate_limited"), ("429", "rate_limited"), ("blocked", "blocked"), ("kicked", "kicked"),
        ("chat not found", "chat_not_found"), ("rights", "no_rights"), ("deactivated", "deactivated"),
        ("chat inactive", "chat_inactive"), ("parse entities", "bad_markup"), ("too long", "too_long"), ("migrat", "migrated"), ("upgraded", "migrated"),
        ("timeout", "timeout"), ("network", "network"), ("server", "server_error"), ("unauthorized", "unauthorized"),
    ):
        if needle in text:
            return label
    return "other"
