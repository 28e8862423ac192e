"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import pytest

from bot.fakes.planfix import FakePlanfix
from bot.fakes.telegram import FakeTelegram


@pytest.fixture
async def fakes():
    pf, tg = FakePlanfix(account="acme"), FakeTelegram()
    await pf.start()
    await tg.start()
    yield pf, tg
    await tg.stop()
    await pf.stop()
