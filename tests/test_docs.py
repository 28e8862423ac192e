"""The documentation stays true: every config key, every command, and the README's quick start."""

from __future__ import annotations

import importlib
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


def how_it_works_steps() -> list[str]:
    """The numbered list at the top of the README's "How it works": one step per item, continuation lines joined."""
    start = README.index("## How it works")
    section = README[start:README.index("\n#", start + 1)]
    steps: list[str] = []
    for line in section.splitlines():
        if match := re.match(r"(\d+)\. (.*)", line):
            assert int(match[1]) == len(steps) + 1, line
            steps.append(match[2])
        elif steps and line.startswith("   ") and not line.lstrip().startswith("```"):
            steps[-1] += " " + line.strip()
        elif steps and line.strip() and not line.startswith(" "):
            break  # the list is over
    return steps


def resolve(module: str, dotted: str) -> object:
    target: object = importlib.import_module(module)
    for name in dotted.split("."):
        target = getattr(target, name)
    return target


def test_how_it_works_names_real_functions_in_at_most_12_steps():
    """Issue 12: one status change, feed → message, in ≤ 12 steps; every `module.py: name` in them imports, and a
    bare `Class.method` resolves in the module last named in its step — so the list stays true as code moves."""
    steps = how_it_works_steps()
    assert 6 <= len(steps) <= 12, steps
    for number, step in enumerate(steps, 1):
        module = None
        named = 0
        for token in re.findall(r"`([^`]+)`", step):
            if match := re.fullmatch(r"((?:bot|state)/[\w/]+)\.py: ([\w.]+)", token):
                module = match[1].replace("/", ".")
                assert (ROOT / f"{match[1]}.py").is_file(), token
                assert callable(resolve(module, match[2])), f"step {number}: {token}"
                named += 1
            elif re.fullmatch(r"[A-Z]\w*\.\w+", token):
                assert module is not None, f"step {number}: {token} before any module"
                owner = resolve(module, token.split(".")[0])
                assert getattr(owner, "__module__", None) == module, f"step {number}: {token} is not from {module}"
                assert callable(resolve(module, token)), f"step {number}: {token}"
                named += 1
        assert named, f"step {number} names no function: {step}"


def layout_block() -> str:
    start = README.index("### Layout")
    return re.search(r"```\n(.*?)\n```", README[start:], re.DOTALL)[1]


def test_layout_names_only_files_that_exist_and_describes_every_package():
    """Every path in the README's Layout exists (a bare `x.py` is looked up in the directory its entry describes);
    every package directory, every top-level module of bot/ and every top-level directory is described there."""
    block = layout_block()
    missing, here = [], ROOT
    for line in block.splitlines():
        if not line.startswith(" "):
            head = line.split()[0]
            here = ROOT / head if head.endswith("/") else ROOT
        paths = r"(?:\.ci|bot|state|tests|bench|systemd)/[\w./@-]*|\b[\w@-]+\.(?:py|service)\b"
        for token in re.findall(paths, line):
            path = ROOT / token if "/" in token else here / token
            if not path.exists():
                missing.append(token)
    assert missing == []
    entries = {line.split()[0] for line in block.splitlines() if line and not line.startswith(" ")}
    entries |= {m for line in block.splitlines() for m in re.findall(r"\s(bot/\w+\.py)\s", line)}
    packages = {f"bot/{p.parent.name}/" for p in (ROOT / "bot").glob("*/__init__.py")}
    modules = {f"bot/{p.name}" for p in (ROOT / "bot").glob("*.py") if p.name != "__init__.py"}
    tracked = {"state/", "tests/", "bench/", "systemd/", ".ci/run"}
    assert sorted((packages | modules | tracked) - entries) == []
