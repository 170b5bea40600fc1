"""Discord's HTTP rate limits in the sandbox (``sandbox/ratelimits.py``): the headers, the 429s, the buckets' keys,
the global limit and its exemption for interaction endpoints, and discord.py waiting them out as on Discord."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import discord
import pytest

from sandbox import GENERAL_CHANNEL_ID, RANDOM_CHANNEL_ID, Sandbox
from sandbox.ratelimits import RateLimitSettings

pytestmark = pytest.mark.asyncio


async def raw(sandbox: Sandbox, session: aiohttp.ClientSession, method: str, path: str,
              body: dict | None = None) -> tuple[int, dict[str, str], dict]:
    """One request as a plain HTTP client sends it: (status, headers, JSON body)."""
    headers = {"Authorization": f"Bot {sandbox.bot_token}"}
    async with session.request(method, sandbox.api_base + path, json=body, headers=headers) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


async def test_message_bucket_headers_and_429(sandbox: Sandbox) -> None:
    sandbox.rate_limits.settings.message_window_s = 2.0
    async with aiohttp.ClientSession() as session:
        seen = [await raw(sandbox, session, "POST", f"/channels/{GENERAL_CHANNEL_ID}/messages", {"content": f"m{i}"})
                for i in range(5)]
        assert [s for s, _, _ in seen] == [200] * 5
        assert [h["X-RateLimit-Remaining"] for _, h, _ in seen] == ["4", "3", "2", "1", "0"]
        first = seen[0][1]
        assert first["X-RateLimit-Limit"] == "5" and first["Via"] == "1.1 google"
        assert 1.9 < float(first["X-RateLimit-Reset-After"]) <= 2.0
        assert abs(float(first["X-RateLimit-Reset"]) - (time.time() + 2.0)) < 0.5
        # The sixth message is refused, and changes nothing.
        status, headers, body = await raw(sandbox, session, "POST", f"/channels/{GENERAL_CHANNEL_ID}/messages",
                                          {"content": "m5"})
        assert status == 429
        assert headers["X-RateLimit-Bucket"] == first["X-RateLimit-Bucket"]
        assert headers["X-RateLimit-Scope"] == "user" and headers["X-RateLimit-Remaining"] == "0"
        assert body["message"] == "You are being rate limited." and body["global"] is False
        assert 0 < body["retry_after"] <= 2.0 and int(headers["Retry-After"]) >= body["retry_after"]
        assert [m["content"] for m in sandbox.channel_messages("general")] == [f"m{i}" for i in range(5)]
        # Editing is another route, with its own bucket (another X-RateLimit-Bucket).
        message_id = seen[0][2]["id"]
        status, headers, _ = await raw(sandbox, session, "PATCH",
                                       f"/channels/{GENERAL_CHANNEL_ID}/messages/{message_id}", {"content": "x"})
        assert status == 200 and headers["X-RateLimit-Remaining"] == "4"
        assert headers["X-RateLimit-Bucket"] != first["X-RateLimit-Bucket"]
        # The major parameter: another channel has its own bucket.
        status, _, _ = await raw(sandbox, session, "POST", f"/channels/{RANDOM_CHANNEL_ID}/messages", {"content": "y"})
        assert status == 200
        # After retry_after the window is new.
        await asyncio.sleep(body["retry_after"])
        status, headers, _ = await raw(sandbox, session, "POST", f"/channels/{GENERAL_CHANNEL_ID}/messages",
                                       {"content": "m5"})
        assert status == 200 and headers["X-RateLimit-Remaining"] == "4"
    assert sandbox.rate_limits.served_429 == 1
    hit = sandbox.rate_limits.hits[0]
    assert hit.scope == "user" and hit.route == f"POST /channels/{GENERAL_CHANNEL_ID}/messages"


async def test_global_limit_spares_interaction_endpoints(sandbox: Sandbox) -> None:
    sandbox.rate_limits.settings.global_limit = 3
    async with aiohttp.ClientSession() as session:
        statuses = [(await raw(sandbox, session, "GET", f"/channels/{GENERAL_CHANNEL_ID}"))[0] for _ in range(3)]
        assert statuses == [200] * 3
        status, headers, body = await raw(sandbox, session, "GET", f"/channels/{RANDOM_CHANNEL_ID}")
        assert status == 429 and body["global"] is True
        assert headers["X-RateLimit-Global"] == "true" and headers["X-RateLimit-Scope"] == "global"
        # An interaction's webhook is not under the global limit: Discord answers it (here 404, unknown token).
        status, _, _ = await raw(sandbox, session, "GET",
                                 f"/webhooks/{sandbox.application_id}/no-such-token/messages/@original")
        assert status == 404
    assert sandbox.rate_limits.served_429 == 1 and sandbox.rate_limits.hits[0].scope == "global"


async def test_discord_py_waits_out_the_bucket_and_every_edit_lands(sandbox: Sandbox,
                                                                     client: discord.Client) -> None:
    """Twelve quick edits of one message: discord.py reads the headers, waits before the bucket is empty (no 429)
    and every edit arrives, in order."""
    sandbox.rate_limits.settings.message_window_s = 0.5
    channel = client.get_channel(GENERAL_CHANNEL_ID)
    message = await channel.send("0")
    started = time.monotonic()
    for i in range(1, 13):
        await message.edit(content=str(i))
    assert time.monotonic() - started >= 0.9  # 13 requests at 5 per 0.5 s: at least two windows waited
    assert sandbox.messages[message.id].payload["content"] == "12"
    assert sandbox.rate_limits.served_429 == 0


async def test_discord_py_retries_after_a_429(sandbox: Sandbox, client: discord.Client) -> None:
    """A request discord.py could not foresee (the bucket emptied by someone else: here a plain HTTP client with the
    same token) gets a 429, which discord.py waits out and retries: the message lands."""
    sandbox.rate_limits.settings.message_window_s = 0.5
    channel = client.get_channel(GENERAL_CHANNEL_ID)
    await channel.send("0")  # discord.py learns the bucket: 4 remaining
    async with aiohttp.ClientSession() as session:
        for i in range(4):
            await raw(sandbox, session, "POST", f"/channels/{GENERAL_CHANNEL_ID}/messages", {"content": f"other{i}"})
    sent = await channel.send("after")
    assert sandbox.messages[sent.id].payload["content"] == "after"
    assert sandbox.rate_limits.served_429 == 1


async def test_rate_limits_can_be_off() -> None:
    async with Sandbox(rate_limits=False) as sandbox, aiohttp.ClientSession() as session:
        for i in range(8):
            status, headers, _ = await raw(sandbox, session, "POST", f"/channels/{GENERAL_CHANNEL_ID}/messages",
                                           {"content": str(i)})
            assert status == 200 and "X-RateLimit-Limit" not in headers
    async with Sandbox(rate_limits=RateLimitSettings(message_limit=2)) as sandbox, \
            aiohttp.ClientSession() as session:
        statuses = [(await raw(sandbox, session, "POST", f"/channels/{GENERAL_CHANNEL_ID}/messages",
                               {"content": str(i)}))[0] for i in range(3)]
        assert statuses == [200, 200, 429]
