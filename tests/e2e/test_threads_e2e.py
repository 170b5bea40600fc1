"""Threads end to end: /chat thread:True and a mention in a free channel open a thread named after the question,
where the bot answers every message with the thread's own history and the parent channel's settings; archived and
deleted threads cause no error."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sqlite3

from sandbox import run_playground
from tests.e2e.conftest import Harness

QUESTION = "how do I   brew\ncoffee with a French press?"
NAME = "how do I brew coffee with a French press?"


async def bot_said(harness: Harness, channel: str, text: str, timeout: float = 10.0) -> dict:
    """The bot's message in ``channel`` once its content is exactly ``text`` (streaming finished)."""
    async def poll() -> dict:
        while True:
            for message in harness.sandbox.channel_messages(channel):
                if message["author"] == "Assistant" and message["content"] == text:
                    return message
            await asyncio.sleep(0.05)
    return await asyncio.wait_for(poll(), timeout)


def said_to_model(harness: Harness) -> list[tuple[str, str]]:
    """(role, content) of the last chat request the model received."""
    return [(m["role"], m["content"]) for m in harness.ollama.chat_requests[-1]["messages"]]


async def open_thread(harness: Harness, member: str = "alice") -> dict:
    handle = await harness.sandbox.invoke(member, "chat", {"message": QUESTION, "thread": True})
    created = await harness.sandbox.wait_for(lambda e: e["event"] == "thread" and e["action"] == "create", since=handle)
    await bot_said(harness, created["thread"], f"You said: {QUESTION}")
    return created


async def test_chat_thread_opens_a_thread_named_after_the_question_and_answers_follow_ups_without_a_mention(
        make_harness):
    harness = await make_harness()
    created = await open_thread(harness)
    assert (created["thread"], created["parent"], created["by"]) == (NAME, "general", "Assistant")
    # The reply in the channel names the thread, which hangs off it.
    starter = next(m for m in harness.sandbox.channel_messages("general") if m["id"] == created["message_id"])
    assert NAME in starter["content"]

    await harness.sandbox.send_message("bob", NAME, "and with an AeroPress?")  # no mention
    await bot_said(harness, NAME, "You said: and with an AeroPress?")
    assert said_to_model(harness)[1:] == [("user", QUESTION), ("assistant", f"You said: {QUESTION}"),
                                          ("user", "and with an AeroPress?")]
    # The thread is its own conversation: the channel's is untouched, and a plain message there is not answered.
    await harness.sandbox.send_message("bob", "general", "anyone here?")
    await asyncio.sleep(0.5)
    assert len(harness.ollama.chat_requests) == 2


async def test_a_thread_has_its_parent_channels_persona(make_harness):
    harness = await make_harness()
    await harness.answer("admin", "settings persona", {"text": "You are a barista."})  # #general only
    await open_thread(harness)
    assert said_to_model(harness)[0] == ("system", "You are a barista.")
    await harness.sandbox.send_message("bob", NAME, "and tea?")
    await bot_said(harness, NAME, "You said: and tea?")
    assert said_to_model(harness)[0] == ("system", "You are a barista.")


async def test_a_mention_in_a_free_channel_opens_a_thread_from_the_question(make_harness):
    harness = await make_harness()
    await harness.answer("admin", "settings free-channel", {"enabled": True})
    said = await harness.sandbox.send_message("alice", "general", "what grind for espresso?", mention_bot=True)
    created = await harness.sandbox.wait_for(lambda e: e["event"] == "thread" and e["action"] == "create")
    assert (created["thread"], created["message_id"]) == ("what grind for espresso?", said["id"])
    await bot_said(harness, created["thread"], "You said: what grind for espresso?")


async def test_an_archived_thread_is_answered_and_a_deleted_one_forgotten_without_errors(make_harness, caplog):
    caplog.set_level(logging.WARNING)
    harness = await make_harness()
    created = await open_thread(harness)
    await harness.sandbox.archive_thread(NAME)
    await harness.sandbox.send_message("bob", NAME, "still there?")  # the member's post unarchives it, as on Discord
    await bot_said(harness, NAME, "You said: still there?")
    assert said_to_model(harness)[-1] == ("user", "still there?")

    await harness.sandbox.delete_thread(NAME)
    with contextlib.closing(sqlite3.connect(harness.settings.db_path)) as db:
        for _ in range(100):  # the bot forgets the thread when THREAD_DELETE arrives
            if not db.execute("SELECT count(*) FROM bot_threads").fetchone()[0]:
                break
            await asyncio.sleep(0.05)
        assert db.execute("SELECT count(*) FROM bot_threads").fetchone()[0] == 0
        stored = db.execute("SELECT count(*) FROM messages WHERE channel_id = ?", (created["thread_id"],)).fetchone()
        assert stored[0] == 0
    assert harness.sandbox.errors == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


async def test_playground_lines_post_in_a_thread_with_an_attachment_then_archive_and_delete_it(make_harness, tmp_path):
    harness = await make_harness()
    await open_thread(harness)
    notes = tmp_path / "notes.txt"
    notes.write_text("Grind: medium-coarse.\n")
    out = io.StringIO()
    await run_playground(harness.sandbox, lines=[
        f"in thread {NAME}", f"attach {notes}", "say what grind?", "archive thread", "say still there?",
        "delete thread", "say back in general"], json_mode=False, out=out, settle_s=0.3, max_wait_s=10)
    text = out.getvalue()
    assert f"[#{NAME}] alice: what grind?" in text and "    [file] notes.txt (22 bytes)" in text
    assert f"[#general] thread #{NAME} archived" in text and f"[#general] thread #{NAME} unarchived" in text
    assert f"[#general] thread #{NAME} deleted" in text and "[#general] alice: back in general" in text
    assert "`notes.txt`" in harness.ollama.chat_requests[1]["messages"][-1]["content"]
    assert harness.ollama.chat_requests[2]["messages"][-1]["content"] == "still there?"
