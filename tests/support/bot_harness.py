"""A discord.py client running against a started sandbox: the real bot (``running_bot``) or a plain
``discord.Client`` (``running_client``, for the sandbox's own tests).

Used by the end-to-end tests (``tests/e2e/conftest.py``), the sandbox tests and the benchmarks::

    async with Sandbox() as sandbox, running_bot(sandbox, settings) as bot:
        await sandbox.invoke("alice", "chat", {"message": "hello"})
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import discord

from bot.client import AssistantBot
from bot.opus import load_opus
from config import Settings
from sandbox import Sandbox
from services.speech.stt import Transcriber
from services.speech.tts import Synthesizer

GUILD_READY_TIMEOUT_S = 0.1


@contextlib.asynccontextmanager
async def running_bot(
    sandbox: Sandbox, settings: Settings, *, ready_timeout_s: float = 20, close_timeout_s: float = 10,
    synthesizer: Synthesizer | None = None, transcriber: Transcriber | None = None,
) -> AsyncIterator[AssistantBot]:
    """Start ``AssistantBot(settings)`` against ``sandbox`` (started and installed) and yield it once both sides
    are ready: the sandbox saw READY/GUILD_CREATE and the bot's ``wait_until_ready`` returned, each within
    ``ready_timeout_s`` seconds (TimeoutError otherwise). On exit the bot is closed and its ``start`` task
    awaited, within ``close_timeout_s`` seconds; an error that ended that task is raised then.
    ``synthesizer`` / ``transcriber``: speech models shared between bots (loaded once per test session).
    """
    bot = AssistantBot(settings, connector=sandbox.client_connector(), synthesizer=synthesizer,
                       transcriber=transcriber)
    # discord.py declares itself ready only once no GUILD_CREATE came for guild_ready_timeout (2 s): with Discord's
    # many guilds arriving one by one; the sandbox sends its one guild right after READY, so 2 s of every bot start
    # (over a hundred in the e2e tests) would be waiting for nothing. The sandbox's own clients wait 0.05 s.
    bot._connection.guild_ready_timeout = GUILD_READY_TIMEOUT_S
    runner = asyncio.create_task(bot.start(sandbox.bot_token), name="assistant-bot")
    try:
        await sandbox.wait_ready(timeout=ready_timeout_s)
        await asyncio.wait_for(bot.wait_until_ready(), timeout=ready_timeout_s)
        yield bot
    finally:
        await bot.close()
        await asyncio.wait_for(runner, timeout=close_timeout_s)


@contextlib.asynccontextmanager
async def running_client(sandbox: Sandbox, *, ready_timeout_s: float = 10) -> AsyncIterator[discord.Client]:
    """A plain ``discord.Client`` (default intents, libopus loaded for voice) connected to ``sandbox`` and ready;
    closed, and its ``start`` task awaited, on exit."""
    load_opus()  # the client's encoder needs it, as the bot's does
    client = discord.Client(
        intents=discord.Intents.default(), connector=sandbox.client_connector(), guild_ready_timeout=0.05
    )
    task = asyncio.create_task(client.start(sandbox.bot_token), name="sandbox-test-client")
    try:
        await sandbox.wait_ready(timeout=ready_timeout_s)
        await asyncio.wait_for(client.wait_until_ready(), ready_timeout_s)
        yield client
    finally:
        await client.close()
        await task
