"""One spoken turn: its state and its cancellation (``Turn``), and the pieces of its answer.

A turn runs from the (tentative) end of a member's speech to the last frame of the answer played. It has two halves:
its preparation (``PreparedTurn``: transcribed, and, when it addresses the bot, the LLM request sent and its sentences
read ahead into a buffer) with nothing posted, spoken or remembered; then, once the end of the turn is confirmed, its
answer: the transcript posted, the sentences spoken as the model writes them (``sentences_of``: the first clause early,
each sentence as soon as it is complete), the turn remembered. ``services.voice.conversation`` runs the turns of a
voice channel; this module knows nothing of Discord: the answer plays through a ``SpeechQueue``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from services.chat.answering import PreparedAnswer
from services.speech.speech_text import split_sentences
from services.speech.stt import Transcript
from services.voice.endpointing import Utterance

StartTask = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]
"""``(coroutine, name) -> Task``: starts a tracked background task (the bot's task registry); the caller awaits the
task or cancels it, so its failure is not logged by the registry."""

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


_CLAUSE_END = re.compile(r"[,;:](?=\s)")


def first_clause(text: str, min_words: int) -> tuple[str, str] | None:
    """``text`` cut after its first comma, semicolon or colon that follows at least ``min_words`` words, as (clause,
    rest); None when there is no such mark yet (or ``min_words`` is 0)."""
    if min_words <= 0:
        return None
    for match in _CLAUSE_END.finditer(text):
        if len(text[: match.start()].split()) >= min_words:
            return text[: match.end()].strip(), text[match.end():].lstrip()
    return None


async def sentences_of(deltas: AsyncIterator[str], first_clause_words: int = 0) -> AsyncIterator[str]:
    """Yield each complete sentence of a streamed text as soon as it is complete, then the remainder.

    deltas: text pieces as the LLM streams them. A sentence is complete when ``split_sentences`` finds
    another one after it; whitespace is normalised, nothing else is lost. first_clause_words: when > 0, the first
    sentence is yielded in two pieces when it has a comma, semicolon or colon after at least this many words (the
    first clause as soon as it is written, so speech starts sooner), else whole.
    """
    pending = ""
    clause_pending = first_clause_words > 0
    async for delta in deltas:
        pending += delta
        if clause_pending and pending.strip():
            sentences = split_sentences(pending)
            # the mark must be in the first sentence; the same words before it in the raw text find it there
            cut = first_clause(sentences[0], first_clause_words) and first_clause(pending, first_clause_words)
            if cut is not None:
                yield cut[0]
                pending = cut[1]
            clause_pending = cut is None and len(sentences) == 1
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
    """The answer to one utterance: iterate ``sentences()`` once; ``answer`` then holds the whole text.
    first_clause_words: as ``sentences_of``."""

    def __init__(self, deltas: AsyncIterator[str], first_clause_words: int = 0) -> None:
        self._deltas = deltas
        self._first_clause_words = first_clause_words
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
        async for sentence in sentences_of(self._tracked(), self._first_clause_words):
            if self.timings.first_sentence is None:
                self.timings.first_sentence = time.monotonic()
            yield sentence
        self.completed = True
        self.timings.finished = time.monotonic()


class PlayedSpeech(Protocol):
    """A request in the playback queue, as the turn sees it (``bot.voice_session.SpeechRequest``)."""

    done: asyncio.Event  # set once it has played, was cut, or was dropped
    cut: bool  # stopped by barge-in or /stop before the end
    error: str | None  # why synthesis or the answer stream failed, for the member
    first_audio_at: float | None  # time.monotonic() when the first sentence's audio was ready
    playing_at: float | None  # time.monotonic() when playback started


class SpeechQueue(Protocol):
    """The guild's playback queue (``bot.voice_session.VoiceSession``)."""

    @property
    def current(self) -> PlayedSpeech | None:
        """What plays now, None when nothing does."""
        ...

    def enqueue(self, text: str, member_id: int, sentences: AsyncIterator[str] | None = None) -> PlayedSpeech:
        """Queue speech: ``text``, or the streamed ``sentences``; raises InvalidInput when the queue is full."""
        ...

    def cut(self, request: Any) -> None:
        """Stop ``request`` (one that ``enqueue`` returned): drop it from the queue, or cut it while it plays."""
        ...

    def stop(self) -> int:
        """Stop what plays and drop the queue; returns how many requests were dropped or cut."""
        ...


@dataclass(frozen=True)
class TurnReport:
    """Where the time went between the end of a member's speech and the first answer audio, in ms.

    endpoint: from the end of speech until the turn was confirmed (ENDPOINT_SILENCE_MS of no packets, or sooner from
    its words; plus any wait behind an earlier turn); stt_asked: from the end of speech until its transcription was
    asked (the tentative end, ENDPOINT_SPECULATE_MS, when speculating; else the confirmed end and any wait behind an
    earlier turn); stt: transcription; stt_wait: how long the turn's transcription waited for the shared
    transcriber's worker thread, behind other utterances of any guild (``Transcript.queued_s``; with speculation
    that wait may have passed before the end of speech was confirmed); llm_first_sentence: from the request to the
    LLM to its first complete sentence; tts_first_sentence: synthesizing that sentence; to_playback: from the end of
    speech to the start of playback; first_sentence_at: from the end of speech until the first sentence was written.
    Stages overlap when speculating: playback starts after the later of the confirmed end (endpoint) and the first
    sentence (first_sentence_at), then its synthesis, then the bot's own overhead.
    """

    endpoint_ms: float
    stt_asked_ms: float
    stt_ms: float
    stt_wait_ms: float
    llm_first_sentence_ms: float | None
    tts_first_sentence_ms: float | None
    to_playback_ms: float | None
    first_sentence_at_ms: float | None

    @classmethod
    def of(cls, prepared: PreparedTurn, received_at: float, request: PlayedSpeech) -> TurnReport:
        """The report of ``prepared``, whose answer (``prepared.turn``) was asked for, confirmed at ``received_at``
        and played as ``request``."""

        def ms(start: float | None, end: float | None) -> float | None:
            return None if start is None or end is None else round((end - start) * 1000, 1)

        assert prepared.turn is not None
        timings, utterance, transcript = prepared.turn.timings, prepared.utterance, prepared.transcript
        return cls(
            endpoint_ms=round((received_at - utterance.ended_at) * 1000, 1),
            stt_asked_ms=round((prepared.transcribing_at - utterance.ended_at) * 1000, 1),
            stt_ms=round(transcript.transcribe_s * 1000, 1),
            stt_wait_ms=round(transcript.queued_s * 1000, 1),
            llm_first_sentence_ms=ms(timings.started, timings.first_sentence),
            tts_first_sentence_ms=ms(timings.first_sentence, request.first_audio_at),
            to_playback_ms=ms(utterance.ended_at, request.playing_at),
            first_sentence_at_ms=ms(utterance.ended_at, timings.first_sentence),
        )


@dataclass
class PreparedTurn:
    """A turn transcribed and, when addressed, being answered, with nothing posted, spoken or remembered yet.

    transcript: what was heard; request_text: the request in it (None when nothing was heard or the bot was not
    addressed); transcribing_at: ``time.monotonic()`` when its transcription was asked; request: the prepared
    answer (``services.chat.answering``: the LLM's messages and model); turn: the answer being streamed, its
    sentences read ahead into a buffer by a background task until ``sentences()`` takes them or ``discard()``.
    """

    utterance: Utterance
    name: str
    transcript: Transcript
    request_text: str | None
    transcribing_at: float
    request: PreparedAnswer | None = None
    turn: SpokenTurn | None = None
    _buffer: asyncio.Queue[str | Exception | None] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None

    def start(self, deltas: AsyncIterator[str], start_task: StartTask, request: PreparedAnswer,
              first_clause_words: int = 0) -> None:
        """Read the answer ``deltas`` (the LLM stream for ``request``, not started yet) ahead, sentence by sentence
        (the first clause alone: ``sentences_of``), in a task started with ``start_task``; an earlier answer is
        discarded."""
        self.discard()
        self.request = request
        self.turn = SpokenTurn(deltas, first_clause_words)
        self._buffer = asyncio.Queue()
        self._task = start_task(self._read_ahead(self.turn, self._buffer),
                                f"voice-answer:{self.utterance.user_id}")

    @staticmethod
    async def _read_ahead(turn: SpokenTurn, buffer: asyncio.Queue[str | Exception | None]) -> None:
        try:
            async for sentence in turn.sentences():
                buffer.put_nowait(sentence)
        except Exception as exc:  # handed to whoever reads the sentences, who raises it (BackendUnavailable...)
            buffer.put_nowait(exc)
        buffer.put_nowait(None)

    async def sentences(self) -> AsyncIterator[str]:
        """The answer's sentences, as the LLM completes them; raises what the LLM stream raised. Closing it early
        (barge-in, /stop) cancels the LLM stream."""
        buffer = self._buffer
        try:
            while (item := await buffer.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.discard()

    def discard(self) -> None:
        """Cancel the LLM request if it still streams (the HTTP stream is closed); idempotent.

        Cancelled once only: a second cancellation would land in the stream's own clean-up (closing the HTTP
        response) and leave the connection open, the model generating on (seen when leave and the player both
        discarded the answer that played)."""
        if self._task is not None and not self._task.done() and not self._task.cancelling():
            self._task.cancel()


class TurnState(Enum):
    """Where a spoken turn is. The order is the order a turn goes through; DONE and CANCELLED end it."""

    LISTENING = "listening"  # its end of speech is not confirmed: the member may go on (speculative work may run)
    TRANSCRIBING = "transcribing"  # confirmed; waiting for its transcript (and for the turns before it)
    ANSWERING = "answering"  # the transcript posted, the answer asked for (and queued to play); nothing plays yet
    SPEAKING = "speaking"  # its answer plays
    DONE = "done"
    CANCELLED = "cancelled"


class Turn:
    """One member's spoken turn (see module docstring): the one owner of its state and of its cancellation.

    utterance: the member's speech (so far, while LISTENING); preparation: the task transcribing it and reading its
    answer ahead (``PreparedTurn``); speech: the playback queue its answer goes to. ``task`` is the task answering it,
    once its end is confirmed and the turns before it are answered; ``playing`` its answer's speech, once queued.
    """

    def __init__(self, utterance: Utterance, preparation: asyncio.Task[PreparedTurn], speech: SpeechQueue) -> None:
        self.utterance = utterance
        self._state = TurnState.LISTENING
        self.preparation = preparation
        self.task: asyncio.Task[None] | None = None
        self.playing: PlayedSpeech | None = None
        self._speech = speech

    @property
    def state(self) -> TurnState:
        """Where the turn is; ANSWERING becomes SPEAKING when its answer starts to play."""
        if self._state is TurnState.ANSWERING and self.playing is not None and self.playing.playing_at is not None:
            return TurnState.SPEAKING
        return self._state

    @state.setter
    def state(self, state: TurnState) -> None:
        self._state = state

    @property
    def key(self) -> tuple[int, float]:
        """(member id, start of the utterance): the same while the member's speech goes on."""
        return self.utterance.user_id, self.utterance.started_at

    @property
    def ended(self) -> bool:
        return self.state in (TurnState.DONE, TurnState.CANCELLED)

    def cancel(self, *, keep_heard: bool = True) -> None:
        """Stop the turn where it is. Every path uses it: barge-in, /stop, the member speaking again, leave, shutdown.

        Before its answer plays, nothing of it is spoken, posted or remembered afterwards: its transcription, its LLM
        stream and its task are cancelled (CANCELLED). While its answer plays (SPEAKING), the speech is cut at once;
        with ``keep_heard`` (barge-in, /stop) its task then remembers and posts the words the member heard, marked as
        interrupted, and ends (DONE); without (leave, shutdown) its task is cancelled too and nothing more is kept.
        Idempotent; ``wait`` waits until it has taken effect.
        """
        if self.ended:
            return
        if self.playing is not None:
            self._speech.cut(self.playing)
            if keep_heard and self.state is TurnState.SPEAKING:
                return
        self.state = TurnState.CANCELLED
        self.preparation.cancel()
        if self.preparation.done() and not self.preparation.cancelled() and self.preparation.exception() is None:
            self.preparation.result().discard()
        if self.task is not None:
            self.task.cancel()

    async def wait(self) -> None:
        """Wait until the turn's tasks have ended (after ``cancel``: its transcription and LLM stream closed)."""
        tasks = [self.preparation, *([self.task] if self.task is not None else [])]
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.state is TurnState.CANCELLED and not self.preparation.cancelled() \
                and self.preparation.exception() is None:
            self.preparation.result().discard()
