"""A spoken turn: a member's transcript in, the LLM's streamed answer out, sentence by sentence.

The answer is split into sentences while it streams, so the first sentence can be synthesized and played
while the model is still writing the rest. The turn records the whole answer (for the conversation
history) and when each stage happened (for the voice-turn benchmark).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from services.speech_text import split_sentences

VOICE_STYLE = (
    "You are speaking out loud in a voice channel: answer in a few short spoken sentences, with no Markdown, "
    "lists, code or links."
)


def addressed(transcript: str, wake_words: Sequence[str]) -> str | None:
    """The request in ``transcript`` when it addresses the bot, else None.

    With no wake words every transcript is addressed (returned as is). Otherwise a transcript is addressed
    when one of the wake words (case-insensitive, whole words) appears in it; the request is the transcript
    with the wake word and the punctuation around it removed ("Hey Assistant, what time is it" -> "what
    time is it"; "Hey Assistant" alone -> "").
    """
    if not wake_words:
        return transcript.strip()
    for word in wake_words:
        match = re.search(rf"(?:\b(?:hey|ok|okay|hi)\s+)?\b{re.escape(word)}\b[\s,.:;!?]*", transcript, re.IGNORECASE)
        if match:
            rest = transcript[: match.start()] + transcript[match.end():]
            return " ".join(rest.split()).strip(" ,.")
    return None


async def sentences_of(deltas: AsyncIterator[str]) -> AsyncIterator[str]:
    """Yield each complete sentence of a streamed text as soon as it is complete, then the remainder.

    deltas: text pieces as the LLM streams them. A sentence is complete when ``split_sentences`` finds
    another one after it; whitespace is normalised, nothing else is lost.
    """
    pending = ""
    async for delta in deltas:
        pending += delta
        sentences = split_sentences(pending)
        if len(sentences) > 1:
            for sentence in sentences[:-1]:
                yield sentence
            # Keep the unfinished sentence, plus the whitespace that may separate it from the next delta.
            pending = sentences[-1] + (" " if pending[-1:].isspace() else "")
    for sentence in split_sentences(pending):
        yield sentence


@dataclass
class TurnTimings:
    """Monotonic times (time.monotonic, the clock of Utterance times) of a turn's stages; None until reached."""

    started: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    first_sentence: float | None = None
    finished: float | None = None


class SpokenTurn:
    """The answer to one utterance: iterate ``sentences()`` once; ``answer`` then holds the whole text."""

    def __init__(self, deltas: AsyncIterator[str]) -> None:
        self._deltas = deltas
        self.answer = ""
        self.timings = TurnTimings()
        self.completed = False

    async def _tracked(self) -> AsyncIterator[str]:
        async for delta in self._deltas:
            if self.timings.first_token is None:
                self.timings.first_token = time.monotonic()
            self.answer += delta
            yield delta

    async def sentences(self) -> AsyncIterator[str]:
        """The answer's sentences as they complete. Raises what the LLM stream raises (BackendUnavailable...)."""
        async for sentence in sentences_of(self._tracked()):
            if self.timings.first_sentence is None:
                self.timings.first_sentence = time.monotonic()
            yield sentence
        self.completed = True
        self.timings.finished = time.monotonic()
