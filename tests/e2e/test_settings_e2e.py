"""Settings per guild and channel (/settings) and forgetting (/forget), through the sandbox with the real client."""

from __future__ import annotations

import io
import sqlite3

from sandbox import ALICE_USER_ID, BOB_USER_ID, run_playground
from tests.e2e.conftest import ADMINS_ONLY, ephemeral_replies
from tests.support.bot_harness import running_bot


def system_prompt(request: dict) -> str:
    """The system message of a chat request the Ollama stand-in received."""
    return next(message["content"] for message in request["messages"] if message["role"] == "system")


async def test_members_cannot_change_settings_or_forget_a_channel(make_harness):
    harness = await make_harness()
    for command, options in (("settings show", {}), ("settings persona", {"text": "Be rude."}),
                             ("forget channel", {})):
        _, events = await harness.answer("alice", command, options)
        assert ephemeral_replies(events) == [ADMINS_ONLY], command
    assert await harness.sandbox.autocomplete("alice", "settings model", focused="name") == []
    await harness.answer("alice", "chat", {"message": "hi"})
    assert system_prompt(harness.ollama.chat_requests[-1]) == harness.settings.SYSTEM_PROMPT


async def test_persona_per_channel_and_guild_is_used_shown_and_survives_a_restart(make_harness):
    harness = await make_harness()
    _, events = await harness.answer("admin", "settings persona", {"text": "You are a pirate.", "scope": "guild"})
    assert ephemeral_replies(events) == ["Persona set for this server."]
    await harness.answer("admin", "settings persona", {"text": "You are a librarian."})  # this channel only
    await harness.answer("alice", "chat", {"message": "hello"})
    assert system_prompt(harness.ollama.chat_requests[-1]) == "You are a librarian."
    await harness.answer("bob", "ask", {"question": "who are you?"}, channel="random")
    assert system_prompt(harness.ollama.chat_requests[-1]).startswith("You are a pirate.")
    _, events = await harness.answer("admin", "settings show")
    shown = ephemeral_replies(events)[0]
    assert "You are a librarian." in shown and "(set for this channel)" in shown
    assert f"`{harness.settings.CHAT_MODEL}` (default)" in shown

    await harness.bot.close()
    async with running_bot(harness.sandbox, harness.settings):  # same DATA_DIR
        await harness.answer("alice", "chat", {"message": "still there?"})
        assert system_prompt(harness.ollama.chat_requests[-1]) == "You are a librarian."
        await harness.answer("admin", "settings reset", {"setting": "persona"})
        await harness.answer("alice", "chat", {"message": "and now?"})
        assert system_prompt(harness.ollama.chat_requests[-1]) == "You are a pirate."


async def test_model_is_autocompleted_checked_and_used(make_harness):
    harness = await make_harness()
    harness.ollama.models.append("qwen3:4b")
    choices = await harness.sandbox.autocomplete("admin", "settings model", focused="name")
    assert [choice["value"] for choice in choices] == ["llama3.2:latest", "nomic-embed-text:latest", "qwen3:4b"]
    choices = await harness.sandbox.autocomplete("admin", "settings model", {"name": "QW"}, focused="name")
    assert choices == [{"name": "qwen3:4b", "value": "qwen3:4b"}]
    out = io.StringIO()
    await run_playground(harness.sandbox, lines=["as admin", "complete /settings model name: llama"], json_mode=False,
                         out=out, settle_s=0.15, max_wait_s=5)
    assert "-- choices: llama3.2:latest" in out.getvalue().splitlines()

    _, events = await harness.answer("admin", "settings model", {"name": "mistral"})
    assert "`ollama pull mistral`" in ephemeral_replies(events)[-1]
    _, events = await harness.answer("admin", "settings model", {"name": "nomic-embed-text"})
    assert "cannot chat" in ephemeral_replies(events)[-1]
    _, events = await harness.answer("admin", "settings model", {"name": "qwen3:4b"})
    assert ephemeral_replies(events)[-1] == "Chat model set to `qwen3:4b` for this channel."

    await harness.answer("alice", "chat", {"message": "which model?"})
    assert harness.ollama.chat_requests[-1]["model"] == "qwen3:4b"
    await harness.answer("alice", "chat", {"message": "and here?"}, channel="random")
    assert harness.ollama.chat_requests[-1]["model"] == harness.settings.CHAT_MODEL


async def test_autocomplete_is_empty_when_ollama_is_down(make_harness):
    harness = await make_harness()
    await harness.ollama.stop()
    assert await harness.sandbox.autocomplete("admin", "settings model", {"name": "ll"}, focused="name") == []


async def test_a_free_channel_answers_plain_messages_but_not_other_channels(make_harness):
    harness = await make_harness(CHAT_COOLDOWN_S=60)
    _, events = await harness.answer("admin", "settings free-channel", {"enabled": True})
    assert ephemeral_replies(events) == ["Free channel on: I will answer every message for this channel."]
    said = await harness.sandbox.send_message("alice", "general", "what is a free channel?")
    await harness.settle()
    reply = harness.bot_messages()[-1]
    assert reply["reference_id"] == said["id"]
    assert reply["content"] == "You said: what is a free channel?"

    requests = len(harness.ollama.chat_requests)
    await harness.sandbox.send_message("bob", "random", "nobody asked the bot here")
    await harness.sandbox.send_message("bob", "general", "   ")  # nothing to answer
    await harness.sandbox.send_message("alice", "general", "too soon?")  # the per-member cooldown still holds
    await harness.settle()
    assert harness.bot_messages(channel="random") == []
    assert harness.bot_messages()[-1]["content"].startswith("Slow down")
    assert len(harness.ollama.chat_requests) == requests


def rows_of(db_path, author_id: int) -> list[tuple]:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT role, content FROM messages WHERE author_id = ?", (author_id,)).fetchall()


async def test_forget_me_deletes_the_members_messages_and_the_answers_to_them(make_harness):
    harness = await make_harness()
    await harness.answer("alice", "chat", {"message": "my secret is 42"})
    await harness.answer("bob", "chat", {"message": "bob was here"})
    await harness.answer("alice", "chat", {"message": "remember my secret"}, channel="random")
    assert len(rows_of(harness.settings.db_path, ALICE_USER_ID)) == 2

    _, events = await harness.answer("alice", "forget me")
    assert ephemeral_replies(events) == ["Forgotten: 2 of your messages and 2 of my answers to them."]
    with sqlite3.connect(harness.settings.db_path) as db:
        rows = db.execute("SELECT author_id, role, content FROM messages ORDER BY id").fetchall()
    assert rows == [(BOB_USER_ID, "user", "bob was here"), (None, "assistant", "You said: bob was here")]
    assert not any("42" in content for *_, content in rows)

    _, events = await harness.answer("admin", "forget channel")
    assert ephemeral_replies(events)[-1] == "Forgotten: 2 messages of this channel."
    with sqlite3.connect(harness.settings.db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone() == (0,)
