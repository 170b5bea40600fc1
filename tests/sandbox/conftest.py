"""Fixtures of the sandbox tests: a plain discord.py client connected to the ``sandbox`` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator

import discord
import pytest

from sandbox import Sandbox
from tests.support.bot_harness import running_client


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[discord.Client]:
    async with running_client(sandbox) as client:
        yield client
