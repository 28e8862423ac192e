"""Faults of the host and of people (issue 11): a damaged state file, an unreadable secret, ids out of range,
the reload protocol — each ends in one clear line and an exit status systemd does not restart on."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from bot.cli import EXIT_CONFIG, EXIT_STATE
from tests.e2e import planfix_bot_command, write_config

UNITS = sorted((Path(__file__).resolve().parents[1] / "systemd").glob("*.service"))
BOT_TOKEN = "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZ012345678"


def _config(tmp: Path, **overrides) -> dict:
    # Nothing listens on port 9: these runs must stop before they connect anywhere.
    config = {
        "planfix": {"url": "http://127.0.0.1:9/xml/", "account": "acme", "api_key": "k-secret", "token": "t-secret"},
        "telegram": {"token": BOT_TOKEN, "api_base": "http://127.0.0.1:9", "admin_ids": [900]},
        "state": {"path": str(tmp / "state.sqlite3")},
        "routes": [{"chat_id": -1001234567890}],
    }
    config.update(overrides)
    return config


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLANFIX_", "TELEGRAM_", "NOTIFY_SOCKET"))}
    return subprocess.run([*planfix_bot_command(), "run", "--config", str(config)], capture_output=True, text=True,
                          env=env, timeout=60)


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    output = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(output) == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    return output[0]


def test_a_damaged_state_file_is_one_line_and_exit_3(tmp_path):
    """A state file that is not a database ends with one line naming the file and the README's restore step,
    and exit status 3, which the units do not restart on (no restart loop every 5 s)."""
    state = tmp_path / "state.sqlite3"
    state.write_bytes(b"this is not a database\n" * 400)
    proc = _run(write_config(tmp_path / "c.toml", _config(tmp_path)))
    assert proc.returncode == EXIT_STATE
    line = _one_line(proc)
    assert str(state) in line and "not a database" in line and "backup" in line, line


def test_damage_inside_a_real_state_file_is_found_at_start(tmp_path):
    """A state file whose header is fine but whose pages are damaged is caught when it is opened (quick_check),
    not by every later commit: the same one-line StateFileError that `run` turns into exit 3."""
    from state.store import StateFileError, Store

    state = tmp_path / "state.sqlite3"
    store = Store.open(state)
    with store.db.atomic():
        for task_id in range(300):
            store.db.execute("INSERT INTO tasks (task_id, revision, data, updated_at) VALUES (?, 1, ?, 'x')",
                             [task_id, "y" * 400])
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    data = bytearray(state.read_bytes())
    for i in range(len(data) - 4 * 4096, len(data), 7):  # the last pages: task rows, not the schema
        data[i] = 0xAB
    state.write_bytes(data)
    with pytest.raises(StateFileError) as info:
        Store.open(state)
    line = str(info.value)
    assert "\n" not in line and str(state) in line and "malformed" in line and "backup" in line, line


def test_a_secret_file_that_is_not_utf8_is_a_config_error(tmp_path):
    """A secret file in another encoding is a config error (exit 2) naming the key and the file."""
    secret = tmp_path / "telegram_token"
    secret.write_bytes(b"\xff\xfe1\x002\x003\x00")
    config = _config(tmp_path)
    config["telegram"] = {k: v for k, v in config["telegram"].items() if k != "token"} | {"token_file": str(secret)}
    proc = _run(write_config(tmp_path / "c.toml", config))
    assert proc.returncode == EXIT_CONFIG
    line = _one_line(proc)
    assert "telegram.token_file" in line and str(secret) in line and "UTF-8" in line, line


@pytest.mark.parametrize(("overrides", "key"), [
    ({"routes": [{"chat_id": -100}, {"chat_id": 2**64}]}, "routes[2].chat_id"),
    ({"users": [{"telegram_id": 2**63, "planfix_id": 5}]}, "users[1].telegram_id"),
    ({"telegram": {"token": BOT_TOKEN, "admin_ids": [1, -(2**60)]}}, "telegram.admin_ids[2]"),
])
def test_ids_outside_telegrams_range_are_refused(tmp_path, capsys, overrides, key):
    """A chat id of 2^64 (or any id past Telegram's 52 bits) would make every commit of the state fail with
    OverflowError; the config refuses it with exit 2 naming the key (`main` in-process; a subprocess run of
    the same path is test_a_secret_file_that_is_not_utf8_is_a_config_error)."""
    from bot.cli import main

    previous = signal.getsignal(signal.SIGTERM)  # `run` installs its start-up handler
    try:
        with pytest.raises(SystemExit) as info:
            main(["run", "--config", str(write_config(tmp_path / "c.toml", _config(tmp_path, **overrides)))])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert info.value.code == EXIT_CONFIG
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"planfix-bot: config error: {key}: "), line


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_units_do_not_restart_on_config_or_state_errors(unit):
    """Both shipped units list exit statuses 2 and 3 in RestartPreventExitStatus=."""
    [line] = re.findall(r"^RestartPreventExitStatus=(.*)$", unit.read_text(), re.M)
    assert {str(EXIT_CONFIG), str(EXIT_STATE)} <= set(line.split())


class NotifySocket:
    """A fake systemd notify socket: a unix datagram socket the test reads, as systemd would."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.received: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.received.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.received

    async def wait_for(self, start: int, predicate, timeout: float = 60) -> int:
        """The index of the first datagram at or after `start` that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        while True:
            for i, message in enumerate(self.drain()[start:], start):
                if predicate(message):
                    return i
            assert time.monotonic() < deadline, f"not found in {self.received[start:]}"
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self.sock.close()


def _is_ready(message: str) -> bool:
    return "READY=1" in message.split("\n")


async def test_reload_follows_the_systemd_protocol(tmp_path):
    """SIGHUP sends RELOADING=1 with MONOTONIC_USEC (now, on CLOCK_MONOTONIC), then READY=1 — after a refused
    reload (STATUS says why) and after a good one alike, so `systemctl reload` never waits for its timeout."""
    from bot.fakes.planfix import FakePlanfix
    from bot.fakes.telegram import FakeTelegram
    from tests.e2e import Daemon, daemon_config, wait_until

    notify = NotifySocket(tmp_path / "notify.sock")
    async with FakePlanfix() as pf, FakeTelegram() as tg:
        path = tmp_path / "c.toml"
        write_config(path, daemon_config(tmp_path, pf, tg, routes=[{"chat_id": -1}]))
        daemon = await Daemon(path, tmp_path / "d.log", env={"NOTIFY_SOCKET": str(notify.path)}).start()
        try:
            first_ready = await notify.wait_for(0, _is_ready)
            for config, outcome in ((path.read_text().replace("interval_seconds = 1", "interval_seconds = 0"),
                                     "reload refused, running configuration kept: poll.interval_seconds"),
                                    (path.read_text(), "configuration reloaded")):
                path.write_text(config)
                before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                mark = len(notify.drain())
                daemon.proc.send_signal(signal.SIGHUP)
                reloading = await notify.wait_for(mark, lambda m: m.startswith("RELOADING=1\n"))
                usec = int(re.search(r"^MONOTONIC_USEC=(\d+)$", notify.received[reloading], re.M).group(1))
                assert before <= usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                ready = await notify.wait_for(reloading, _is_ready, timeout=30)
                assert outcome in notify.received[ready], notify.received[ready]
            assert first_ready < reloading
            await wait_until(lambda: "config.reloaded" in daemon.output(), 30, "the reload")
        finally:
            assert await daemon.stop() == 0
    notify.close()
    assert "Traceback" not in daemon.output()
