"""One redaction for every text that leaves the process (logs, Telegram, the state file): secrets become ***."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Telegram bot tokens can appear inside URLs (…/bot123:ABC/sendMessage) in library errors and logs.
BOT_TOKEN = re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{20,}\b")
MASK = "***"


class KnownSecrets:
    """The process's secrets, set from the config at start and on reload (bot/logs.py `configure`)."""

    def __init__(self) -> None:
        self.values: tuple[str, ...] = ()

    def update(self, secrets: Iterable[str]) -> None:
        # Very short values would mask ordinary words; no real key or token is that short.
        self.values = tuple(s for s in secrets if s and len(s) >= 4)


known = KnownSecrets()


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with each of `secrets`, every known secret of the process and anything shaped like a bot token
    replaced by ***. Redact before cutting a text short: a cut through a secret would keep its prefix."""
    # Longest first, so that a secret containing another is replaced whole.
    for secret in sorted({s for s in (*secrets, *known.values) if s}, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return BOT_TOKEN.sub(MASK, text)
