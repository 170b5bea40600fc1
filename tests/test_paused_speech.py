"""Paused spoken questions (tests/support/paused_speech.py): the sandbox sends them as two talk spurts with
exactly the pause asked for between them."""

from __future__ import annotations

import pytest

from sandbox.voice.speech import frame_rms, split_spurts
from tests.support.paused_speech import PAUSED_QUESTIONS, paused_question_set, paused_utterance
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
    assert len(questions) == len(PAUSED_QUESTIONS) >= 20
    pauses = [q.pause_ms for q in questions]
    assert min(pauses) == 300 and max(pauses) == 800 and all(p % 20 == 0 for p in pauses)
    assert pauses != sorted(pauses)  # not tied to the order of the questions
    assert len({q.text for q in questions}) == len(questions) / 2  # each question split at two points
    assert paused_question_set(seed=0) == questions and paused_question_set(seed=1) != questions
