"""Configuration: every bad input is one line naming the key; secrets come from values, files or env."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_settings, parse_settings

GOOD = {
    "planfix": {"account": "acme", "api_key": "k" * 32, "token": "t" * 32},
    "telegram": {"token": "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZ012345678"},
}


def with_(section, **values):
    raw = {k: dict(v) for k, v in GOOD.items()}
    raw.setdefault(section, {}).update(values)
    return raw


def error(raw, environ=None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_settings(raw, environ=environ or {})
    return str(info.value)


def test_minimal_config_gets_safe_defaults():
    """Only account, key, token and bot token are required; the rest defaults like config.example.toml."""
    s = parse_settings(GOOD, environ={})
    assert s.planfix.url == "https://api.planfix.com/xml/" and s.planfix.requests_per_second == 1.0
    assert s.poll.interval_seconds == 30 and s.display.language == "ru"
    assert s.planfix.task_web_url == "https://acme.planfix.com"
    assert [r for r in s.routes] == []


def test_missing_telegram_token_names_the_key():
    """Without a bot token the error names telegram.token and the three ways to give it."""
    raw = {"planfix": GOOD["planfix"], "telegram": {}}
    assert error(raw) == "telegram.token: missing (set telegram.token, telegram.token_file or TELEGRAM_BOT_TOKEN)"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (with_("planfix", url="http://planfix.example/xml/"), "planfix.url"),
        (with_("planfix", requests_per_second=0), "planfix.requests_per_second"),
        (with_("poll", interval_seconds=0.5), "poll.interval_seconds"),
        (with_("display", language="de"), "display.language"),
        (with_("display", timezone="Nowhere/Town"), "display.timezone"),
        (with_("telegram", token="not-a-token"), "telegram.token"),
        (with_("poll", intervall_seconds=5), "poll.intervall_seconds"),
        ({**GOOD, "routes": [{"chat_id": 1}, {"chat_id": 2, "events": ["nope"]}]}, "routes[2].events[1]"),
        ({**GOOD, "routes": [{"chat_id": 1, "quiet_hours": "late"}]}, "routes[1].quiet_hours"),
        ({**GOOD, "users": [{"telegram_id": 1}]}, "users[1].planfix_id"),
    ],
)
def test_bad_values_name_their_key(raw, key):
    """Each bad value is reported as `key: problem` with the exact key path."""
    assert error(raw).startswith(f"{key}: ")


def test_planfix_auth_needs_token_or_login():
    """Without a token or login/password the error names planfix.token."""
    raw = {"planfix": {"account": "a", "api_key": "k"}, "telegram": GOOD["telegram"]}
    assert error(raw).startswith("planfix.token: missing")


def test_secrets_from_environment_and_files(tmp_path):
    """Secrets can come from *_file keys (relative to the config) or from the environment."""
    (tmp_path / "bot.token").write_text("777:FROMFILEFROMFILEFROMFILE\n")
    config = tmp_path / "c.toml"
    config.write_text('[planfix]\naccount = "a"\n[telegram]\ntoken_file = "bot.token"\n')
    s = load_settings(config, environ={"PLANFIX_API_KEY": "envkey", "PLANFIX_TOKEN": "envtoken"})
    assert s.telegram.token.get_secret_value() == "777:FROMFILEFROMFILEFROMFILE"
    assert s.planfix.api_key.get_secret_value() == "envkey"
    assert set(s.secrets()) == {"envkey", "envtoken", "777:FROMFILEFROMFILEFROMFILE"}


def test_credentials_directory_is_used_for_bare_file_names(tmp_path):
    """A bare *_file name is looked up in $CREDENTIALS_DIRECTORY (systemd LoadCredential=)."""
    (tmp_path / "tg").write_text("42:SECRETSECRETSECRETSECRET")
    raw = {"planfix": GOOD["planfix"], "telegram": {"token_file": "tg"}}
    s = parse_settings(raw, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert s.telegram.token.get_secret_value().startswith("42:")


def test_unreadable_secret_file_names_the_key(tmp_path):
    """A secret file that cannot be read is reported against its *_file key."""
    raw = {"planfix": GOOD["planfix"], "telegram": {"token_file": str(tmp_path / "missing")}}
    assert error(raw).startswith("telegram.token_file: cannot read")


def test_secrets_do_not_leak_into_errors_or_repr():
    """A secret never shows up in an error message or in the settings' repr."""
    s = parse_settings(GOOD, environ={})
    assert "t" * 32 not in repr(s) and "ABCDEFGHIJ" not in repr(s)
    msg = error(with_("telegram", token="12:bad token with spaces"))
    assert "bad token" not in msg


def test_invalid_toml_and_missing_file(tmp_path):
    """A missing or malformed file is a config error too."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "nope.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[planfix\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, environ={})


def test_example_config_is_valid(tmp_path):
    """config.example.toml, as shipped, loads (with its placeholder secrets)."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "config.example.toml"
    s = load_settings(example, environ={})
    assert s.routes and s.users
