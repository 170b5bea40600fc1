"""Spoken questions with a mid-sentence pause ("What is the ... default context length?"), for checking that the
bot does not answer a member who has not finished (benchmarks and end-to-end tests).

Each question is split at a word boundary into two halves joined with a pause of silence. The halves are either
cut out of the question read whole (``SentenceCutter``: the first half breaks off with the intonation of a sentence
going on, as a member's does when they stop to find a word) or read separately (each then sounds finished: a
harder, less natural case). They are trimmed of their own leading and trailing silence, so the gap in the packets
the sandbox sends (it sends no frame quieter than ``sandbox.voice.speech.SILENCE_RMS``) is exactly the pause asked
for.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from sandbox.voice.speech import SILENCE_RMS, frame_rms
from services.speech.audio import FRAME_BYTES, FRAME_MS, pad_to_frames, to_discord_pcm
from services.speech.bundled_models import bundled_piper_voice

# (first half, second half): the split is where a speaker searching for a word would stop. Each question is split
# at two places, so the set varies the split point as well as the pause. The end-of-turn rule
# (services/voice/turn_taking.py) was written against these.
RULE_QUESTIONS: tuple[tuple[str, str], ...] = (
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

# Written after the rule and its thresholds, and never used to tune them: how it fares on questions it has not seen.
# More of these splits come after a noun or a verb, where the first half is a question of its own.
HELD_OUT_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("How much memory does", "the large model need?"),
    ("How much memory does the large", "model need?"),
    ("Can the bot read", "PDF files from the channel?"),
    ("Can the bot read PDF", "files from the channel?"),
    ("What is the difference between", "chat and ask?"),
    ("What is the difference", "between chat and ask?"),
    ("How do I make the bot", "speak more slowly?"),
    ("How do I make", "the bot speak more slowly?"),
    ("Where can I find", "the logs of the bot?"),
    ("Where can I find the logs", "of the bot?"),
    ("When was the", "last document added to the index?"),
    ("When was the last document", "added to the index?"),
    ("Does Ollama support", "running two models at once?"),
    ("Does Ollama support running", "two models at once?"),
    ("What does the temperature", "setting change in the answers?"),
    ("What does the", "temperature setting change in the answers?"),
    ("Why is the voice", "so quiet in this channel?"),
    ("Why is the", "voice so quiet in this channel?"),
    ("Which documents did", "you use for that answer?"),
    ("Which documents did you use", "for that answer?"),
    ("How many people can", "talk to the bot at the same time?"),
    ("How many people can talk", "to the bot at the same time?"),
    ("Can you summarize", "the installation guide for me?"),
    ("Can you summarize the installation", "guide for me?"),
)

PAUSED_QUESTIONS = RULE_QUESTIONS + HELD_OUT_QUESTIONS


@dataclass(frozen=True)
class PausedQuestion:
    """A question said in two halves with ``pause_ms`` of silence between them (a multiple of 20 ms); held_out: one
    of HELD_OUT_QUESTIONS."""

    first: str
    second: str
    pause_ms: int
    held_out: bool = False

    @property
    def text(self) -> str:
        """The whole question, as the member means it."""
        return f"{self.first} {self.second}"


def paused_question_set(pause_ms: tuple[int, int] = (300, 800), seed: int = 0) -> list[PausedQuestion]:
    """Every question of PAUSED_QUESTIONS (48) with a pause spread evenly over ``pause_ms`` (inclusive, rounded to
    whole 20 ms frames) and shuffled over the questions with ``seed``, so that pause and split point vary
    independently. Same seed, same set. Raises ValueError for an empty or reversed range."""
    low, high = pause_ms
    if not 0 < low <= high:
        raise ValueError(f"need 0 < low <= high milliseconds, got {pause_ms}")
    count = len(PAUSED_QUESTIONS)
    pauses = [round((low + (high - low) * i / (count - 1)) / FRAME_MS) * FRAME_MS for i in range(count)]
    random.Random(seed).shuffle(pauses)
    pairs = zip(PAUSED_QUESTIONS, pauses, strict=True)
    return [PausedQuestion(first, second, pause, (first, second) in HELD_OUT_QUESTIONS)
            for (first, second), pause in pairs]


class SentenceCutter:
    """The bundled Piper voice reading a question whole, cut at a word boundary into its two halves.

    Piper's phoneme alignments (``PiperVoice.synthesize(include_alignments=True)``; the model is patched in memory,
    which needs the ``onnx`` package) give the samples of each phoneme; words are separated by the " " phoneme, and
    the cut is in the middle of the one that ends the first half. espeak-ng joins some words into one phoneme word
    ("from the"): a split inside such a group raises ValueError. Loading is blocking (about a second).
    """

    def __init__(self) -> None:
        from piper import PiperVoice

        self._voice: Any = PiperVoice.load(bundled_piper_voice().path, include_alignments=True)

    def halves(self, first: str, second: str) -> tuple[bytes, bytes]:
        """``first + " " + second`` read whole, as two pieces of Discord PCM (48 kHz stereo s16le, whole frames):
        up to the middle of the silence between them, and from there. Blocking."""
        words_first, words_second, words_whole = (self._phoneme_words(text)
                                                  for text in (first, second, f"{first} {second}"))
        if words_first + words_second != words_whole:
            raise ValueError(f"espeak joins words across the split of {first!r} / {second!r}")
        [chunk] = self._voice.synthesize(f"{first} {second}", include_alignments=True)
        gaps, at = [], 0
        for alignment in chunk.phoneme_alignments:
            if alignment.phoneme == " ":
                gaps.append(at + int(alignment.num_samples) // 2)
            at += int(alignment.num_samples)
        cut = gaps[words_first - 1]
        audio, rate = chunk.audio_float_array, chunk.sample_rate
        return to_discord_pcm(audio[:cut], rate), to_discord_pcm(audio[cut:], rate)

    def _phoneme_words(self, text: str) -> int:
        return sum(len("".join(sentence).split()) for sentence in self._voice.phonemize(text))


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
