"""Shared fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import discord.gateway
import discord.http
import pytest

from tests.fakes.ollama import FakeOllama

if TYPE_CHECKING:
    from sandbox import Sandbox

REAL_BASE = discord.http.Route.BASE
REAL_GATEWAY = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY


@pytest.fixture
async def ollama() -> AsyncIterator[FakeOllama]:
    """A FakeOllama on a random loopback port, with llama3.2 and nomic-embed-text pulled; stopped afterwards."""
    fake = FakeOllama()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """A started Sandbox with discord.py pointed at it (``install``), with no bot connected; stopped afterwards,
    and then discord.py's REST base and gateway URL must be the real ones again."""
    from sandbox import Sandbox  # imported here: the sandbox pulls in audio libraries most tests do not need

    async with Sandbox() as started:
        yield started
    assert discord.http.Route.BASE == REAL_BASE
    assert discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY == REAL_GATEWAY
