"""Shared fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.ollama import FakeOllama


@pytest.fixture
async def ollama() -> AsyncIterator[FakeOllama]:
    """A FakeOllama on a random loopback port, with llama3.2 and nomic-embed-text pulled; stopped afterwards."""
    fake = FakeOllama()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
