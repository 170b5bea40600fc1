"""The bot under Discord's rate limits (on by default in the sandbox: 5 requests per 5 s per channel for messages and
per interaction token, 50 per second in all): a long streamed answer plans its edits within its bucket, and members
asking at once in one channel, who share the channel's bucket, all get their whole answer and no error."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bot.streaming import CURSOR, INTERRUPTED
from tests.fakes.ollama import split_tokens

MEMBERS = [f"member-{n}" for n in range(1, 6)]


def long_answer(characters: int) -> str:
    """Words in paragraphs, about ``characters`` long."""
    words, length = [], 0
    while length < characters:
        words.append(f"word{len(words)}")
        length += len(words[-1]) + 1
    return "\n\n".join(" ".join(words[i:i + 100]) for i in range(0, len(words), 100))


def joined(messages: list[dict[str, Any]]) -> list[str]:
    return " ".join(message["content"] for message in messages).split()


async def until(condition, timeout: float = 60.0) -> None:
    """Poll ``condition()`` until it is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s")
        await asyncio.sleep(0.1)


async def test_a_4000_character_streamed_answer_keeps_to_its_bucket(make_harness):
    harness = await make_harness()  # STREAM_EDIT_INTERVAL_S 0.2: 5 edits a second if nothing planned them
    text = long_answer(4000)
    harness.ollama.tokens_per_s = len(split_tokens(text)) / 4  # about 4 s of streaming
    harness.ollama.responder = lambda body: text
    interaction_id, events = await harness.answer("alice", "chat", {"message": "tell me everything"}, timeout=40)
    messages = harness.bot_messages(interaction_id)
    assert joined(messages) == text.split() and len(messages) >= 2
    assert all(len(m["content"]) <= 2000 and CURSOR not in m["content"] for m in messages)
    first = messages[0]["id"]
    progress = [e for e in events if e["event"] == "edit" and e["message_id"] == first and CURSOR in e["content"]]
    assert progress, "the answer streamed: the first message showed it growing"
    # Planned: no request of the answer met a 429, and none waited on an empty bucket.
    assert harness.sandbox.rate_limits.served_429 == 0
    assert harness.bot.rate_limits.received_429 == 0
    assert harness.sandbox.errors == []


async def test_five_members_mentioning_the_bot_in_one_channel_at_once_all_get_their_answer(make_harness):
    """Their replies, queue notices and streamed edits share #general's bucket (5 per 5 s): every answer arrives
    whole, later rather than wrong, with no error shown."""
    harness = await make_harness()
    harness.ollama.tokens_per_s = 20  # each answer streams for about a second
    harness.ollama.responder = lambda body: "You said: " + body["messages"][-1]["content"] + " " + " ".join(
        f"and{i}" for i in range(12))
    sent = await asyncio.gather(*(harness.sandbox.send_message(member, "general", f"question of {member}",
                                                               mention_bot=True) for member in MEMBERS))
    asked = {message["id"]: member for message, member in zip(sent, MEMBERS, strict=True)}

    def answers() -> dict[str, str]:
        return {asked[m["reference_id"]]: m["content"] for m in harness.bot_messages()
                if m["reference_id"] in asked}

    def all_answered() -> bool:
        found = answers()
        return len(found) == len(MEMBERS) and all(c.startswith("You said:") and not c.endswith(CURSOR)
                                                  for c in found.values())

    await until(all_answered, timeout=90)
    for member, content in answers().items():
        assert content == f"You said: question of {member} " + " ".join(f"and{i}" for i in range(12))
    assert not any("⚠️" in m["content"] for m in harness.bot_messages())
    assert harness.sandbox.errors == []
    # Counted, whatever they were (the replies discord.py could not foresee on a shared bucket): the bot's count is
    # the sandbox's.
    assert harness.bot.rate_limits.received_429 == harness.sandbox.rate_limits.served_429


async def test_five_members_asking_at_once_in_one_channel_all_get_their_answer(make_harness):
    harness = await make_harness()
    harness.ollama.tokens_per_s = 20
    handles = await asyncio.gather(*(harness.sandbox.invoke(member, "ask", {"question": f"what of {member}"})
                                     for member in MEMBERS))

    def all_answered() -> bool:
        return all(
            (found := harness.bot_messages(h.interaction_id)) and found[-1]["content"].startswith("You said:")
            and not any(CURSOR in m["content"] for m in found) for h in handles)

    await until(all_answered, timeout=90)
    for handle, member in zip(handles, MEMBERS, strict=True):
        assert joined(harness.bot_messages(handle.interaction_id)) == f"You said: what of {member}".split()
    assert harness.sandbox.errors == []
    assert harness.bot.rate_limits.received_429 == harness.sandbox.rate_limits.served_429 == 0


async def test_shutdown_during_a_planned_stream_marks_the_answer_in_time(make_harness):
    """The last edit at shutdown finds room in the bucket: the streaming answer kept one request for it."""
    harness = await make_harness()
    harness.ollama.tokens_per_s = 30
    harness.ollama.responder = lambda body: " ".join(f"token{i}" for i in range(400))  # over 10 s of streaming
    handle = await harness.sandbox.invoke("alice", "chat", {"message": "a long story"})
    await harness.sandbox.wait_for(lambda e: e["event"] == "edit" and e.get("interaction_id") == handle.interaction_id
                                   and "token30" in e["content"], since=handle, timeout=20)
    started = time.monotonic()
    await harness.bot.close()
    assert time.monotonic() - started < harness.settings.SHUTDOWN_TIMEOUT_S
    last = harness.bot_messages(handle.interaction_id)[-1]["content"]
    assert last.endswith(INTERRUPTED) and CURSOR not in last
    assert harness.sandbox.rate_limits.served_429 == 0
