"""Privileged intents as Discord enforces them: a sandbox whose application is not granted the Message Content intent
refuses an IDENTIFY asking for it (4014), says so in its application flags, and hands the bot messages with blank
content, except those Discord documents as exceptions (its own, those that mention it, DMs)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest

from sandbox import BOT_USER_ID, GENERAL_CHANNEL_ID, Sandbox
from sandbox import guild as sim
from sandbox.messages import as_seen_by_bot
from tests.support.bot_harness import running_client

MESSAGE_CONTENT = 1 << 15
GUILD_MESSAGES = 1 << 9


@pytest.fixture
async def ungranted() -> AsyncIterator[Sandbox]:
    """A sandbox whose application lacks the Message Content intent (its Developer Portal toggle off)."""
    async with Sandbox(message_content_intent=False) as started:
        yield started


async def identify_close_code(sandbox: Sandbox, intents: int) -> int | None:
    """IDENTIFY with ``intents`` on a raw websocket; the close code the gateway answers with (None: READY came)."""
    async with aiohttp.ClientSession() as http, http.ws_connect(sandbox.gateway_url + "?v=10&encoding=json") as ws:
        assert (await ws.receive_json())["op"] == 10
        await ws.send_json({"op": 2, "d": {"token": sandbox.bot_token, "intents": intents}})
        message = await ws.receive(timeout=5)
        if message.type is aiohttp.WSMsgType.TEXT:
            assert message.json()["t"] == "READY"
            return None
        return ws.close_code


async def test_identify_asking_for_message_content_is_closed_with_4014(ungranted: Sandbox) -> None:
    assert await identify_close_code(ungranted, GUILD_MESSAGES | MESSAGE_CONTENT) == 4014
    assert await identify_close_code(ungranted, GUILD_MESSAGES) is None  # without it, the session starts


async def test_discord_py_raises_privileged_intents_required(ungranted: Sandbox) -> None:
    intents = discord.Intents.default()
    intents.message_content = True
    client = discord.Client(intents=intents, connector=ungranted.client_connector())
    with pytest.raises(discord.PrivilegedIntentsRequired):
        await asyncio.wait_for(client.start(ungranted.bot_token), timeout=10)
    await client.close()


async def test_application_flags_lack_message_content_when_not_granted(ungranted: Sandbox) -> None:
    async with running_client(ungranted) as client:
        flags = (await client.application_info()).flags
        ready_flags = client.application_flags  # READY's application.flags
    assert not flags.gateway_message_content and not flags.gateway_message_content_limited
    assert flags.gateway_presence_limited and flags.gateway_guild_members_limited
    assert ready_flags == flags


async def test_application_flags_have_message_content_when_granted(sandbox: Sandbox) -> None:
    async with running_client(sandbox) as client:
        flags = (await client.application_info()).flags
    assert flags.gateway_message_content_limited  # an application in fewer than 100 servers ticks the _LIMITED one


async def test_rest_blanks_content_except_for_mentions_and_the_bots_own(ungranted: Sandbox) -> None:
    async with running_client(ungranted) as client:
        plain = await ungranted.send_message("alice", "general", "secret words", attachments=[("a.txt", b"hi")])
        mention = await ungranted.send_message("bob", "general", "hey you", mention_bot=True)
        channel = client.get_channel(GENERAL_CHANNEL_ID)
        assert isinstance(channel, discord.TextChannel)
        own = await channel.send("the bot's own words", embed=discord.Embed(title="kept"))
        reply = await channel.send("answering alice", reference=channel.get_partial_message(plain["id"]))
        member_reply = await ungranted.send_message("alice", "general", "thanks", reply_to=own.id)  # pings the bot
        history = {m.id: m async for m in channel.history(limit=10)}
        fetched = await channel.fetch_message(plain["id"])
    blank = history[plain["id"]]
    assert (blank.content, blank.attachments, blank.embeds) == ("", [], [])
    assert fetched.content == "" and fetched.attachments == []
    assert history[mention["id"]].content == f"<@{BOT_USER_ID}> hey you"
    assert history[own.id].content == "the bot's own words" and history[own.id].embeds[0].title == "kept"
    assert history[member_reply["id"]].content == "thanks"  # a reply that pings the bot mentions it
    # The message the bot replied to comes inside its reply blanked, on its own terms.
    assert reply.reference is not None and isinstance(reply.reference.resolved, discord.Message)
    assert reply.reference.resolved.content == "" and reply.content == "answering alice"
    # Members still see everything: only what the application receives is blanked.
    shown = [m["content"] for m in ungranted.channel_messages("general")][:2]
    assert shown == ["secret words", f"<@{BOT_USER_ID}> hey you"]


async def test_gateway_blanks_content_for_a_session_without_the_intent(ungranted: Sandbox) -> None:
    async with running_client(ungranted) as client:  # default intents: no message_content
        received: asyncio.Queue[discord.Message] = asyncio.Queue()

        async def on_message(message: discord.Message) -> None:
            received.put_nowait(message)

        client.event(on_message)
        await ungranted.send_message("alice", "general", "secret words")
        await ungranted.send_message("bob", "general", "hey you", mention_bot=True)
        first, second = [await asyncio.wait_for(received.get(), 5) for _ in range(2)]
    assert first.content == "" and second.content == f"<@{BOT_USER_ID}> hey you"


def test_direct_messages_keep_their_content() -> None:
    # The sandbox's guild has no DM channel; the rule itself, as Discord documents it: content in DMs with the app.
    author = sim.MEMBERS["alice"]
    payload = {"id": "1", "author": sim.user_payload(author), "content": "psst", "mentions": [],
               "embeds": [{"title": "e"}], "attachments": [], "components": [], "poll": {"question": {"text": "?"}}}
    dm = sim.SimChannel(1, "dm", 1, 0)
    text = sim.CHANNELS["general"]
    assert as_seen_by_bot(payload, dm, content_intent=False, bot_user_id=BOT_USER_ID)["content"] == "psst"
    blank = as_seen_by_bot(payload, text, content_intent=False, bot_user_id=BOT_USER_ID)
    assert blank["content"] == "" and blank["embeds"] == [] and "poll" not in blank  # poll omitted, not emptied
    assert as_seen_by_bot(payload, text, content_intent=True, bot_user_id=BOT_USER_ID) is payload
