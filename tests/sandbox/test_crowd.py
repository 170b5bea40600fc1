"""A crowd of members: numbered members (``member-1`` .. ``member-100000``), made when first named, and a flood.

They must look to discord.py exactly like the fixed plain members: the real bot answers them and refuses them
what it refuses a plain member; a bare client sees a guild member with the right id, name, roles and join date.
Under a flood of their commands, an older interaction's token stays usable, as on Discord.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import aiohttp
import discord
import pytest

from bot.streaming import CURSOR
from sandbox import GUILD_ID, Sandbox, SandboxError, run_playground
from tests.e2e.conftest import ADMINS_ONLY, make_settings
from tests.fakes.ollama import FakeOllama
from tests.support.bot_harness import running_bot

NUMBERED_ID_BASE = 1100000000100000000  # member-N has the id NUMBERED_ID_BASE + N (docs/sandbox.md)


def reply_to(interaction_id: int, *, final: bool = True):
    """Matches a visible message or edit of the bot for this interaction (with ``final``: not still streaming)."""

    def match(event: dict) -> bool:
        return (
            event["event"] in ("message", "edit")
            and event["author"] == "Assistant"
            and event["interaction_id"] == interaction_id
            and not (final and event["content"].endswith(CURSOR))
        )

    return match


async def test_a_numbered_member_is_answered_in_the_playground_and_is_not_an_admin(
    sandbox: Sandbox, ollama: FakeOllama, tmp_path: Path
) -> None:
    async with running_bot(sandbox, make_settings(tmp_path, ollama.url)):
        start = sandbox.event_position
        out = io.StringIO()
        lines = ["as member-4321", "in random", "/ask question: is anyone there?", "/docs reload"]
        assert await run_playground(sandbox, lines=lines, json_mode=True, out=out, settle_s=0.3, max_wait_s=30) == 0
        printed = [json.loads(line) for line in out.getvalue().splitlines()]
        assert not [e for e in printed if e["event"] == "usage_error"]
        commands = [e for e in sandbox.events(start) if e["event"] == "command"]
        assert [(e["user"], e["channel"], e["command"]) for e in commands] == [
            ("member-4321", "random", "ask"),
            ("member-4321", "random", "docs reload"),
        ]
        ask, reload = (e["interaction_id"] for e in commands)
        answer = await sandbox.wait_for(reply_to(ask), timeout=30, since=start)
        assert answer["content"] == "You said: is anyone there?" and not answer["ephemeral"]
        refusal = await sandbox.wait_for(reply_to(reload), timeout=30, since=start)
        assert refusal["ephemeral"] and refusal["content"] == ADMINS_ONLY
        assert ollama.embed_calls == 0  # nothing was reindexed for it
        assert sandbox.errors == []


async def test_discord_py_sees_a_numbered_member_as_a_plain_guild_member(
    sandbox: Sandbox, client: discord.Client
) -> None:
    guild = client.get_guild(GUILD_ID)
    assert guild is not None and guild.member_count == 1 + 4 + 100_000 and guild.large
    arrival = client.wait_for("message", timeout=10)  # listening from here (wait_for registers at once)
    posted = await sandbox.send_message("member-100000", "general", "hello from the crowd")
    message: discord.Message = await arrival
    author = message.author
    assert isinstance(author, discord.Member) and message.id == posted["id"]
    assert (author.id, author.name) == (NUMBERED_ID_BASE + 100000, "member-100000")
    assert author.roles == [guild.default_role] and not author.guild_permissions.manage_guild
    assert author.joined_at == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    fetched = await guild.fetch_member(NUMBERED_ID_BASE + 7)
    assert fetched.name == "member-7" and fetched.roles == [guild.default_role]


@pytest.mark.parametrize("name", ["member-0", "member-01", "member-100001", "member-x"])
async def test_names_outside_the_numbered_range_are_refused_with_the_valid_ones(sandbox: Sandbox, name: str) -> None:
    with pytest.raises(SandboxError, match=r"members are: owner, admin, alice, bob, member-1 \.\. member-100000"):
        await sandbox.send_message(name, "general", "hello")


async def test_a_reply_can_be_edited_after_thousands_of_newer_interactions(
    sandbox: Sandbox, client: discord.Client
) -> None:
    """Discord honours an interaction token for 15 minutes: a /chat queued behind a flood edits its reply late."""
    sandbox.store_commands(GUILD_ID, [{"name": "ping", "description": "Answer pong", "type": 1}])
    first = await sandbox.invoke("member-1", "ping")
    webhook = f"{sandbox.api_base}/webhooks/{sandbox.application_id}/{first.token}/messages/@original"
    async with aiohttp.ClientSession() as http:
        callback = f"{sandbox.api_base}/interactions/{first.interaction_id}/{first.token}/callback"
        async with http.post(callback, json={"type": 5}) as response:  # "thinking...", within the deadline
            assert response.status == 204
        for number in range(2, 1502):  # the flood: 1500 more members, each running a command
            await sandbox.invoke(f"member-{number}", "ping")
        async with http.patch(webhook, json={"content": "your turn came"}) as response:
            assert response.status == 200, await response.text()
    assert [m["content"] for m in sandbox.channel_messages("general")] == ["your turn came"]
    assert sandbox.errors == []
