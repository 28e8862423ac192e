"""TOML configuration → validated settings; secrets from the value, a `*_file` key, or the environment."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.events import EVENT_KINDS

DEFAULT_STATE_PATH = "/var/lib/planfix-bot/state.sqlite3"
_QUIET_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
_LEAD = re.compile(r"^\d{1,5}[mhd]$")  # poll.remind_before entries: "30m", "24h", "2d"
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")  # digest_at: "09:00"


# Telegram ids "have at most 52 significant bits" (Bot API, Chat.id). A larger one is a typo, and one past
# SQLite's 64-bit integers would make every commit of the state file fail with OverflowError.
TELEGRAM_ID_LIMIT = 2**52


def _telegram_id(value: int) -> int:
    if value == 0 or not -TELEGRAM_ID_LIMIT < value < TELEGRAM_ID_LIMIT:
        raise ValueError(f"{value} is not a Telegram id (non-zero, at most 52 bits); /start in the chat shows its id")
    return value


def _planfix_id(value: int) -> int:
    if not 0 < value < 2**53:
        raise ValueError(f"{value} is not a Planfix id (a positive number, as Planfix shows it)")
    return value


TelegramId = Annotated[int, AfterValidator(_telegram_id)]
PlanfixId = Annotated[int, AfterValidator(_planfix_id)]


def _clock_time(value: str | None) -> str | None:
    if value is not None and not _CLOCK.match(value):
        raise ValueError('must look like "09:00" (24-hour clock)')
    return value


class ConfigError(Exception):
    """A configuration problem, phrased as one line that names the key."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class _Section(BaseModel):
    # Unknown keys are errors: a typo such as `intervall_seconds` must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanfixSettings(_Section):
    url: str = "https://api.planfix.com/xml/"
    account: str
    api_key: SecretStr
    token: SecretStr | None = None
    login: str | None = None
    password: SecretStr | None = None
    web_url: str | None = None
    requests_per_second: float = Field(default=1.0, gt=0, le=50)
    daily_request_budget: int = Field(default=20000, ge=100)
    timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    # Planfix requests one person's commands and buttons may cause per minute; beyond it they are
    # answered from the bot's copy, so nobody can starve the feed.
    requests_per_user_per_minute: int = Field(default=6, ge=1, le=600)

    @field_validator("url")
    @classmethod
    def _url_is_https_or_loopback(cls, url: str) -> str:
        return _check_url(url, allow_loopback_http=True)

    @field_validator("web_url")
    @classmethod
    def _web_url_is_http(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as https://mycompany.planfix.com")
        return url.rstrip("/")

    @field_validator("account")
    @classmethod
    def _account_not_blank(cls, account: str) -> str:
        if not account.strip():
            raise ValueError("must not be empty")
        return account.strip()

    @model_validator(mode="after")
    def _one_auth_mode(self) -> PlanfixSettings:
        if self.token is None and not (self.login and self.password):
            raise ValueError(
                "token: missing (set planfix.token, planfix.token_file or PLANFIX_TOKEN; "
                "or planfix.login and planfix.password)"
            )
        return self

    @property
    def task_web_url(self) -> str:
        """Base of task links: `web_url`, else the account's address in the endpoint's data centre (accounts
        behind apiru.planfix.ru live at ACCOUNT.planfix.ru; the others at ACCOUNT.planfix.com)."""
        if self.web_url:
            return self.web_url
        domain = "planfix.ru" if (urlsplit(self.url).hostname or "").endswith(".planfix.ru") else "planfix.com"
        return f"https://{self.account}.{domain}"


class TelegramSettings(_Section):
    token: SecretStr
    api_base: str = "https://api.telegram.org"
    admin_ids: list[TelegramId] = []

    @field_validator("api_base")
    @classmethod
    def _api_base_is_https_or_loopback(cls, url: str) -> str:
        return _check_url(url, allow_loopback_http=True).rstrip("/")

    @field_validator("token")
    @classmethod
    def _token_shape(cls, token: SecretStr) -> SecretStr:
        if not re.fullmatch(r"\d+:[\w-]+", token.get_secret_value()):
            raise ValueError("does not look like a bot token from @BotFather (digits:letters)")
        return token


class StateSettings(_Section):
    path: Path = Path(DEFAULT_STATE_PATH)
    keep_days: int = Field(default=30, ge=1, le=3650)  # delivered/given-up messages and their events, then pruned


class PollSettings(_Section):
    interval_seconds: float = Field(default=30, ge=1, le=3600)
    overlap_minutes: int = Field(default=2, ge=1, le=60)
    # Detection: back-off, local deadline checks, reminders, the sweep, catch-up after downtime.
    max_backoff_seconds: float = Field(default=300, ge=1, le=3600)
    deadline_check_seconds: float = Field(default=5, ge=1, le=300)
    remind_before: list[str] = []
    sweep_hours: float = Field(default=24, ge=0, le=24 * 7)
    catchup_digest_threshold: int = Field(default=10, ge=1, le=1000)
    # A live poll (or deadline check) giving one chat more changes than this sends them as one grouped
    # message (split only where Telegram's length limit forces it); 0 = never group live changes.
    burst_threshold: int = Field(default=10, ge=0, le=1000)
    max_event_age_hours: float = Field(default=24, gt=0, le=24 * 30)

    @field_validator("remind_before")
    @classmethod
    def _lead_times(cls, leads: list[str]) -> list[str]:
        for lead in leads:
            if not _LEAD.match(lead) or int(lead[:-1]) == 0:
                raise ValueError(f'{lead!r}: use a positive number with m, h or d, e.g. ["24h", "1h"]')
        return list(dict.fromkeys(leads))


class DisplaySettings(_Section):
    language: Literal["ru", "en"] = "ru"
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str | None) -> str | None:
        if name is not None:
            _zone(name)
        return name


