"""Planfix failures as exceptions, classified by what the caller should do about them (PLANFIX-API.md §9)."""

from __future__ import annotations

from collections.abc import Iterable

from bot.redact import redact


class PlanfixError(Exception):
    """Base of every Planfix failure. `code` is the API error code (None for transport failures).

    Messages are built from codes, method names and our own wording only, so they never carry the api key,
    token, password or sid; `redacted()` scrubs free text that came from elsewhere (server messages).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        method: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.method = method
        self.http_status = http_status

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, method={self.method!r}, message={self.message!r})"

    def redacted(self, secrets: Iterable[str]) -> PlanfixError:
        """The same error with every secret in the message replaced by `***` (returns self if none occurs)."""
        message = redact(self.message, secrets)
        if message == self.message:
            return self
        clean = type(self)(message, code=self.code, method=self.method, http_status=self.http_status)
        clean.__cause__ = self.__cause__
        return clean


class PlanfixConfigError(PlanfixError):
    """Fatal until a human fixes the configuration or the account (wrong key, token, account, data centre…)."""


class PlanfixEndpointError(PlanfixConfigError):
    """The endpoint answered a redirect, 401, 403 or 404: `planfix.url` does not point at the XML API. `fix` says
    what to set instead."""

    def __init__(self, message: str, *, fix: str, method: str | None = None, http_status: int | None = None) -> None:
        super().__init__(message, method=method, http_status=http_status)
        self.fix = fix


ENDPOINTS = (
    "https://api.planfix.com/xml/ (Europe), https://apiru.planfix.ru/xml/ (Russia), "
    "https://api-sg.planfix.com/xml/ (Asia), https://api-us.planfix.com/xml/ (America)"
)
REDIRECTS = frozenset({301, 302, 303, 307, 308})
WRONG_ENDPOINT = REDIRECTS | {401, 403, 404}


def endpoint_error(method: str, url: str, status: int, location: str | None) -> PlanfixEndpointError:
    """What a redirect, 401, 403 or 404 from the endpoint means, naming planfix.url and the fix."""
    if status in REDIRECTS:
        where = f" to {location}" if location else ""
        message = f"{method}: planfix.url {url} answers HTTP {status}, a redirect{where}"
        fix = (f"set planfix.url to the endpoint itself{' (probably ' + location + ')' if location else ''}: "
               f"https and the trailing slash, one of {ENDPOINTS}")
    elif status == 404:
        message = f"{method}: planfix.url {url} answers HTTP 404 (no XML API there)"
        fix = f"set planfix.url to your data centre's endpoint, ending in /xml/: {ENDPOINTS}"
    else:
        message = f"{method}: planfix.url {url} answers HTTP {status} (refused before Planfix read the request)"
        fix = (f"set planfix.url to your data centre's endpoint ({ENDPOINTS}); if it is right, check that no proxy "
               "or firewall is in the way and that planfix.api_key is the account's API key")
    return PlanfixEndpointError(message, fix=fix, method=method, http_status=status)


class PlanfixTransientError(PlanfixError):
    """Try again later: platform busy, HTTP/network failure, timeout, malformed or unexpected response."""


class PlanfixLimitError(PlanfixTransientError):
    """Error 0007: the request budget is used up; back off for a long time (until the daily reset)."""


class PlanfixSessionError(PlanfixTransientError):
    """Login mode: the session key is missing, invalid or expired (0005; 0012 without a token).

    The client logs in again once by itself; seeing this means the fresh session failed too.
    """


class PlanfixItemError(PlanfixError):
    """One object is missing or not accessible (task, action, project, user); skip that item only."""


class PlanfixMalformedError(PlanfixItemError):
    """One object in an answer does not have the documented shape (no `general`, a non-numeric status, a date
    that does not parse): a property of that object, so it is skipped like an inaccessible one, not retried."""


class PlanfixRequestError(PlanfixError):
    """Planfix rejected the request as malformed: a bug on our side, or a code we do not know."""


# Short human descriptions, from the official table (DOC-EN `Error_codes_XML_API_v1`, RU mirror for 3014).
CODE_DESCRIPTIONS: dict[str, str] = {
    "0001": "wrong API key",
    "0002": "application blocked",
    "0003": "XML parse error in the request",
    "0004": "unknown account",
    "0005": "session key invalid or expired",
    "0006": "wrong signature",
    "0007": "resource usage limit exceeded (daily request limit)",
    "0008": "unknown function name",
    "0009": "required parameter missing",
    "0010": "account frozen",
    "0011": "software update in progress on the platform",
    "0012": "authentication error: no session key, or the token does not exist",
    "0013": "undefined user",
    "0014": "user inactive",
    "0015": "invalid parameter value",
    "0016": "parameter value invalid in this context",
    "0017": "dependent parameter missing",
    "0018": "function not implemented",
    "0019": "conflicting parameters",
    "0020": "function call forbidden",
    "0021": "requested number of objects exceeds the maximum",
    "0022": "API unavailable on a free account",
    "0023": "API not included in the current plan",
    "0024": "account is located in another data centre; check the request URL",
    "0101": "object does not exist",
    "0102": "error adding the object",
    "0103": "error updating the object",
    "0104": "access to the object denied",
    "0105": "no permission to edit the object",
    "1001": "wrong login or password",
    "1002": "no privileges",
    "2001": "project does not exist",
    "2002": "no privileges for the project",
    "3001": "task does not exist",
    "3002": "no access to the (parent) task",
    "3008": "no access to the task",
    "3009": "no access to change the task",
    "3014": "task is being modified; repeat the request later",
    "4001": "no privileges for the action",
    "4002": "action does not exist",
    "4008": "no access to the action",
    "4009": "no access to the task of the action",
    "5001": "user group does not exist",
    "5002": "no privileges for the user group",
    "6001": "no privileges for the user",
    "6004": "user does not exist",
    "7001": "no privileges for the client",
    "7002": "client does not exist",
    "8001": "no privileges for the contact",
    "8002": "contact does not exist",
    "9001": "no privileges for the file",
    "9002": "file does not exist",
    "10001": "no privileges for the analytic",
    "10002": "analytic does not exist",
    "11001": "subscription does not exist",
}

_CONFIG = frozenset(
    {"0001", "0002", "0004", "0010", "0013", "0014", "0020", "0022", "0023", "0024", "1001", "1002"}
)
_TRANSIENT = frozenset({"0011", "3014"})
# Every "does not exist / no access / no privileges" code of one object in the official list (the Go client's
# copy of it: popstas/planfix-go errors.go), plus the add/update errors of one object.
_ITEM = frozenset(
    {"0101", "0102", "0103", "0104", "0105", "2001", "2002", "3001", "3002", "3008", "3009", "4001", "4002",
     "4008", "4009", "5001", "5002", "6001", "6004", "7001", "7002", "8001", "8002", "9001", "9002", "10001",
     "10002"}
)
TASK_GONE = "3001"  # the only code that means the task was deleted (PLANFIX-API.md §16); the rest: set aside


def describe(code: str) -> str:
    """A short human description of an API error code."""
    return CODE_DESCRIPTIONS.get(code, "unknown error code")


def error_class(code: str, *, token_mode: bool = True) -> type[PlanfixError]:
    """The exception class for an API error code; 0012 means a bad token in token mode, a lost sid otherwise."""
    if code == "0007":
        return PlanfixLimitError
    if code == "0005" or (code == "0012" and not token_mode):
        return PlanfixSessionError
    if code in _CONFIG or code == "0012":
        return PlanfixConfigError
    if code in _TRANSIENT:
        return PlanfixTransientError
    if code in _ITEM:
        return PlanfixItemError
    return PlanfixRequestError


def error_for_code(
    code: str,
    method: str | None,
    *,
    message: str | None = None,
    token_mode: bool = True,
    secrets: Iterable[str] = (),
) -> PlanfixError:
    """Build the exception for an API error response; `message` is the optional `<message>` text from Planfix,
    redacted of `secrets` (and the process's known ones) before it is cut short."""
    text = f"Planfix error {code} ({describe(code)})"
    if method:
        text = f"{method}: {text}"
    if message:
        # Server text is free-form; keep it short so a verbose server cannot flood logs.
        # Redact first: a secret straddling the cut would otherwise leave its prefix behind.
        text = f"{text}: {redact(message, secrets)[:200]}"
    return error_class(code, token_mode=token_mode)(text, code=code, method=method)


# What to do about each config-fatal code, for the log line, the admins and `planfix-bot check`.
FIX_HINTS: dict[str, str] = {
    "0001": "check planfix.api_key (Account management → API access in Planfix)",
    "0002": "the API application is blocked in Planfix: check Account management → API access",
    "0004": "check planfix.account: the NAME in https://NAME.planfix.com",
    "0010": "the Planfix account is frozen: contact Planfix",
    "0012": "check planfix.token (Account management → API access), or planfix.login and planfix.password",
    "0013": "the API token's user does not exist any more: create a token for an active user",
    "0014": "the API token's user is inactive: activate the user or use another user's token",
    "0020": "the token may not call this method: allow it in Account management → API access",
    "0022": "the Planfix API is not available on a free account",
    "0023": "the Planfix API is not included in the current plan",
    "0024": "planfix.url points at another data centre: use https://api.planfix.com/xml/ (Europe), "
    "https://apiru.planfix.ru/xml/ (Russia), https://api-sg.planfix.com/xml/ or https://api-us.planfix.com/xml/",
    "1001": "check planfix.login and planfix.password",
    "1002": "the API user lacks privileges for this",
}


def fix_hint(code: str | None) -> str:
    return FIX_HINTS.get(code or "", "check the [planfix] section of the configuration")


def fix_for(exc: PlanfixError) -> str:
    """The fix for a config-fatal error: its own (a wrong endpoint knows it), else by code."""
    return getattr(exc, "fix", "") or fix_hint(exc.code)
