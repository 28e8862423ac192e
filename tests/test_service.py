"""Service plumbing: systemd notify datagrams, the single-instance lock, and the hardened unit files."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from bot.instance import AlreadyRunning, InstanceLock
from bot.sdnotify import SystemdNotifier

UNITS = sorted((Path(__file__).resolve().parents[1] / "systemd").glob("*.service"))


def test_notifier_sends_datagrams_to_notify_socket(tmp_path):
    """READY/STATUS/WATCHDOG reach $NOTIFY_SOCKET as sd_notify(3) datagrams."""
    path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(2)
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "20000000"})
        assert notifier.enabled and notifier.watchdog_seconds == 20
        assert notifier.ready("polling\nok")
        assert server.recv(1024) == b"READY=1\nSTATUS=polling ok"
        notifier.watchdog()
        assert server.recv(1024) == b"WATCHDOG=1"
    finally:
        server.close()


def test_notifier_is_silent_outside_systemd():
    """Without NOTIFY_SOCKET nothing is sent and nothing fails."""
    notifier = SystemdNotifier({})
    assert not notifier.enabled and notifier.ready("x") is False and notifier.watchdog_seconds is None


def test_watchdog_meant_for_another_pid_is_ignored():
    """WATCHDOG_PID naming another process disables the watchdog pings, as sd_watchdog_enabled(3) says."""
    assert SystemdNotifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_seconds is None


def test_second_instance_on_same_state_is_refused(tmp_path):
    """A second lock on the same state file fails with a message naming the state and the holder's pid."""
    state = tmp_path / "state.sqlite3"
    with InstanceLock(state):
        with pytest.raises(AlreadyRunning, match="already running with state"):
            InstanceLock(state).acquire()
    InstanceLock(state).acquire().release()  # free again once the first one is gone


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_exposure_is_at_most_2(unit):
    """`systemd-analyze security --offline=true` rates each shipped unit at exposure 2.0 or better."""
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60,
    )
    last = [line for line in proc.stdout.splitlines() if "Overall exposure level" in line]
    assert last, proc.stdout + proc.stderr
    score = float(last[0].split(":")[1].split()[0])
    assert score <= 2.0, last[0]


