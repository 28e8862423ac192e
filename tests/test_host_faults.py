"""Faults of the host and of people (issue 11): a damaged state file, an unreadable secret, ids out of range,
the reload protocol — each ends in one clear line and an exit status systemd does not restart on."""

from __future__ import annotations

import os
import re
import subprocess
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
])
def test_ids_outside_telegrams_range_are_refused(tmp_path, overrides, key):
    """A chat id of 2^64 (or any id past Telegram's 52 bits) would make every commit of the state fail with
    OverflowError; the config refuses it with exit 2 naming the key."""
    proc = _run(write_config(tmp_path / "c.toml", _config(tmp_path, **overrides)))
    assert proc.returncode == EXIT_CONFIG
    assert _one_line(proc).startswith(f"planfix-bot: config error: {key}: ")


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_units_do_not_restart_on_config_or_state_errors(unit):
    """Both shipped units list exit statuses 2 and 3 in RestartPreventExitStatus=."""
    [line] = re.findall(r"^RestartPreventExitStatus=(.*)$", unit.read_text(), re.M)
    assert {str(EXIT_CONFIG), str(EXIT_STATE)} <= set(line.split())
