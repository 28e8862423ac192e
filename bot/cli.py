"""`planfix-bot run|check|demo`: argument parsing only; the work is done in app.py and demo.py."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from bot import __version__
from bot.config import ConfigError, Settings, load_settings

EXIT_CONFIG = 2
EXIT_STATE = 3  # the state file cannot be used; like 2, the systemd unit does not restart on it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="planfix-bot",
        description="Watch a Planfix account and tell Telegram chats when tasks change "
        "(status, deadline, overdue, reminders, assignments, comments); answer chat commands such as /task, /my "
        "and /find; with [actions] enabled, a reply to a notice becomes a Planfix comment and Status ▸ changes it.",
        epilog="A config error exits with status 2 and one line naming the key; a damaged state file exits with "
        "status 3 and one line saying how to restore it. See config.example.toml.",
    )
    parser.add_argument("--version", action="version", version=f"planfix-bot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", help="run the daemon in the foreground until SIGTERM/SIGINT; SIGHUP reloads the config",
        description="Run the daemon in the foreground. SIGTERM/SIGINT stop it cleanly (exit 0); SIGHUP re-reads the "
        "config (a bad file is refused and the running config kept). Exit 2: config error or another instance "
        "already uses the state file. Exit 3: the state file is damaged or unusable (restore it from a backup).")
    run.add_argument("--config", required=True, metavar="PATH", help="TOML configuration file")
    check = commands.add_parser("check", help="validate the config, reach Planfix and Telegram, report")
    check.add_argument("--config", required=True, metavar="PATH", help="TOML configuration file")
    demo = commands.add_parser(
        "demo", help="run against a simulated Planfix account and print each Telegram message (no credentials)"
    )
    demo.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                      help="poll interval of the demo daemon (default: 2)")
    demo.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                      help="stop by itself after this long (default: run until Ctrl-C)")
    return parser


def _settings_or_exit(path: str) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"planfix-bot: config error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _stop_during_startup(signum: int, frame: object) -> None:
    # Until the daemon's event loop installs its own handlers, a stop request simply ends the start-up cleanly.
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        signal.signal(signal.SIGTERM, _stop_during_startup)
    if args.command == "demo":
        from bot.demo import run_demo

        return asyncio.run(run_demo(interval=args.interval, duration=args.duration))
    settings = _settings_or_exit(args.config)
    from bot import logs

    logs.configure(level=settings.logging.level, fmt=settings.logging.format, secrets=settings.secrets())
    if args.command == "check":
        from bot.check import run_check

        return asyncio.run(run_check(settings))
    from bot.app import run_daemon
    from bot.instance import AlreadyRunning, InstanceLock

    try:
        lock = InstanceLock(settings.state.path).acquire()
    except AlreadyRunning as exc:
        print(f"planfix-bot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"planfix-bot: config error: state.path: cannot create {str(settings.state.path)!r}: {exc.strerror}",
              file=sys.stderr)
        return EXIT_CONFIG
    from state.store import StateFileError

    try:
        return asyncio.run(run_daemon(settings, config_path=args.config))
    except StateFileError as exc:
        print(f"planfix-bot: state file error: {exc}", file=sys.stderr)
        return EXIT_STATE
    finally:
        lock.release()


if __name__ == "__main__":
    raise SystemExit(main())
