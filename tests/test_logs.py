"""Logging: one pipeline for our and the libraries' logs, secrets scrubbed everywhere, journald priorities."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest
import structlog

from bot import logs

BOT_TOKEN = "7654321:AAHsecretsecretsecretsecret_xyz"
PLANFIX_TOKEN = "pf-token-0123456789abcdef"
API_KEY = "pf-key-fedcba9876543210"


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def capture(**kwargs) -> io.StringIO:
    stream = io.StringIO()
    logs.configure(level="debug", fmt="json", secrets=[BOT_TOKEN, PLANFIX_TOKEN, API_KEY], stream=stream, **kwargs)
    return stream


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_secrets_are_scrubbed_from_events_exceptions_and_library_logs():
    """A secret in an event field, an exception text, a traceback or a library's URL never reaches the output."""
    stream = capture()
    log = structlog.get_logger("bot.test")
    log.info("planfix.request", url=f"https://x/?key={API_KEY}", nested={"token": [PLANFIX_TOKEN]})
    try:
        raise RuntimeError(f"auth failed with {PLANFIX_TOKEN}")
    except RuntimeError:
        log.exception("poll.crashed")
    logging.getLogger("aiogram.dispatcher").error("POST https://api.telegram.org/bot%s/getUpdates failed", BOT_TOKEN)
    logging.getLogger("httpx").warning("HTTP Request: POST https://api.planfix.com/xml/ key=%s", API_KEY)
    out = stream.getvalue()
    for secret in (BOT_TOKEN, PLANFIX_TOKEN, API_KEY, BOT_TOKEN.split(":")[1]):
        assert secret not in out
    assert out.count("***") >= 5
    assert {entry["logger"] for entry in lines(stream)} >= {"bot.test", "aiogram.dispatcher", "httpx"}


def test_unknown_bot_token_shapes_are_scrubbed_too():
    """Anything shaped like a Telegram bot token is hidden even when it is not the configured one."""
    stream = capture()
    structlog.get_logger("t").warning("seen", text="other bot 1234567:ABCdefGHIjklMNOpqrSTUvwxYZ012345")
    assert "ABCdefGHIjkl" not in stream.getvalue()


def test_json_lines_carry_level_logger_and_timestamp():
    """Off a terminal each line is one JSON object with level, logger name and an ISO UTC timestamp."""
    stream = capture()
    structlog.get_logger("bot.x").warning("sender.retry", chat=5)
    [entry] = lines(stream)
    assert entry["level"] == "warning" and entry["logger"] == "bot.x" and entry["event"] == "sender.retry"
    assert entry["timestamp"].endswith("Z") and entry["chat"] == 5


def test_journald_priority_prefix(tmp_path, monkeypatch):
    """Writing to the journal stream, every line starts with its sd-daemon priority, so `journalctl -p` works."""
    path = tmp_path / "journal"
    with path.open("w+") as stream:
        info = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        logs.configure(level="debug", fmt="json", stream=stream)
        structlog.get_logger("j").warning("w")
        structlog.get_logger("j").error("e")
        structlog.get_logger("j").debug("d")
        stream.flush()
    prefixes = [line[:3] for line in path.read_text().splitlines()]
    assert prefixes == ["<4>", "<3>", "<7>"]


def test_no_prefix_when_not_the_journal(monkeypatch):
    """An ordinary stream gets plain lines even if JOURNAL_STREAM is set for some other file."""
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    stream = capture()
    structlog.get_logger("j").warning("w")
    assert stream.getvalue().startswith("{")
