"""Spoken questions with a mid-sentence pause ("What is the ... default context length?"), for checking that the
bot does not answer a member who has not finished (benchmarks and end-to-end tests).

Each question is split at a word boundary into two halves, said separately (by Piper, say) and joined with a
pause of silence. The halves are trimmed of their own leading and trailing silence first, so the gap in the
packets the sandbox sends (it sends no frame quieter than ``sandbox.voice.speech.SILENCE_RMS``) is exactly the
pause asked for.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from sandbox.voice.speech import SILENCE_RMS, frame_rms
from services.audio import FRAME_BYTES, FRAME_MS, pad_to_frames

# (first half, second half): the split is where a speaker searching for a word would stop. Each question is split
# at two places, so the set varies the split point as well as the pause.
PAUSED_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("What is the", "default context length?"),
    ("What is the default", "context length?"),
    ("How do I", "change the model the bot uses?"),
    ("How do I change the", "model the bot uses?"),
    ("Can you tell me", "how to reload the documents?"),
    ("Can you tell me how to", "reload the documents?"),
    ("Where are the", "voice settings kept?"),
    ("Where are the voice", "settings kept?"),
    ("Which port does", "Ollama listen on by default?"),
    ("Which port does Ollama", "listen on by default?"),
    ("What happens when", "the queue is full?"),
    ("What happens when the", "queue is full?"),
    ("Is there a way to", "stop the bot from talking?"),
    ("Is there a way to stop the", "bot from talking?"),
    ("How long does it", "take to index a large document?"),
    ("How long does it take to", "index a large document?"),
    ("Why does the", "bot answer so slowly today?"),
    ("Why does the bot", "answer so slowly today?"),
    ("Could you explain", "what a context window is?"),
    ("Could you explain what a", "context window is?"),
    ("What should I", "do when the model is missing?"),
    ("What should I do when the", "model is missing?"),
    ("Who can use", "the reload command here?"),
    ("Who can use the", "reload command here?"),
)


@dataclass(frozen=True)
class PausedQuestion:
    """A question said in two halves with ``pause_ms`` of silence between them (a multiple of 20 ms)."""

    first: str
    second: str
    pause_ms: int

    @property
    def text(self) -> str:
        """The whole question, as the member means it."""
        return f"{self.first} {self.second}"


def paused_question_set(pause_ms: tuple[int, int] = (300, 800), seed: int = 0) -> list[PausedQuestion]:
    """Every question of PAUSED_QUESTIONS (24) with a pause spread evenly over ``pause_ms`` (inclusive, rounded to
    whole 20 ms frames) and shuffled over the questions with ``seed``, so that pause and split point vary
    independently. Same seed, same set. Raises ValueError for an empty or reversed range."""
    low, high = pause_ms
    if not 0 < low <= high:
        raise ValueError(f"need 0 < low <= high milliseconds, got {pause_ms}")
    count = len(PAUSED_QUESTIONS)
    pauses = [round((low + (high - low) * i / (count - 1)) / FRAME_MS) * FRAME_MS for i in range(count)]
    random.Random(seed).shuffle(pauses)
    pairs = zip(PAUSED_QUESTIONS, pauses, strict=True)
    return [PausedQuestion(first, second, pause) for (first, second), pause in pairs]


def trim_silence(pcm: bytes) -> bytes:
    """``pcm`` (48 kHz stereo s16le) padded to whole 20 ms frames, without the frames quieter than the sandbox's
    silence level (-50 dBFS) at its start and end; b"" when every frame is that quiet."""
    pcm = pad_to_frames(pcm)
    voiced = np.flatnonzero(frame_rms(pcm) >= SILENCE_RMS)
    if not len(voiced):
        return b""
    return pcm[int(voiced[0]) * FRAME_BYTES : (int(voiced[-1]) + 1) * FRAME_BYTES]


def paused_utterance(first: bytes, second: bytes, pause_ms: int) -> bytes:
    """``first`` then ``pause_ms`` of digital silence then ``second`` (each 48 kHz stereo s16le, trimmed of its own
    leading and trailing silence): what a member says with a pause mid-sentence. Raises ValueError when
    ``pause_ms`` is not a positive multiple of 20 ms or a half holds no voiced frame."""
    if pause_ms <= 0 or pause_ms % FRAME_MS:
        raise ValueError(f"pause_ms must be a positive multiple of {FRAME_MS} ms, got {pause_ms}")
    head, tail = trim_silence(first), trim_silence(second)
    if not head or not tail:
        raise ValueError("each half of a paused utterance must hold speech (a frame louder than -50 dBFS)")
    return head + bytes(pause_ms // FRAME_MS * FRAME_BYTES) + tail
