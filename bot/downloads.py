"""Reading members' uploads (message attachments, attachment options) from Discord's CDN, with a deadline."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import discord

from services.errors import InvalidInput

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60.0  # reading an upload from Discord's CDN; aiohttp's own default would be 5 minutes


async def read_attachment(file: discord.Attachment, max_bytes: int) -> bytes:
    """The bytes of ``file``, read within DOWNLOAD_TIMEOUT_S.

    The caller checks ``file.size`` (Discord's own figure) against its limit before; a body longer than
    ``max_bytes`` all the same, a failed or late download, raise InvalidInput with one sentence to the member.
    """
    try:
        async with asyncio.timeout(DOWNLOAD_TIMEOUT_S):
            data = await file.read()
    except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
        log.warning("could not download attachment %s: %r", file.filename, exc)
        raise InvalidInput(f"The upload `{file.filename}` could not be read from Discord; upload it again.") from exc
    if len(data) > max_bytes:
        raise InvalidInput(f"`{file.filename}` is over the limit of {max_bytes:,} bytes.")
    return data
