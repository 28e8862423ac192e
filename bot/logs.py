"""structlog setup: JSON off a terminal, console on one, journald priorities, stdlib loggers, secrets scrubbed."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import Any

import structlog

from bot import redact as redaction


class SecretScrubber:
    """A structlog processor (and stdlib filter) that replaces every known secret with `***` (bot/redact.py)."""

    def __init__(self, secrets: Iterable[str] = ()):
        if secrets:
            self.update(secrets)

    @property
    def secrets(self) -> tuple[str, ...]:
        return redaction.known.values

    def update(self, secrets: Iterable[str]) -> None:
        redaction.known.update(secrets)

    def scrub(self, text: str) -> str:
        return redaction.redact(text)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._clean(v) for v in value)
        if isinstance(value, BaseException):
            return self.scrub(repr(value))
        return value

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        return {k: self._clean(v) for k, v in event_dict.items()}


scrubber = SecretScrubber()


# sd-daemon(3) priority prefixes: journald strips "<N>" and files the line under that priority.
_JOURNAL_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def writes_to_journal(stream: Any) -> bool:
    """True when `stream` is the journal stream systemd handed us ($JOURNAL_STREAM = "device:inode")."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return bool(expected) and expected == f"{info.st_dev}:{info.st_ino}"


class _ScrubRenderedLine(logging.Formatter):
    """Last line of defence: scrub the final rendered text (exception tracebacks included)."""

    def __init__(self, inner: logging.Formatter, *, journal: bool = False):
        super().__init__()
        self.inner = inner
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = scrubber.scrub(self.inner.format(record))
        if self.journal:
            priority = _JOURNAL_PRIORITY.get(record.levelno, 6)
            # One prefix per line: a multi-line traceback must not fall back to the default priority.
            text = "\n".join(f"<{priority}>{line}" for line in text.split("\n"))
        return text


def configure(*, level: str = "info", fmt: str = "auto", secrets: Iterable[str] = (), stream: Any = None) -> None:
    """Route structlog and stdlib logging (aiogram, APScheduler, httpx) to one scrubbed stream."""
    stream = stream or sys.stdout
    scrubber.update(secrets)
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if use_json else _identity,
            scrubber,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_ScrubRenderedLine(formatter, journal=writes_to_journal(stream)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter at INFO (every getUpdates, every HTTP request) would drown the daemon's own lines.
    for noisy in ("httpx", "httpcore", "aiogram.event", "apscheduler.executors.default"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # "Run skipped: maximum number of running instances" is expected while a slow poll is still going.
    logging.getLogger("apscheduler.scheduler").setLevel(max(logging.ERROR, root.level))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _identity(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return event_dict
