"""systemd's notify protocol (sd_notify): READY, STATUS, WATCHDOG, RELOADING and STOPPING datagrams."""

from __future__ import annotations

import os
import socket
import time

import structlog

log = structlog.get_logger(__name__)


class SystemdNotifier:
    """Sends notify messages when run under systemd (NOTIFY_SOCKET set); does nothing otherwise.

    The protocol is documented as stable in sd_notify(3): one datagram of newline-separated KEY=VALUE lines."""

    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        if self.address and self.address.startswith("@"):
            self.address = "\0" + self.address[1:]  # an abstract socket
        self.watchdog_seconds = _watchdog_seconds(env)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        if not self.address:
            return False
        try:
            # Non-blocking: a full notify socket must never stall the event loop that sends the watchdog pings.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
                sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as exc:
            log.warning("systemd.notify_failed", error=str(exc))
            return False

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={_one_line(status)}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={_one_line(status)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        # systemd ≥ 253 wants the monotonic time with RELOADING=1; older versions ignore the extra line.
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")


def _watchdog_seconds(env: dict[str, str] | os._Environ[str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process
    return int(usec) / 1_000_000


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]
