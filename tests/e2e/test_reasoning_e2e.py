"""Reasoning models through the sandbox with the real client: their thinking is never shown nor spoken; a guild can
have it attached to answers as a spoiler-marked file (/settings thinking)."""

from __future__ import annotations

import pytest

from sandbox.guild import GENERAL_CHANNEL_ID
from tests.e2e.conftest import ADMINS_ONLY, ephemeral_replies
from tests.support.voice_e2e import QUESTION, listening, posted, speech_pcm, wait_until

THOUGHT = "Thinking it over"  # how the Ollama stand-in's thinking starts (default_thinking_responder)


def answer_of(harness, interaction_id: int, channel: str = "general") -> dict:
    [message] = harness.bot_messages(interaction_id, channel)
    return message


def attached(harness, message: dict) -> dict[str, str]:
    """The files attached to ``message``: name -> text, as uploaded to the sandbox."""
    return {a["filename"]: harness.sandbox.attachments[int(a["url"].split("/")[-2])].data.decode()
            for a in message["attachments"]}


async def test_a_thinking_models_answer_shows_no_thinking_in_chat_and_ask(ollama, make_harness):
    ollama.models.append("qwen3:4b")
    harness = await make_harness(CHAT_MODEL="qwen3:4b")
    for command, options in (("chat", {"message": "hello"}), ("ask", {"question": "what is a cog?"})):
        interaction_id, _ = await harness.answer("alice", command, options)
        answer = answer_of(harness, interaction_id)
        assert answer["content"].startswith("You said: ") and THOUGHT not in answer["content"], command
        assert answer["attachments"] == []
        assert ollama.chat_requests[-1]["think"] is True
    history = await harness.bot.conversations.history(GENERAL_CHANNEL_ID)
    assert [m.content for m in history] == ["hello", "You said: hello"]  # nor remembered


async def test_with_thinking_shown_the_answer_carries_it_as_a_spoiler_file(ollama, make_harness):
    ollama.models.append("deepseek-r1")
    harness = await make_harness(CHAT_MODEL="deepseek-r1")
    _, events = await harness.answer("alice", "settings thinking", {"show": True})
    assert ephemeral_replies(events) == [ADMINS_ONLY]
    _, events = await harness.answer("admin", "settings thinking", {"show": True})
    assert ephemeral_replies(events) == [
        "Thinking shown: answers of reasoning models come with their thinking as a spoiler file for this server."]
    _, events = await harness.answer("admin", "settings show")
    assert "**Thinking** of reasoning models: shown" in ephemeral_replies(events)[0]

    interaction_id, _ = await harness.answer("bob", "chat", {"message": "why is the sky blue?"}, channel="random")
    answer = answer_of(harness, interaction_id, "random")
    assert answer["content"] == "You said: why is the sky blue?"
    assert attached(harness, answer) == {
        "SPOILER_thinking.md": "Thinking it over: the member said why is the sky blue?."}

    await harness.answer("admin", "settings reset", {"setting": "show_thinking"})
    interaction_id, _ = await harness.answer("bob", "ask", {"question": "and the sea?"})
    assert answer_of(harness, interaction_id)["attachments"] == []


async def test_think_blocks_of_an_older_template_are_not_shown_and_other_models_are_not_sent_think(
        ollama, make_harness):
    ollama.models.append("deepseek-r1:7b")
    ollama.think_tag_models.add("deepseek-r1")
    harness = await make_harness()
    interaction_id, _ = await harness.answer("alice", "chat", {"message": "hi"})  # llama3.2: does not think
    assert answer_of(harness, interaction_id)["content"] == "You said: hi"
    assert "think" not in ollama.chat_requests[-1]

    await harness.answer("admin", "settings model", {"name": "deepseek-r1:7b"})
    interaction_id, _ = await harness.answer("alice", "chat", {"message": "and you?"})
    assert answer_of(harness, interaction_id)["content"] == "You said: and you?"
    assert "think" not in ollama.chat_requests[-1]  # no "thinking" capability: Ollama would refuse it


@pytest.mark.voice
async def test_a_voice_turn_with_a_thinking_model_speaks_no_thinking(ollama, make_harness):
    ollama.models.append("qwen3")
    harness = await listening(make_harness, CHAT_MODEL="qwen3")
    await harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION))
    await wait_until(lambda: posted(harness, "🔊"))
    assert posted(harness, "🔊") == ["🔊 It is sunny. Take a hat."]  # the text that was spoken
    assert ollama.chat_requests[-1]["think"] is True
