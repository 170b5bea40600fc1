"""The sandbox's state across runs (``Sandbox(state_path=...)``, what the playground uses): saved and loaded again with
the same ids, threads (archived ones too), messages (authors, roles, replies, attachment metadata), commands and
usable interaction tokens; a file that cannot be used is set aside; ``Sandbox()`` alone keeps nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import discord
import pytest

from sandbox import GENERAL_CHANNEL_ID, Sandbox
from sandbox.guild import ADMIN_ROLE_ID, CHANNELS, MEMBERS
from sandbox.state import FORMAT, VERSION
from tests.support.bot_harness import running_client

COMMANDS = [{"name": "ping", "description": "Ping", "type": 1}, {"name": "Inspect", "type": 3}]


async def fill(sb: Sandbox) -> dict[str, int]:
    """Commands, two threads (one archived), messages by a member with a role, a reply with a file; their ids."""
    sb.store_commands(None, COMMANDS)
    question = await sb.send_message("alice", "general", "open a thread here")
    thread = await sb.create_thread(MEMBERS["alice"], CHANNELS["general"], "kept thread",
                                    message=sb.messages[question["id"]])
    other = await sb.create_thread(MEMBERS["bob"], CHANNELS["random"], "old thread")
    await sb.archive_thread("old thread")
    by_admin = await sb.send_message("admin", "kept thread", "an admin speaks")
    reply = await sb.send_message("bob", "kept thread", "a reply", reply_to=by_admin["id"],
                                  attachments=[("notes.txt", b"hello")])
    return {"question": question["id"], "thread": thread.id, "other": other.id, "by_admin": by_admin["id"],
            "reply": reply["id"]}


async def test_a_second_sandbox_on_the_same_file_has_the_same_discord(tmp_path: Path):
    path = tmp_path / "sandbox.json"
    async with Sandbox(state_path=path) as first:
        ids = await fill(first)
        commands = {c["name"]: c["id"] for c in first.commands}
        views = first.channel_messages("kept thread")
        last_id = first.last_snowflake
    saved = json.loads(path.read_text())
    assert (saved["format"], saved["version"]) == (FORMAT, VERSION)

    async with Sandbox(state_path=path) as second:
        assert second.state_problem is None
        assert second.state_summary == "2 threads, 3 messages, 2 commands"
        assert {c["name"]: c["id"] for c in second.commands} == commands
        assert second.sync_count == 0  # nothing synced in this run yet
        second.store_commands(None, COMMANDS)  # a sync of the same commands keeps their ids, as Discord does
        assert {c["name"]: c["id"] for c in second.commands} == commands
        kept, old = second.threads[ids["thread"]], second.threads[ids["other"]]
        assert (kept.id, kept.name, kept.parent.id, kept.owner.name, kept.archived) == (
            ids["question"], "kept thread", GENERAL_CHANNEL_ID, "alice", False)
        assert (old.name, old.parent.name, old.archived) == ("old thread", "random", True)
        assert second.channel_messages("kept thread") == views
        by_admin, reply = second.messages[ids["by_admin"]], second.messages[ids["reply"]]
        assert by_admin.author.role_ids == (ADMIN_ROLE_ID,)
        assert reply.payload["message_reference"]["message_id"] == str(ids["by_admin"])
        assert reply.payload["referenced_message"]["content"] == "an admin speaks"
        assert [a["filename"] for a in reply.payload["attachments"]] == ["notes.txt"]
        assert second.snowflake() > last_id
        # Sending in the archived thread unarchives it, as after any restart of Discord.
        await second.send_message("bob", "old thread", "anyone?")
        assert not second.threads[ids["other"]].archived


async def test_a_client_of_the_second_sandbox_sees_the_threads_and_the_messages(tmp_path: Path):
    path = tmp_path / "sandbox.json"
    async with Sandbox(state_path=path) as first:
        ids = await fill(first)
        async with running_client(first), aiohttp.ClientSession() as http:
            handle = await first.invoke("alice", "ping")
            deferred = await http.post(f"{first.api_base}/interactions/{handle.interaction_id}/{handle.token}/callback",
                                       json={"type": 5}, headers={"Authorization": f"Bot {first.bot_token}"})
            assert deferred.status == 204
    async with Sandbox(state_path=path) as second, running_client(second) as client:
        thread = client.get_channel(ids["thread"])  # an active thread: in GUILD_CREATE
        assert isinstance(thread, discord.Thread) and thread.name == "kept thread"
        assert client.get_channel(ids["other"]) is None  # archived: not in GUILD_CREATE, as on Discord
        archived = await client.fetch_channel(ids["other"])
        assert isinstance(archived, discord.Thread) and archived.archived
        message = await thread.fetch_message(ids["by_admin"])
        assert message.author.id == MEMBERS["admin"].id and message.content == "an admin speaks"
        commands = await client.http.get_global_commands(second.application_id)
        assert sorted(c["name"] for c in commands) == ["Inspect", "ping"]
        # The interaction's token still works for its 15 minutes: a kept question can be answered after a restart.
        webhook = discord.Webhook.partial(second.application_id, handle.token, client=client)
        sent = await webhook.send("answered after the restart", wait=True)
        assert sent.content == "answered after the restart"
        assert [m["content"] for m in second.channel_messages("general")][-1] == "answered after the restart"


async def test_changes_are_written_soon_and_fresh_starts_empty(tmp_path: Path):
    path = tmp_path / "sandbox.json"
    async with Sandbox(state_path=path) as first:
        await fill(first)
        # Written within STATE_SAVE_DELAY_S (1 s), before any stop: a crash now would lose nothing.
        def saved_threads() -> int:
            return len(json.loads(path.read_text())["threads"]) if path.exists() else 0

        for _ in range(50):  # up to 5 s
            if saved_threads() == 2:
                break
            await asyncio.sleep(0.1)
        assert saved_threads() == 2
    async with Sandbox(state_path=path, fresh=True) as fresh:
        assert fresh.threads == {} and fresh.commands == [] and fresh.state_summary is None
    assert json.loads(path.read_text())["threads"] == []  # overwritten at the end


@pytest.mark.parametrize(("content", "why"), [
    ("{not json", "not valid JSON"),
    (json.dumps({"format": FORMAT, "version": VERSION + 1}), f"newer version (format {VERSION + 1}"),
    (json.dumps({"format": FORMAT, "version": VERSION, "guild_id": 1100000000000000001}), "damaged"),
    (json.dumps([1, 2]), "not a saved sandbox state"),
])
async def test_a_file_that_cannot_be_used_is_set_aside_and_the_sandbox_starts_empty(tmp_path: Path, content, why):
    path = tmp_path / "sandbox.json"
    path.write_text(content)
    async with Sandbox(state_path=path) as sb:
        assert sb.threads == {} and sb.commands == []
        [aside] = await asyncio.to_thread(lambda: list(tmp_path.glob("sandbox.json.unreadable-*")))
        assert aside.read_text() == content  # kept as it was, for its owner to look at
        assert sb.state_problem is not None and "\n" not in sb.state_problem
        assert why in sb.state_problem and aside.name in sb.state_problem
    assert json.loads(path.read_text())["format"] == FORMAT  # a new, good state in its place


async def test_a_plain_sandbox_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    async with Sandbox() as sb:
        await fill(sb)
        assert sb.state_path is None and sb.state_summary is None
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []
    async with Sandbox() as again:
        assert again.threads == {} and again.messages == {}