async def test_daemon_notifies_systemd_and_refuses_a_second_instance(tmp_path):
    """Under systemd the daemon sends READY=1 after its first poll and WATCHDOG=1 pings; a second
    `planfix-bot run` on the same state exits 2 naming the state file; SIGTERM then sends STOPPING=1."""
    import asyncio

    from bot.fakes.planfix import FakePlanfix
    from bot.fakes.telegram import FakeTelegram
    from tests.e2e import Daemon, daemon_config, planfix_bot_command, write_config

    sock_path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.setblocking(False)
    received: list[str] = []

    async def drain() -> None:
        while True:
            try:
                received.append(server.recv(4096).decode())
            except BlockingIOError:
                await asyncio.sleep(0.02)

    async def collect(until: str, timeout: float = 60) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not any(until in m for m in received):
            assert loop.time() < end, f"no {until} in {received}"
            await asyncio.sleep(0.05)

    drainer = asyncio.create_task(drain())

    async with FakePlanfix() as pf, FakeTelegram() as tg:
        config = write_config(tmp_path / "c.toml", daemon_config(tmp_path, pf, tg))
        env = {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "2000000"}
        daemon = await Daemon(config, tmp_path / "d.log", env=env).start()
        try:
            await collect("READY=1")
            assert any("STATUS=last poll" in m for m in received)
            await collect("WATCHDOG=1")
            second = await asyncio.create_subprocess_exec(
                *planfix_bot_command(), "run", "--config", str(config),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(second.communicate(), 30)
            assert second.returncode == 2 and b"already running with state" in err, err
        finally:
            assert await daemon.stop() == 0
        await collect("STOPPING=1", timeout=5)
    drainer.cancel()
    server.close()


def test_full_notify_socket_never_blocks(tmp_path):
    """When nobody reads the notify socket, sends fail fast instead of stalling the event loop."""
    import time

    path = tmp_path / "full.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
        started = time.monotonic()
        results = [notifier.watchdog() for _ in range(200)]
        assert time.monotonic() - started < 2
        assert results[0] is True and results[-1] is False
    finally:
        server.close()


async def test_sighup_reloads_routes_and_refuses_a_bad_config(tmp_path):
    """SIGHUP with a new route moves notifications to it without a restart; a broken config is refused, logged
    naming the key, and the running configuration keeps working."""
    import asyncio
    import signal

    from bot.fakes.planfix import FakePlanfix
    from bot.fakes.telegram import FakeTelegram
    from tests.e2e import Daemon, daemon_config, wait_polls, wait_until, write_config

    async with FakePlanfix() as pf, FakeTelegram() as tg:
        pf.add_user(10, "Anna")
        task = pf.add_task(title="Reloaded", owner=10)
        path = tmp_path / "c.toml"
        write_config(path, daemon_config(tmp_path, pf, tg, routes=[{"chat_id": -1}]))
        daemon = await Daemon(path, tmp_path / "d.log").start()
        try:
            await wait_polls(pf, 2)
            write_config(path, daemon_config(tmp_path, pf, tg, routes=[{"chat_id": -2}]))
            daemon.proc.send_signal(signal.SIGHUP)
            await wait_until(lambda: "config.reloaded" in daemon.output(), 60, "the reload")
            await wait_polls(pf, 2)
            pf.change_status(task.id, 2, by=10)
            await tg.wait_for_messages(1, chat_id=-2, timeout=60)
            assert tg.messages_to(-1) == []

            path.write_text(path.read_text().replace("interval_seconds = 1", "interval_seconds = 0"))
            daemon.proc.send_signal(signal.SIGHUP)
            await wait_until(lambda: "config.reload_refused" in daemon.output(), 60, "the refusal")
            assert "poll.interval_seconds" in daemon.output()
            pf.change_status(task.id, 3, by=10)
            await tg.wait_for_messages(2, chat_id=-2, timeout=60)
            assert daemon.proc.returncode is None
        finally:
            assert await daemon.stop() == 0
        await asyncio.sleep(0)


async def test_metrics_and_healthz(tmp_path):
    """With [metrics] listen set, /metrics exposes Prometheus text (outbox depth, events by kind, budget, feed lag,
    tasks set aside) and /healthz answers 200 once a poll has succeeded. A task answering 3002 among the changed
    ones (issue 10) does not hold up the other's notification; it is counted as set aside."""
    import aiohttp

    from bot.fakes.planfix import FakePlanfix
    from bot.fakes.telegram import FakeTelegram
    from tests.e2e import Daemon, daemon_config, wait_polls, write_config

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with FakePlanfix() as pf, FakeTelegram() as tg:
        pf.add_user(10, "Anna")
        task = pf.add_task(title="Measured", owner=10)
        hidden = pf.add_task(title="Hidden", owner=10)
        config = daemon_config(tmp_path, pf, tg, routes=[{"chat_id": -1}], metrics={"listen": f"127.0.0.1:{port}"})
        daemon = await Daemon(write_config(tmp_path / "c.toml", config), tmp_path / "d.log").start()
        try:
            await wait_polls(pf, 2)
            pf.deny_access(hidden.id, "3002")
            pf.change_status(hidden.id, 2, by=10)
            pf.change_status(task.id, 2, by=10)
            await tg.wait_for_messages(1, chat_id=-1, timeout=60)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    assert resp.status == 200, await resp.text()
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    text = await resp.text()
        finally:
            assert await daemon.stop() == 0
    for needle in ('planfix_bot_events_total{kind="status"} 1.0', "planfix_bot_outbox_depth",
                   "planfix_bot_planfix_budget_remaining", "planfix_bot_feed_lag_seconds",
                   "planfix_bot_messages_sent_total 1.0", 'planfix_bot_job_runs_total{job="poll",result="ok"}',
                   'planfix_bot_planfix_requests_total{code="ok",method="action.getListByPeriod"}',
                   "planfix_bot_tasks_set_aside 1.0", 'planfix_bot_planfix_requests_total{code="3002",method="task.get"}'):
        assert needle in text, text
