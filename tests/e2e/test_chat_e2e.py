"""Chat through the sandbox: commands, context, mentions, long answers, limits and backend failures."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

from bot.streaming import CURSOR
from sandbox import SandboxError
from tests.e2e.conftest import HeldAnswer, ephemeral_replies, shown
from tests.support.bot_harness import running_bot

EXPECTED_COMMANDS = {"chat", "ask", "reset", "docs"}


def remembering_responder(body: dict[str, Any]) -> str:
    """Answers with every user message it was sent, so the reply shows what context arrived."""
    said = [message["content"] for message in body["messages"] if message["role"] == "user"]
    return "I have heard: " + " | ".join(said)


async def test_commands_are_synced_once(make_harness):
    harness = await make_harness()
    names = {command["name"] for command in harness.sandbox.commands}
    assert EXPECTED_COMMANDS <= names
    docs = next(command for command in harness.sandbox.commands if command["name"] == "docs")
    assert {option["name"] for option in docs["options"]} == {"ask", "search", "list", "add", "remove", "reload"}
    assert harness.sandbox.sync_count == 1
    # Restarting with the same commands, where they are still registered, sends no second sync.
    await harness.bot.close()
    async with running_bot(harness.sandbox, harness.settings):
        assert harness.sandbox.sync_count == 1
    # A fresh sandbox has no commands, although DATA_DIR remembers the last sync: they are synced again.
    restarted = await make_harness()
    assert restarted.sandbox.sync_count == 1
    await restarted.answer("alice", "ask", {"question": "are you there?"})
    assert restarted.bot_messages()[-1]["content"].startswith("You said:")


async def test_chat_keeps_context_over_three_turns(make_harness):
    harness = await make_harness()
    harness.ollama.responder = remembering_responder
    turns = ["my name is Zed", "I live in Lisbon", "where do I live and what is my name?"]
    for turn in turns:
        interaction_id, _ = await harness.answer("alice", "chat", {"message": turn})
    final = harness.bot_messages(interaction_id)[-1]["content"]
    assert final == "I have heard: " + " | ".join(turns)
    last_request = harness.ollama.chat_requests[-1]
    assert last_request["options"]["num_ctx"] == harness.settings.LLM_NUM_CTX
    roles = [message["role"] for message in last_request["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]


async def test_mention_is_answered_and_a_reply_continues_the_conversation(make_harness):
    harness = await make_harness()
    harness.ollama.responder = remembering_responder
    first = await harness.sandbox.send_message("bob", "general", "hello there", mention_bot=True)
    await harness.settle()
    reply = harness.bot_messages()[-1]
    assert reply["reference_id"] == first["id"]
    assert reply["content"] == "I have heard: hello there"
    await harness.sandbox.send_message("bob", "general", "and again", reply_to=reply["id"])
    await harness.settle()
    assert harness.bot_messages()[-1]["content"] == "I have heard: hello there | and again"


async def test_long_answer_arrives_complete_in_messages_of_at_most_2000_characters(make_harness):
    harness = await make_harness()
    words = [f"word{i}" for i in range(900)]
    text = " ".join(words[:300]) + "\n\n" + " ".join(words[300:600]) + "\n\n" + " ".join(words[600:])
    assert len(text) > 5000
    harness.ollama.responder = lambda body: text
    interaction_id, events = await harness.answer("alice", "chat", {"message": "tell me everything"})
    messages = harness.bot_messages(interaction_id)
    assert len(messages) >= 3
    assert all(len(message["content"]) <= 2000 for message in messages)
    assert " ".join(message["content"] for message in messages).split() == words
    assert not any(CURSOR in message["content"] for message in messages)
    assert harness.sandbox.errors == []
    # The answer streamed: the first message was edited, not sent once at the end.
    assert any(event["event"] == "edit" for event in events)


async def test_streaming_edits_are_throttled(make_harness):
    # Rate limits off: this is STREAM_EDIT_INTERVAL_S alone. With them, the bucket (5 per 5 s) sets a slower pace than
    # 0.5 s and the planned edits are too few in 3 s to measure the interval (test_ratelimits_e2e.py tests those).
    harness = await make_harness(STREAM_EDIT_INTERVAL_S=0.5, rate_limits=False)
    harness.ollama.tokens_per_s = 40
    harness.ollama.responder = lambda body: " ".join(f"t{i}" for i in range(60))  # about 3 s of tokens
    interaction_id, events = await harness.answer("alice", "chat", {"message": "count"})
    times = [event["t_ms"] for event in events
             if event["event"] in ("message", "edit") and event.get("interaction_id") == interaction_id]
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    # every gap but the final flush respects the interval (a little scheduling slack allowed)
    assert len(times) >= 3 and all(gap >= 450 for gap in gaps[:-1]), gaps


def string_option_limits(commands: list[dict[str, Any]], prefix: str = "") -> dict[tuple[str, str], int | None]:
    """(command path, option name) -> max_length of every free-text option (a string without choices) in the
    synced command payloads."""
    limits: dict[tuple[str, str], int | None] = {}
    for command in commands:
        path = f"{prefix} {command['name']}".strip()
        options = command.get("options", [])
        limits.update(string_option_limits([o for o in options if o["type"] in (1, 2)], path))
        free_text = [o for o in options if o["type"] == 3 and not o.get("choices")]
        limits.update({(path, o["name"]): o.get("max_length") for o in free_text})
    return limits


async def test_discord_is_told_the_configured_length_limits(make_harness):
    harness = await make_harness(CHAT_MAX_CHARS=123, ASK_MAX_CHARS=234, SPEAK_MAX_CHARS=345, PERSONA_MAX_CHARS=456)
    assert string_option_limits(harness.sandbox.commands) == {
        ("chat", "message"): 123,
        ("ask", "question"): 234,
        ("docs ask", "question"): 234,
        ("docs search", "query"): 234,
        ("docs remove", "name"): 200,
        ("speak", "text"): 345,
        ("settings persona", "text"): 456,
        ("settings model", "name"): 200,
    }
    # Discord's client (the sandbox's, here) now refuses a longer message before it reaches the bot.
    with pytest.raises(SandboxError, match="1..123 characters"):
        await harness.command("alice", "chat", {"message": "x" * 124})


async def test_blank_chat_and_ask_are_refused_and_never_reach_the_model(make_harness):
    harness = await make_harness()
    for name, option, what in (("chat", "message", "Your message"), ("ask", "question", "Your question")):
        _, events = await harness.answer("alice", name, {option: "  \n\t "})
        assert ephemeral_replies(events) == [f"{what} is blank; write some text and try again."]
    assert harness.ollama.chat_requests == [] and harness.ollama.embed_calls == 0


async def test_over_long_message_and_cooldown_get_ephemeral_replies(make_harness):
    harness = await make_harness(CHAT_COOLDOWN_S=30, CHAT_MAX_CHARS=100)
    # A modified client ignores the advertised limit: the bot checks it again.
    handle = await harness.sandbox.invoke("bob", "chat", {"message": "x" * 101}, validate=False)
    events = await harness.settle(interaction_id=handle.interaction_id)
    assert ephemeral_replies(events) == [
        "Your message is 101 characters long; the limit is 100. Shorten it and try again."
    ]
    await harness.answer("bob", "chat", {"message": "hi"})
    _, events = await harness.answer("bob", "chat", {"message": "hi again"})
    [reply] = ephemeral_replies(events)
    assert reply.startswith("Slow down: you can use this command again in ")
    # The cooldown is per member: alice is not slowed down by bob.
    _, events = await harness.answer("alice", "chat", {"message": "hi"})
    assert ephemeral_replies(events) == []


async def test_reset_needs_manage_messages_and_clears_the_conversation(make_harness):
    harness = await make_harness()
    harness.ollama.responder = remembering_responder
    await harness.answer("alice", "chat", {"message": "remember the number 7"})
    _, events = await harness.answer("alice", "reset")
    assert ephemeral_replies(events) == ["You need the Manage Messages permission to use this command."]
    _, events = await harness.answer("admin", "reset")
    assert ephemeral_replies(events) == ["Conversation cleared (2 messages forgotten)."]
    interaction_id, _ = await harness.answer("alice", "chat", {"message": "what number?"})
    assert harness.bot_messages(interaction_id)[-1]["content"] == "I have heard: what number?"


async def test_ollama_down_gives_a_clear_reply(make_harness):
    harness = await make_harness(OLLAMA_HOST="http://127.0.0.1:9")  # nothing listens on the discard port
    interaction_id, _ = await harness.answer("alice", "chat", {"message": "hello"})
    content = harness.bot_messages(interaction_id)[-1]["content"]
    assert "could not be reached" in content and "ollama serve" in content


@pytest.mark.timing  # within the timeout
async def test_ollama_hanging_gives_a_clear_reply_within_the_timeout(make_harness):
    harness = await make_harness(LLM_TIMEOUT_S=1.5)
    harness.ollama.fail_chat = "hang"
    started = time.monotonic()
    interaction_id, _ = await harness.answer("alice", "chat", {"message": "hello"})
    content = harness.bot_messages(interaction_id)[-1]["content"]
    assert re.search(r"did not answer within 1\.5 s", content), content
    assert time.monotonic() - started < 1.5 + 3  # the timeout, plus the harness' quiet period and slack


async def test_missing_model_says_how_to_pull_it(make_harness):
    harness = await make_harness(CHAT_MODEL="mistral")
    interaction_id, _ = await harness.answer("alice", "ask", {"question": "hi"})
    assert "`ollama pull mistral`" in harness.bot_messages(interaction_id)[-1]["content"]


async def test_answers_never_break_discord_limits(make_harness):
    harness = await make_harness()
    harness.ollama.responder = lambda body: "```python\n" + "print('hello world')\n" * 300 + "```"
    interaction_id, _ = await harness.answer("alice", "chat", {"message": "code please"})
    messages = harness.bot_messages(interaction_id)
    assert len(messages) >= 3 and all(message["content"].count("```") % 2 == 0 for message in messages)
    assert harness.sandbox.errors == []


async def test_commands_during_shutdown_get_a_clear_reply(make_harness):
    harness = await make_harness()
    harness.bot.shutting_down = True  # what close() sets first, before it cancels the running work
    _, events = await harness.answer("alice", "chat", {"message": "hello"})
    assert ephemeral_replies(events) == ["The bot is shutting down; try again in a minute."]
    assert harness.ollama.chat_requests == []
    harness.bot.shutting_down = False


async def test_a_busy_channel_queues_with_a_notice_then_refuses_past_the_bound(make_harness):
    harness = await make_harness(CHAT_QUEUE_MAX=1, LLM_TIMEOUT_S=60)
    held = harness.ollama.responder = HeldAnswer()
    first = await harness.sandbox.invoke("alice", "chat", {"message": "first"})
    await asyncio.wait_for(held.arrived.wait(), 20)  # alice's answer is being written
    second = await harness.sandbox.invoke("bob", "chat", {"message": "second"})
    await harness.sandbox.wait_for(shown(second, "Queued: 1 ahead of you"), since=second, timeout=20)
    third = await harness.sandbox.invoke("owner", "chat", {"message": "third"})
    refusal = await harness.sandbox.wait_for(
        lambda event: event["event"] == "message" and event.get("interaction_id") == third.interaction_id,
        since=third, timeout=20,
    )
    assert refusal["ephemeral"]
    assert refusal["content"] == "Too many messages are waiting for an answer in this channel; try again shortly."
    assert len(harness.ollama.chat_requests) == 1  # only alice's message reached the model so far
    held.release.set()
    await harness.sandbox.wait_for(shown(second, "You said: second"), since=second, timeout=20)
    await harness.settle(interaction_id=second.interaction_id)  # and no answer is still streaming
    # The notice became the answer: one message, in order after alice's.
    assert [m["content"] for m in harness.bot_messages(second.interaction_id)] == ["You said: second"]
    assert [m["content"] for m in harness.bot_messages(first.interaction_id)] == ["You said: first"]
    assert [r["messages"][-1]["content"] for r in harness.ollama.chat_requests] == ["first", "second"]


async def test_a_queued_mention_is_told_its_place_and_then_answered_in_the_same_reply(make_harness):
    harness = await make_harness(LLM_TIMEOUT_S=60)
    held = harness.ollama.responder = HeldAnswer()
    await harness.command("alice", "chat", {"message": "first"})
    await asyncio.wait_for(held.arrived.wait(), 20)
    position = harness.sandbox.event_position
    mention = await harness.sandbox.send_message("bob", "general", "second", mention_bot=True)
    notice = await harness.sandbox.wait_for(
        lambda e: e["event"] == "message" and e.get("reference_id") == mention["id"], since=position, timeout=20)
    assert notice["content"].startswith("⏳ Queued: 1 ahead of you")
    held.release.set()
    await harness.sandbox.wait_for(
        lambda e: e["event"] == "edit" and e["message_id"] == notice["message_id"]
        and e["content"] == "You said: second",
        since=position, timeout=20,
    )
    assert [m["content"] for m in harness.bot_messages() if m["reference_id"] == mention["id"]] == ["You said: second"]


async def test_a_command_acknowledged_too_late_is_one_warning_not_an_internal_error(make_harness, caplog):
    # What an overloaded bot meets in a burst: Discord refuses the late defer with 10062 "Unknown interaction".
    harness = await make_harness()
    harness.sandbox.interaction_deadline_s = 0.0
    handle = await harness.sandbox.invoke("alice", "ask", {"question": "are you there?"})
    await harness.sandbox.wait_for(lambda e: e["event"] == "error" and "10062" in str(e), since=handle, timeout=20)
    harness.sandbox.interaction_deadline_s = 3.0
    await harness.answer("bob", "ask", {"question": "and now?"})  # the bot is still fine
    expired = [r for r in caplog.records if "expired before it was acknowledged" in r.getMessage()]
    assert len(expired) == 1 and expired[0].levelname == "WARNING"
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]
    assert not [r for r in caplog.records if "could not deliver error reply" in r.getMessage()]
    assert harness.ollama.chat_requests and len(harness.ollama.chat_requests) == 1
