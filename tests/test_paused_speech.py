"""Paused spoken questions (tests/support/paused_speech.py): the sandbox sends them as two talk spurts with
exactly the pause asked for between them; halves cut out of a whole reading hold the words of each half, and the
bundled Whisper doubts a first half that breaks off mid-sentence."""

from __future__ import annotations

import pytest

from sandbox.voice.speech import frame_rms, split_spurts
from services.speech.audio import to_mono_16k
from services.voice.turn_taking import TurnEnd, end_of_turn
from tests.support.paused_speech import (
    PAUSED_QUESTIONS,
    SentenceCutter,
    paused_question_set,
    paused_utterance,
    trim_silence,
)
from tests.support.pcm import tone_pcm

SILENT_FRAME = bytes(3840)


def said(lead: int, voiced: int, trail: int) -> bytes:
    """A half as a synthesizer returns it: silence, speech (a tone), silence; in 20 ms frames."""
    return SILENT_FRAME * lead + b"".join(tone_pcm(voiced)) + SILENT_FRAME * trail


def test_the_halves_are_sent_as_two_spurts_with_exactly_the_pause_between():
    pcm = paused_utterance(said(5, 10, 7), said(3, 8, 4), 400)
    first, second = split_spurts(frame_rms(pcm))
    assert (len(first), len(second)) == (10, 8)  # no speech lost
    assert second.start - first.stop == 20  # 400 ms: the halves' own silence is not added to it
    assert len(pcm) == (10 + 20 + 8) * 3840


@pytest.mark.parametrize("pause_ms", [0, 310, -20])
def test_a_pause_that_is_not_whole_frames_is_refused(pause_ms):
    with pytest.raises(ValueError, match="multiple of 20"):
        paused_utterance(said(0, 5, 0), said(0, 5, 0), pause_ms)


def test_a_silent_half_is_refused():
    with pytest.raises(ValueError, match="must hold speech"):
        paused_utterance(said(0, 5, 0), SILENT_FRAME * 10, 300)


def test_the_set_varies_pause_and_split_over_the_whole_range():
    questions = paused_question_set()
    assert len(questions) == len(PAUSED_QUESTIONS) == 48
    assert sum(q.held_out for q in questions) == 24
    pauses = [q.pause_ms for q in questions]
    assert min(pauses) == 300 and max(pauses) == 800 and all(p % 20 == 0 for p in pauses)
    assert pauses != sorted(pauses)  # not tied to the order of the questions
    assert len({q.text for q in questions}) == len(questions) / 2  # each question split at two points
    assert paused_question_set(seed=0) == questions and paused_question_set(seed=1) != questions


@pytest.fixture(scope="module")
def cutter() -> SentenceCutter:
    return SentenceCutter()


@pytest.mark.parametrize(("first", "second"), [("What is the default", "context length?"),
                                               ("When was the last document", "added to the index?")])
def test_a_whole_reading_is_cut_between_the_halves_and_nothing_is_lost(cutter, tiny, first, second):
    for _ in range(3):  # tiny.en now and then drops a sub-second clip it is unsure of ("context length?", 1 in 12)
        head, tail = cutter.halves(first, second)
        heard_head, heard_tail = (tiny.transcribe_raw(to_mono_16k(trim_silence(pcm))).lower() for pcm in (head, tail))
        if heard_head and heard_tail:
            break
    assert heard_head and heard_tail, "tiny.en heard nothing in a half of 3 readings"
    # the cut is between the half's last word and the rest's first (tiny.en may hear "added" as "add")
    assert heard_head.split()[-1].startswith(first.lower().split()[-1][:3]), heard_head
    assert heard_tail.split()[0].startswith(second.lower().split()[0][:3]), heard_tail
    assert first.lower().split()[-1] not in heard_tail


async def test_whisper_doubts_words_that_break_off_mid_sentence_but_not_the_whole_question(cutter, tiny):
    # "What is the default" reads as a finished question; cut out of the sentence, it sounds unfinished.
    ends = []
    for _ in range(3):  # Piper's readings vary
        head, tail = cutter.halves("What is the default", "context length?")
        half, whole = [await tiny.transcribe(trim_silence(pcm)) for pcm in (head, head + tail)]
        ends.append((end_of_turn(half, 0.12), end_of_turn(whole, 0.12)))
    assert [whole for _, whole in ends] == [TurnEnd.COMPLETE] * 3
    assert [half for half, _ in ends].count(TurnEnd.UNSURE) >= 2, ends
