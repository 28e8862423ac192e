"""Issue 10 item 5: wrong endpoints are loud, and task links use the account's data centre. Real HTTP against the
fake Planfix (redirect, 401, 403, 404 answers)."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from bot.check import run_check
from bot.config import parse_settings
from bot.fakes.planfix import FakePlanfix
from bot.fakes.telegram import FakeTelegram
from bot.planfix.budget import Priority, priority
from bot.planfix.client import PlanfixClient
from bot.planfix.errors import PlanfixEndpointError
from bot.watch.jobs import BackgroundJob, Health


@pytest.fixture
async def pf():
    fake = FakePlanfix(account="acme")
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def client(pf):
    c = PlanfixClient(url=pf.url, account=pf.account, api_key=pf.api_key, token=pf.token, requests_per_second=500,
                      timeout=5)
    yield c
    await c.aclose()


@pytest.mark.parametrize(("fault", "status", "needle"), [
    ("redirect", 301, "https://api.planfix.com/xml/"),
    ("http401", 401, "planfix.api_key"),
    ("http403", 403, "proxy"),
    ("http404", 404, "ending in /xml/"),
])
async def test_a_wrong_endpoint_is_a_configuration_error_naming_planfix_url(pf, client, fault, status, needle):
    pf.inject_fault(fault)
    with pytest.raises(PlanfixEndpointError) as info:
        await client.user_get()
    exc = info.value
    assert exc.http_status == status and f"planfix.url {pf.url}" in str(exc) and needle in exc.fix
    assert client.request_counts[("user.get", f"http_{status}")] == 1


@pytest.mark.parametrize("fault", ["redirect", "http404"])
async def test_the_feed_job_stops_with_one_log_line_and_one_admin_message(pf, client, fault):
    """Not a transient retried silently for ever: one error line with the fix, one admin message, background
    work stops (commands still go), and /status's problem says why."""
    told: list[str] = []

    async def tell(text: str) -> None:
        told.append(text)

    async def step() -> None:
        with priority(Priority.FEED):
            await client.user_get()

    health = Health(notify_admins=tell)
    job = BackgroundJob("poll", step, interval=lambda: 30, health=health, budget=client.budget)
    pf.inject_fault(fault, times=100)
    with capture_logs() as logs:
        assert await job.run_once()
        assert not await job.run_once()  # stopped: no retry
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["planfix.config_error"]
    assert "planfix.url" in errors[0]["error"] and "planfix.url" in errors[0]["fix"]
    assert len(told) == 1 and "planfix.url" in told[0]
    assert job.results["config_error"] == 1 and len(pf.requests) == 1
    assert health.problem is not None and "HTTP" in health.problem and "planfix.url" in health.problem


def settings(url: str, **planfix: object):
    raw = {"planfix": {"url": url, "account": "acme", "api_key": "k", "token": "t", **planfix},
           "telegram": {"token": "1:x", "admin_ids": [1]}}
    return parse_settings(raw, environ={})


@pytest.mark.parametrize(("url", "links"), [
    ("https://apiru.planfix.ru/xml/", "https://acme.planfix.ru"),
    ("https://api.planfix.com/xml/", "https://acme.planfix.com"),
    ("https://api-us.planfix.com/xml/", "https://acme.planfix.com"),
])
def test_task_links_default_to_the_data_centres_web_domain(url, links):
    assert settings(url).planfix.task_web_url == links
    assert settings(url, web_url="https://tasks.example.org/").planfix.task_web_url == "https://tasks.example.org"


async def check_lines(pf: FakePlanfix, **planfix: object) -> tuple[int, list[str]]:
    async with FakeTelegram() as tg:
        raw = {"planfix": {"url": pf.url, "account": pf.account, "api_key": pf.api_key, "token": pf.token,
                           "requests_per_second": 50.0, "timeout_seconds": 3, **planfix},
               "telegram": {"token": tg.token, "api_base": tg.base_url, "admin_ids": [900]}}
        lines: list[str] = []
        code = await run_check(parse_settings(raw, environ={}), out=lines.append)
    return code, lines


async def test_check_tells_which_web_url_to_set_from_the_api_users_data(pf):
    """The fake's userPic is served from https://acme.planfix.ru: the default .com links get a warning with the
    fix; with web_url set to it, the line is ok."""
    pf.add_task(title="Something")
    code, lines = await check_lines(pf)
    links = next(line for line in lines if " links:" in line)
    assert code == 0 and links.startswith("warn") and 'set planfix.web_url = "https://acme.planfix.ru"' in links
    code, lines = await check_lines(pf, web_url="https://acme.planfix.ru")
    assert next(line for line in lines if " links:" in line).startswith("ok")


async def test_check_fails_the_endpoint_line_for_a_redirect(pf):
    pf.inject_fault("redirect", method="user.get")
    code, lines = await check_lines(pf)
    endpoint = next(line for line in lines if " endpoint:" in line)
    assert code == 1 and endpoint.startswith("FAIL") and "redirect" in endpoint and "— fix: set planfix.url" in endpoint
