"""The documentation stays true: every config key, every command, and the README's quick start."""

from __future__ import annotations

import re
from pathlib import Path

from bot.cli import build_parser
from bot.config import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLE = (ROOT / "config.example.toml").read_text(encoding="utf-8")


def setting_keys(model: type = Settings, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        nested = next((a for a in (annotation, *getattr(annotation, "__args__", ())) if hasattr(a, "model_fields")),
                      None)
        if nested is not None:
            keys += setting_keys(nested, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def test_every_config_key_is_in_the_example():
    """Each settings key appears in config.example.toml (set or commented out), under its own name."""
    missing = [key for key in setting_keys() if not re.search(rf"^#?\s*{re.escape(key.rsplit('.', 1)[-1])}\s*=",
                                                               EXAMPLE, re.MULTILINE)]
    assert missing == []


def test_every_command_is_in_the_readme():
    """Each `planfix-bot` subcommand is named in the README."""
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")  # noqa: SLF001
    for command in subparsers.choices:
        assert f"planfix-bot {command}" in README, command


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    """The quick start has exactly two shell commands, and .ci/run runs the second one verbatim."""
    start = README.index("## Quick start")
    section = README[start:README.index("\n## ", start + 1)]
    commands = re.findall(r"```sh\n(.+?)\n```", section)
    assert len(commands) == 2, commands
    assert "planfix-bot demo" in commands[0]
    assert commands[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
