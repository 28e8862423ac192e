"""No secret reaches a person (issue 11, item 6): texts are redacted before they are cut, in Planfix errors, admin
notices, `last_error` in the state file and logs — one shared function, bot/redact.py."""

from __future__ import annotations

import sqlite3

import pytest

from bot import redact as redaction
from bot.fakes.planfix import FakePlanfix
from bot.fakes.telegram import FakeTelegram
from bot.planfix.errors import error_for_code
from bot.redact import redact
from tests.e2e import Daemon, daemon_config, wait_polls, wait_until, write_config

API_KEY = "pf-key-0123456789abcdef0123"
TOKEN = "pf-token-fedcba9876543210ab"


def prefixes(secret: str, shortest: int = 6) -> list[str]:
    return [secret[:n] for n in range(shortest, len(secret) + 1)]


def leaks(text: str, *secrets: str) -> list[str]:
    return [p for s in secrets for p in prefixes(s) if p in text]


@pytest.fixture(autouse=True)
def forget_known_secrets():
    before = redaction.known.values
    yield
    redaction.known.values = before


@pytest.mark.parametrize("offset", range(190, 201))
def test_a_secret_straddling_the_200_character_cut_never_shows(offset):
    """Planfix's free-text message is cut to 200 characters only after the secrets are redacted."""
    message = "x" * offset + TOKEN + " tail"
    exc = error_for_code("0015", "task.get", message=message, secrets=[TOKEN])
    assert not leaks(f"{exc} {exc!r}", TOKEN)


def test_the_process_wide_secrets_and_bot_token_shapes_are_redacted():
    """One function: explicit secrets, the config's secrets (set once at start) and any bot-token shape."""
    redaction.known.update([API_KEY, "abc"])  # too short to be a real secret: left alone
    text = f"{API_KEY} {TOKEN} 1234567:AAHsecretsecretsecretsecret_xyz abc"
    assert redact(text, [TOKEN]) == "*** *** *** abc"


async def test_no_secret_reaches_admins_or_the_state_file(tmp_path):
    """The real daemon: a Telegram error whose text carries the bot token across the notice's 300-character cut,
    and a Planfix 0001 whose message carries the API key and the token across the 200-character cut. The admin
    notices, the state file's last_error and the whole log hold not even a prefix of either."""
    async with FakePlanfix(api_key=API_KEY, token=TOKEN) as pf, FakeTelegram() as tg:
        pf.add_user(10, "Anna")
        task = pf.add_task(title="Leaky", owner=10)
        config = write_config(tmp_path / "c.toml", daemon_config(tmp_path, pf, tg, routes=[{"chat_id": -1}]))
        daemon = await Daemon(config, tmp_path / "d.log").start()
        try:
            await wait_polls(pf, 2)
            # The give-up notice is "…: telegram refused: <description>" cut at 300: the token straddles it.
            tg.inject_error(400, "Bad Request: odd " + "y" * 262 + f" {tg.token} {API_KEY} end", chat_id=-1)
            pf.change_status(task.id, 2, by=10)
            await tg.wait_for_messages(1, chat_id=900, timeout=60)
            pf.inject_error("0001", message="z" * 190 + f"{API_KEY} {TOKEN}", times=1000)
            await tg.wait_for_messages(2, chat_id=900, timeout=60)
            await wait_until(lambda: "planfix.config_error" in daemon.output(), 30, "the config error")
        finally:
            assert await daemon.stop() == 0
        notices = [m.text for m in tg.messages_to(900)]
    assert any("given up" in n for n in notices) and any("Planfix refuses the bot" in n for n in notices), notices
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        stored = [r[0] or "" for r in db.execute("SELECT last_error FROM outbox")]
    assert any("telegram refused" in s for s in stored), stored
    bot_secret = tg.token.split(":")[1]
    for text in (*notices, *stored, daemon.output()):
        assert not leaks(text, API_KEY, TOKEN, bot_secret), text
