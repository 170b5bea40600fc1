"""Attachments end to end: a text file on a mention reaches the model with its name; binary, oversized and unknown
files are refused in one sentence; an image reaches a model that can see, and otherwise the bot names one that can."""

from __future__ import annotations

import asyncio
import base64

from sandbox.guild import GENERAL_CHANNEL_ID
from tests.e2e.conftest import Harness

# A 1x1 PNG.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
                       "AAAABJRU5ErkJggg==")


async def bot_reply(harness: Harness, text_part: str, timeout: float = 10.0) -> str:
    """The content of the bot's message in #general containing ``text_part``, once it stopped streaming."""
    async def poll() -> str:
        while True:
            for message in harness.sandbox.channel_messages("general"):
                if message["author"] == "Assistant" and text_part in message["content"] \
                        and not message["content"].endswith("▌"):
                    return message["content"]
            await asyncio.sleep(0.05)
    return await asyncio.wait_for(poll(), timeout)


async def mention_with(harness: Harness, text: str, *files: tuple[str, bytes]) -> None:
    await harness.sandbox.send_message("alice", "general", text, mention_bot=True, attachments=list(files))


async def test_a_text_attachment_reaches_the_model_with_its_name_and_is_not_stored(make_harness):
    harness = await make_harness()
    await mention_with(harness, "what is the password?", ("notes.md", b"# Notes\nThe password is swordfish.\n"))
    await bot_reply(harness, "You said:")
    question = harness.ollama.chat_requests[-1]["messages"][-1]["content"]
    assert question.startswith("what is the password?")
    assert "`notes.md`" in question and "The password is swordfish." in question
    history = await harness.bot.conversations.history(GENERAL_CHANNEL_ID)
    assert history[0].content == "what is the password?\n[attached: notes.md]"


async def test_binary_unknown_and_oversized_files_are_refused_in_one_sentence(make_harness):
    harness = await make_harness(ATTACHMENT_MAX_BYTES=1000)
    await mention_with(harness, "read this", ("data.txt", b"\x00\x01\x02binary"))
    assert await bot_reply(harness, "`data.txt`") == (
        "`data.txt` looks like a binary file, not text, so I can't read it.")
    await mention_with(harness, "run this", ("setup.exe", b"MZ"))
    assert "I can't read `setup.exe`" in await bot_reply(harness, "`setup.exe`")
    await mention_with(harness, "summarize", ("big.txt", b"x" * 2000))
    assert await bot_reply(harness, "`big.txt`") == (
        "`big.txt` is 2,000 bytes, over my limit of 1,000 bytes (ATTACHMENT_MAX_BYTES).")
    assert harness.ollama.chat_requests == []


async def test_an_image_on_a_model_without_vision_names_one_that_can(make_harness, ollama):
    ollama.models.append("llava")
    harness = await make_harness()
    await mention_with(harness, "what is in this picture?", ("cat.png", PNG))
    assert await bot_reply(harness, "cannot see images") == (
        "The model `llama3.2` cannot see images; `llava:latest` can: an admin can switch with `/settings model`.")
    assert harness.ollama.chat_requests == []


async def test_an_image_reaches_a_vision_model(make_harness, ollama):
    ollama.models.append("llava")
    harness = await make_harness(CHAT_MODEL="llava")
    await mention_with(harness, "what is in this picture?", ("cat.png", PNG))
    await bot_reply(harness, "You said: what is in this picture?")
    assert ollama.received_images == [PNG]
