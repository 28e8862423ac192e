"""Fixtures shared across test files: the fakes for end-to-end tests, the fake Telegram with a Bot and a state file."""

from __future__ import annotations

import pytest

from bot.fakes.planfix import FakePlanfix
from bot.fakes.telegram import FakeTelegram
from tests.telegram_fixtures import bot, fake, store  # noqa: F401  (fixtures for every test file)


@pytest.fixture
async def fakes():
    pf, tg = FakePlanfix(account="acme"), FakeTelegram()
    await pf.start()
    await tg.start()
    yield pf, tg
    await tg.stop()
    await pf.stop()
