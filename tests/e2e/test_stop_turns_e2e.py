"""/stop and barge-in while spoken questions are in flight, through the sandbox.

/stop drops every spoken question not answered yet (waiting, prepared before the end of speech is confirmed, or the
one being answered before its answer plays): nothing of it is spoken, posted as an answer or remembered, and its LLM
stream is closed; the bot goes on listening. A member talking over the bot (barge-in) cuts only what plays: the other
members' questions and the talking member's own words are still answered.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.conftest import ephemeral_replies
from tests.support.voice_e2e import QUESTION, heard_question, listening, posted, speech_pcm, wait_until

pytestmark = pytest.mark.voice  # paced in real time: run alone (tests/support/lanes.py)

SHORT_ANSWER = "It is sunny. Take a hat."
LONG_ANSWER = " ".join(f"This is sentence {n} of a long answer." for n in range(40))
FIRST_TOKEN_S = 2.0  # the stand-in's delay before the first token of the questions /stop drops


def delay_long_answers(harness) -> None:
    """The stand-in answers slowly: its first token after FIRST_TOKEN_S, then LONG_ANSWER at 20 tokens a second
    (about 15 s), so a stream the bot left open stays visibly open long after the delay."""
    harness.ollama.responder = lambda body: LONG_ANSWER
    harness.ollama.first_token_latency_s = FIRST_TOKEN_S
    harness.ollama.tokens_per_s = 20


async def assert_nothing_of_it_is_left(harness) -> None:
    """No answer audio, no answer posted, no turn remembered; no turn task and no LLM stream left."""
    session = harness.bot.voice_sessions.get(harness.sandbox.guild_id)
    # the stand-in ends a request whose client went away once its first token is due (a left-open one streams on)
    await wait_until(lambda: harness.ollama.active_requests == 0, timeout=FIRST_TOKEN_S + 3)
    assert not [
        name
        for name in harness.bot.tasks.running
        if name.startswith(("voice-speculate", "voice-answer", "voice-turn:", "voice-tts"))
    ]
    assert harness.bot.llm_queue.waiting == 0
    assert harness.sandbox.voice_spurts("Assistant") == []
    assert posted(harness, "🔊") == [] and list(session.voice_history) == []
    assert session.listening.conversation.task is not None and not session.listening.conversation.task.done()


async def assert_the_next_question_is_answered(harness) -> None:
    harness.ollama.responder = lambda body: SHORT_ANSWER
    harness.ollama.first_token_latency_s = harness.ollama.tokens_per_s = 0
    await harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION))
    await wait_until(lambda: posted(harness, "🔊"), timeout=30)
    assert posted(harness, "🔊") == [f"🔊 {SHORT_ANSWER}"]
    session = harness.bot.voice_sessions.get(harness.sandbox.guild_id)
    assert [m.content for m in session.voice_history][1:] == [SHORT_ANSWER]  # only this turn was remembered
    assert heard_question(session.voice_history[0].content)
    await wait_until(lambda: harness.sandbox.voice_spurts("Assistant"))


async def test_stop_drops_a_question_asked_before_its_end_of_turn_is_confirmed(make_harness):
    # A long confirmation wait: /stop comes while the question is only prepared (transcribed, the LLM asked).
    harness = await listening(make_harness, ENDPOINT_SILENCE_MS=3000, ENDPOINT_COMPLETE_MS=0)
    delay_long_answers(harness)
    await harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION))
    await wait_until(lambda: harness.ollama.active_requests == 1)  # asked on the pause; its first token delayed
    _, events = await harness.answer("alice", "stop")
    assert ephemeral_replies(events) == ["Dropped 1 spoken question not answered yet."]
    # its end is confirmed after /stop, but it was said before: not answered either
    await asyncio.sleep(3.5)
    assert posted(harness, "🎙️ **Bob**") == []
    await assert_nothing_of_it_is_left(harness)
    await assert_the_next_question_is_answered(harness)
    assert len(posted(harness, "🎙️ **Bob**")) == 1


async def test_stop_drops_the_question_being_answered_and_the_one_waiting(make_harness):
    # The whole answer is written before it is spoken: the turn waits for the model, not in the playback queue.
    harness = await listening(make_harness, VOICE_STREAM_ANSWERS=False)
    delay_long_answers(harness)
    pcm = await speech_pcm(harness, QUESTION)
    await asyncio.gather(harness.sandbox.speak("bob", pcm), harness.sandbox.speak("alice", pcm))
    await wait_until(lambda: posted(harness, "🎙️ **"), timeout=30)  # the first turn is being answered
    _, events = await harness.answer("admin", "stop")
    assert ephemeral_replies(events) == ["Dropped 2 spoken questions not answered yet."]
    await asyncio.sleep(FIRST_TOKEN_S)  # the dropped answers would have come by now
    assert len(posted(harness, "🎙️ **")) == 1  # the second question was never taken up
    await assert_nothing_of_it_is_left(harness)
    await assert_the_next_question_is_answered(harness)


async def test_talking_over_the_bot_cuts_only_its_speech_and_every_question_is_answered(make_harness):
    harness = await listening(make_harness)
    await harness.sandbox.join_voice("admin", "Lounge")
    harness.ollama.responder = lambda body: LONG_ANSWER if "weather" in body["messages"][-1]["content"] else "Noted."

    async def alice_a_moment_later() -> None:
        await asyncio.sleep(0.5)  # bob's question ends first and is answered first
        await harness.sandbox.speak("alice", await speech_pcm(harness, "Is it going to rain tomorrow?"))

    await asyncio.gather(harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION)), alice_a_moment_later())
    await wait_until(lambda: harness.sandbox.voice_totals("Assistant")["seconds"] > 1.0, timeout=30)  # bob's answer
    assert posted(harness, "🎙️ **Alice**") == []  # alice's question waits for its turn
    await harness.sandbox.speak("admin", await speech_pcm(harness, "Remind me about the meeting at noon."))
    await wait_until(lambda: len(posted(harness, "🔊")) == 3, timeout=60)

    bob, *others = posted(harness, "🔊")
    assert bob.endswith("[interrupted]") and others == ["🔊 Noted.", "🔊 Noted."]
    transcripts = posted(harness, "🎙️ **")
    assert [t.split("**")[1] for t in transcripts] == ["Bob", "Alice", "Admin"], transcripts
    session = harness.bot.voice_sessions.get(harness.sandbox.guild_id)
    assert [m.content for m in session.voice_history if m.role == "assistant"][1:] == ["Noted.", "Noted."]


async def test_stop_before_the_first_sentence_is_written_leaves_no_partial_answer(make_harness):
    # Streamed answers: the turn's speech is queued for playback while the model still writes a long first sentence.
    harness = await listening(make_harness)
    harness.ollama.responder = lambda body: " ".join(["and then"] * 40) + "."
    harness.ollama.tokens_per_s = 5  # about 16 s to the full stop
    await harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION))
    await wait_until(lambda: posted(harness, "🎙️ **Bob**"), timeout=30)
    await asyncio.sleep(1.0)  # some words of the answer are written, none can be spoken yet
    _, events = await harness.answer("alice", "stop")
    assert ephemeral_replies(events) == ["Stopped 1 speech request."]
    await wait_until(lambda: harness.ollama.active_requests == 0, timeout=5)  # the stream was closed
    session = harness.bot.voice_sessions.get(harness.sandbox.guild_id)
    # nothing was heard, so no "[interrupted]" answer is posted or remembered
    assert posted(harness, "🔊") == [] and list(session.voice_history) == []
    assert harness.sandbox.voice_spurts("Assistant") == []
    await assert_the_next_question_is_answered(harness)
