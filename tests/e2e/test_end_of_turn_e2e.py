"""The end of a spoken turn decided from its words (ENDPOINT_COMPLETE_MS, ENDPOINT_INCOMPLETE_MS): the words heard on
the speculative silence confirm a finished question after a short silence and make the bot wait longer after
"What is the", longer than ENDPOINT_SILENCE_MS; words that read as finished but break off mid-sentence, which
Whisper doubts (ENDPOINT_SURE_NO_SPEECH_PROB), wait ENDPOINT_SILENCE_MS."""

from __future__ import annotations

import asyncio

import pytest

from services.voice.turn_taking import TurnEnd, end_of_turn
from tests.support.paused_speech import SentenceCutter, trim_silence
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

# A first half that ends in "of" (where "What is the" may come back as "What is that?").
TRAILING_HALF, REST = "Can you tell me the size of", "the default context window?"


async def trailing_reading(harness, text: str) -> bytes:
    """A Piper reading of ``text`` (trimmed) that the bot's Whisper hears as trailing off: now and then tiny.en
    finishes it ("Can you tell me the size of it?", about 1 reading in 8), and a member who sounds finished is
    answered, as the rule says; this test is about one who does not."""
    for _ in range(5):
        pcm = trim_silence(await speech_pcm(harness, text))
        if end_of_turn(await harness.bot.transcriber.transcribe(pcm, ["Assistant"])) is TurnEnd.INCOMPLETE:
            return pcm
    raise AssertionError(f"tiny.en heard {text!r} as finished in 5 readings")


def ended_by_words(harness) -> dict[str, int]:
    conversation = harness.bot.voice_sessions.get(harness.sandbox.guild_id).listening.conversation
    return conversation.endpointer.stats.ended_by_words


async def test_a_member_pausing_after_what_is_the_beyond_the_silence_limit_is_not_cut_off(make_harness):
    harness = await listening(make_harness)
    harness.ollama.responder = answer_only_the_whole_question
    first, second = await trailing_reading(harness, TRAILING_HALF), await speech_pcm(harness, REST)
    # 1100 ms: longer than ENDPOINT_SILENCE_MS, shorter than ENDPOINT_INCOMPLETE_MS
    await say_with_a_pause(harness, first, second, 1100, "size of", "context")
    # The whole question ends by its words, or by ENDPOINT_SILENCE_MS when its transcript comes later than that (a
    # loaded machine); never the first half (then two transcripts, above).
    assert ended_by_words(harness) in ({"complete": 1}, {})


async def test_a_complete_question_is_answered_after_the_short_silence(make_harness):
    # a confirmation silence far longer than the test: only the words can end this turn in time
    harness = await listening(make_harness, ENDPOINT_SILENCE_MS=4000)
    harness.ollama.responder = answer_only_the_whole_question
    speech = await harness.sandbox.speak("bob", await speech_pcm(harness, f"{FIRST_HALF} {SECOND_HALF}"))
    await wait_until(lambda: posted(harness, "🔊"), timeout=30)

    assert posted(harness, "🔊") == [f"🔊 {ANSWER}"]
    assert ended_by_words(harness) == {"complete": 1}
    [spurt] = harness.sandbox.voice_spurts("Assistant")
    assert spurt["start_t_ms"] - speech["t_ms"] < 4000  # before ENDPOINT_SILENCE_MS would have ended it


async def doubted_half(harness, first: str, second: str) -> tuple[bytes, bytes]:
    """``first`` and ``second`` cut out of one Piper reading of the whole (trimmed), such that the bot's Whisper hears
    ``first`` as finished words it doubts (UNSURE); most readings of "What is the default" are."""
    cutter = await asyncio.to_thread(SentenceCutter)
    settings = harness.bot.settings
    for _ in range(5):
        head, tail = (trim_silence(pcm) for pcm in await asyncio.to_thread(cutter.halves, first, second))
        heard = await harness.bot.transcriber.transcribe(head, ["Assistant"])
        if end_of_turn(heard, settings.ENDPOINT_SURE_NO_SPEECH_PROB) is TurnEnd.UNSURE:
            return head, tail
    raise AssertionError(f"tiny.en heard {first!r} cut mid-sentence without doubt in 5 readings")


async def test_a_member_breaking_off_after_words_that_sound_finished_is_not_cut_off(make_harness):
    harness = await listening(make_harness)
    harness.ollama.responder = answer_only_the_whole_question
    first, second = await doubted_half(harness, "What is the default", "context length?")
    # 740 ms: over ENDPOINT_COMPLETE_MS (650), under ENDPOINT_SILENCE_MS (850)
    await say_with_a_pause(harness, first, second, 740, "default", "context")