class DeliverySettings(_Section):
    """How the sender talks to Telegram: coalescing, timeouts, when admins hear about waits."""

    coalesce_seconds: float = Field(default=10, ge=0, le=3600)  # 0 = every change is its own message
    send_timeout_seconds: float = Field(default=30, gt=0, le=300)
    long_wait_alert_seconds: float = Field(default=300, gt=0)  # a 429 wait this long is reported to admins
    max_in_flight: int = Field(default=16, ge=1, le=100)  # Telegram requests (to different chats) at once


class MetricsSettings(_Section):
    listen: str | None = None  # "127.0.0.1:9464": serve Prometheus /metrics and /healthz there; unset = off

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError('must look like "127.0.0.1:9464"')
        return value


class ActionsSettings(_Section):
    """Writing to Planfix from Telegram: replies become comments, the Status button changes status."""

    enabled: bool = False  # opt-in per installation: off, nobody can change anything in Planfix from Telegram
    post_as_user: bool = True  # author = the person's own Planfix user (`owner`); refused or false: the API user


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class UserLink(_Section):
    telegram_id: TelegramId
    planfix_id: PlanfixId
    digest_at: str | None = None  # "09:00": a daily digest (due today + overdue) in the user's private chat
    timezone: str | None = None  # the user's IANA zone for digest_at and dates in commands; default: display zone

    _digest_at = field_validator("digest_at")(_clock_time)

    @field_validator("timezone")
    @classmethod
    def _user_zone(cls, name: str | None) -> str | None:
        if name is not None:
            _zone(name)
        return name


class Route(_Section):
    chat_id: TelegramId
    # "reminder" (poll.remind_before) and "assigned" are opt-in per route; linked users get reminders about their
    # tasks and their own assignments anyway.
    events: list[Literal["status", "deadline", "overdue", "reminder", "assigned", "comment"]] = list(EVENT_KINDS)
    projects: list[PlanfixId] = []
    quiet_hours: str | None = None
    timezone: str | None = None  # quiet_hours are read in this zone; default: the display zone
    urgent_bypasses_quiet_hours: bool = False  # HIGH-importance tasks are delivered even inside quiet_hours
    silent: bool = False  # deliver without a notification sound (disable_notification)
    digest_at: str | None = None  # "09:00" in the route's zone: a daily digest of its projects' due and overdue tasks

    _digest_at = field_validator("digest_at")(_clock_time)

    @field_validator("timezone")
    @classmethod
    def _route_zone(cls, name: str | None) -> str | None:
        if name is not None:
            _zone(name)
        return name

    @field_validator("events")
    @classmethod
    def _events_not_empty(cls, events: list[str]) -> list[str]:
        if not events:
            raise ValueError(f"must name at least one of {', '.join(EVENT_KINDS)}")
        return list(dict.fromkeys(events))

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours_shape(cls, value: str | None) -> str | None:
        if value is not None and not _QUIET_HOURS.match(value):
            raise ValueError('must look like "22:00-08:00"')
        return value


