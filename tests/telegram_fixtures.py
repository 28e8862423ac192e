"""Fixtures for tests that drive real code against the fake Telegram: the fake, an aiogram Bot on it, a state file."""

from __future__ import annotations

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from bot.fakes.telegram import FakeTelegram
from state.store import Store


class QuickSession(AiohttpSession):
    """aiogram's session without the 250 ms pause on close meant for TLS connections (there are none here)."""

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


@pytest.fixture
async def fake():
    server = FakeTelegram()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def bot(fake):
    client = Bot(fake.token, session=QuickSession(api=TelegramAPIServer.from_base(fake.base_url)))
    yield client
    await client.session.close()


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "state.sqlite3")
    yield s
    s.close()
