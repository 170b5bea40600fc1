"""Speculative turns through the sandbox: the bot transcribes and asks the LLM from a short silence on
(ENDPOINT_SPECULATE_MS), but only a confirmed end of speech (ENDPOINT_SILENCE_MS) is answered out loud.

A member who pauses mid-sentence and resumes is heard as one utterance; what the bot started on the first half is
cancelled, never posted, spoken or remembered.
"""

from __future__ import annotations

import pytest

from tests.support.paused_speech import trim_silence
from tests.support.voice_e2e import (
    ANSWER,
    FIRST_HALF,
    SECOND_HALF,
    answer_only_the_whole_question,
    listening,
    posted,
    say_with_a_pause,
    speech_pcm,
    wait_until,
)

pytestmark = pytest.mark.voice  # paced in real time: run alone (tests/support/lanes.py)


async def test_a_member_who_pauses_mid_sentence_gets_one_answer_to_the_whole_sentence(make_harness):
    harness = await listening(make_harness)
    harness.ollama.responder = answer_only_the_whole_question
    first, second = [await speech_pcm(harness, text) for text in (FIRST_HALF, SECOND_HALF)]
    # 400 ms: longer than ENDPOINT_SPECULATE_MS, shorter than ENDPOINT_SILENCE_MS
    await say_with_a_pause(harness, first, second, 400, "what is", "context")
    speculation = harness.bot.voice_sessions.get(harness.sandbox.guild_id).listening.conversation.speculation
    assert speculation.discarded >= 1 and speculation.committed == 1  # started on the pause, discarded


async def test_a_speculative_answer_discarded_on_resumption_never_plays_posts_or_stays_open(make_harness):
    # A long confirmation wait: the member resumes while the answer to the first half streams for sure.
    harness = await listening(make_harness, ENDPOINT_SILENCE_MS=5000, ENDPOINT_COMPLETE_MS=0)  # words: no say
    harness.ollama.responder = answer_only_the_whole_question
    harness.ollama.tokens_per_s = 20
    session = harness.bot.voice_sessions.get(harness.sandbox.guild_id)
    first, second = [trim_silence(await speech_pcm(harness, text)) for text in (FIRST_HALF, SECOND_HALF)]
    await harness.sandbox.speak("bob", first)
    await wait_until(lambda: harness.ollama.active_requests == 1)  # asked on the pause, before the end is confirmed
    assert "what is" in harness.ollama.chat_requests[0]["messages"][-1]["content"].lower()
    assert posted(harness, "🎙️ **Bob**") == [] and not session.voice_history  # and nothing posted or remembered yet
    resumed = await harness.sandbox.speak("bob", second)
    await wait_until(lambda: posted(harness, "🔊"), timeout=30)

    [transcript] = posted(harness, "🎙️ **Bob**:")
    assert "what is" in transcript.lower() and "context" in transcript.lower(), transcript  # both halves
    assert posted(harness, "🔊") == [f"🔊 {ANSWER}"]
    assert [m.content for m in session.voice_history][1:] == [ANSWER]
    assert "context" in session.voice_history[0].content.lower()
    # the bot spoke once, after the member had finished: nothing of the discarded answer was heard
    await wait_until(lambda: harness.sandbox.voice_spurts("Assistant"))
    spurts = harness.sandbox.voice_spurts("Assistant")
    assert len(spurts) == 1 and spurts[0]["start_t_ms"] > resumed["t_ms"], (spurts, resumed)
    # the discarded stream was closed, and nothing of the speculation is left running
    await wait_until(lambda: harness.ollama.active_requests == 0, timeout=5)
    assert not [name for name in harness.bot.tasks.running if name.startswith(("voice-speculate", "voice-answer"))]
    assert session.listening.conversation.speculation.discarded == 1
    assert len(harness.ollama.chat_requests) == 2
