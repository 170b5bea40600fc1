"""The real bot (``AssistantBot``, the real discord.py client) running against a started sandbox.

Used by the end-to-end tests (``tests/e2e/conftest.py``) and the benchmarks::

    async with Sandbox() as sandbox, running_bot(sandbox, settings) as bot:
        await sandbox.invoke("alice", "chat", {"message": "hello"})
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from bot.client import AssistantBot
from config import Settings
from sandbox import Sandbox


@contextlib.asynccontextmanager
async def running_bot(
    sandbox: Sandbox, settings: Settings, *, ready_timeout_s: float = 20, close_timeout_s: float = 10
) -> AsyncIterator[AssistantBot]:
    """Start ``AssistantBot(settings)`` against ``sandbox`` (started and installed) and yield it once both sides
    are ready: the sandbox saw READY/GUILD_CREATE and the bot's ``wait_until_ready`` returned, each within
    ``ready_timeout_s`` seconds (TimeoutError otherwise). On exit the bot is closed and its ``start`` task
    awaited, within ``close_timeout_s`` seconds; an error that ended that task is raised then.
    """
    bot = AssistantBot(settings, connector=sandbox.client_connector())
    runner = asyncio.create_task(bot.start(sandbox.bot_token), name="assistant-bot")
    try:
        await sandbox.wait_ready(timeout=ready_timeout_s)
        await asyncio.wait_for(bot.wait_until_ready(), timeout=ready_timeout_s)
        yield bot
    finally:
        await bot.close()
        await asyncio.wait_for(runner, timeout=close_timeout_s)