class Settings(_Section):
    planfix: PlanfixSettings
    telegram: TelegramSettings
    state: StateSettings = StateSettings()
    poll: PollSettings = PollSettings()
    display: DisplaySettings = DisplaySettings()
    logging: LoggingSettings = LoggingSettings()
    delivery: DeliverySettings = DeliverySettings()
    metrics: MetricsSettings = MetricsSettings()
    actions: ActionsSettings = ActionsSettings()
    users: list[UserLink] = []
    routes: list[Route] = []

    def display_zone(self, api_zone: str | None = None) -> ZoneInfo:
        """The zone for showing dates: display.timezone, else the Planfix API user's zone, else UTC."""
        return _zone(self.display.timezone or api_zone or "UTC")

    def secrets(self) -> list[str]:
        """Every secret value, so that log output can be scrubbed of them."""
        values = [self.planfix.api_key, self.planfix.token, self.planfix.password, self.telegram.token]
        return [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Moscow)") from None


def _check_url(url: str, *, allow_loopback_http: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.netloc:
        return url
    if parts.scheme == "http" and parts.hostname and allow_loopback_http and _is_loopback(parts.hostname):
        return url
    raise ValueError("must be an https:// URL (http:// is allowed only for 127.0.0.1/localhost)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# (section, key, environment variable) for every secret; `key_file` is the file alternative.
_SECRETS = (
    ("planfix", "api_key", "PLANFIX_API_KEY"),
    ("planfix", "token", "PLANFIX_TOKEN"),
    ("planfix", "password", "PLANFIX_PASSWORD"),
    ("telegram", "token", "TELEGRAM_BOT_TOKEN"),
)


def _resolve_secrets(raw: dict[str, Any], environ: dict[str, str], base_dir: Path) -> None:
    """Fill each secret from its value, its `*_file` key, or its environment variable, in that order."""
    for section, key, env_name in _SECRETS:
        table = raw.get(section)
        if not isinstance(table, dict):
            continue
        file_key = f"{key}_file"
        file_value = table.pop(file_key, None)
        if table.get(key) not in (None, ""):
            continue
        if file_value is not None:
            table[key] = _read_secret_file(f"{section}.{file_key}", file_value, environ, base_dir)
        elif environ.get(env_name):
            table[key] = environ[env_name].strip()
        else:
            table.pop(key, None)


def _read_secret_file(key: str, value: Any, environ: dict[str, str], base_dir: Path) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, "must be a file path")
    path = Path(value)
    if not path.is_absolute():
        # systemd's LoadCredential= puts secrets in $CREDENTIALS_DIRECTORY; a bare name refers to one there.
        cred_dir = environ.get("CREDENTIALS_DIRECTORY")
        path = Path(cred_dir) / path if cred_dir and "/" not in value else base_dir / path
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(key, f"file {str(path)!r} is not UTF-8 text; write the secret into it as plain text") from None
    if not secret:
        raise ConfigError(key, f"file {str(path)!r} is empty")
    return secret


def _first_error(exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"]]
    # Lists of tables ([[routes]]) show up as routes.0.chat_id; 1-based reads better for humans.
    loc = [f"[{int(p) + 1}]" if p.isdigit() else p for p in loc]
    key = ".".join(loc).replace(".[", "[")
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        message = "missing"
        hint = _missing_hint(key)
        if hint:
            message += f" ({hint})"
    elif err["type"] == "extra_forbidden":
        message = "unknown key (check the spelling against config.example.toml)"
    if err["type"] == "value_error" and message.startswith("token: missing"):
        key, message = f"{key}.token" if key else "planfix.token", message.removeprefix("token: ")
    return ConfigError(key or "config", message)


def _missing_hint(key: str) -> str | None:
    for section, name, env_name in _SECRETS:
        if key == f"{section}.{name}":
            return f"set {key}, {key}_file or {env_name}"
    return None


def parse_settings(raw: dict[str, Any], *, environ: dict[str, str] | None = None, base_dir: Path | None = None) -> Settings:
    """Validate an already-parsed TOML document; raises ConfigError naming the first bad key."""
    environ = dict(os.environ) if environ is None else environ
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for section in ("planfix", "telegram"):
        raw.setdefault(section, {})
    _resolve_secrets(raw, environ, base_dir or Path.cwd())
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc) from None


def load_settings(path: str | Path, *, environ: dict[str, str] | None = None) -> Settings:
    """Read and validate the TOML file at `path`; raises ConfigError naming the first bad key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError("--config", f"{str(path)!r} is not UTF-8 text") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{str(path)!r} is not valid TOML: {exc}") from None
    return parse_settings(raw, environ=environ, base_dir=path.parent)

