"""Spoken turns: a member's utterance in, the LLM's answer spoken back, sentence by sentence.

``VoiceTurns.answer`` runs one turn: transcribe the utterance, post the transcript, check the wake word, build the
context from the voice channel's history, stream the answer from the LLM, split it into sentences while it streams
(so the first sentence is synthesized and played while the model still writes the rest), wait until it has played,
remember the turn, and report where the time went (``TurnReport``). It knows nothing of Discord: the bot hands it a
playback queue (``SpeechQueue``), a way to post to the text channel and a way to name a member.

A turn has two halves: ``VoiceTurns.prepare`` transcribes and starts the LLM request (its sentences read ahead into
a buffer), with nothing posted, spoken or remembered; ``VoiceTurns.answer`` posts, speaks and remembers. That lets
``Speculation`` prepare a turn on a tentative end of speech (``services.voice.endpointing``, ENDPOINT_SPECULATE_MS) and
either commit it when the end is confirmed or discard it, cancelled, when the member speaks again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from services.chat.answering import Answering, MemoryHistory, Place, PreparedAnswer, Question
from services.errors import ServiceError
from services.speech.speech_text import split_sentences
from services.speech.stt import Transcriber, Transcript
from services.voice.endpointing import Utterance

if TYPE_CHECKING:
    from config import Settings

log = logging.getLogger(__name__)

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

    def enqueue(self, text: str, member_id: int, sentences: AsyncIterator[str] | None = None) -> PlayedSpeech: ...


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
        """Cancel the LLM request if it still streams (the HTTP stream is closed); idempotent."""
        if self._task is not None:
            self._task.cancel()


@dataclass(slots=True)
class SpeculationStats:
    """Speculative turns since listening started (a copy is returned by ``Speculation.stats``)."""

    started: int = 0
    """Turns prepared on a tentative end of speech."""
    committed: int = 0
    """Used for the confirmed utterance."""
    discarded: int = 0
    """Cancelled: the member spoke again, more audio came before the end was confirmed, or listening stopped."""

    @property
    def discarded_share(self) -> float:
        """discarded / started (0..1); 0 before any start."""
        return self.discarded / self.started if self.started else 0.0


class Speculation:
    """Turns prepared before the end of speech is confirmed, for one guild's voice channel.

    Wire ``begin`` to the endpointer's ``on_tentative`` and ``cancel`` to its ``on_resumed``; the worker answering
    confirmed utterances calls ``take`` first. start_task: starts the preparation tasks (the bot's task registry).
    max_pending: speculative turns kept at once (those whose utterance never came, e.g. dropped from a full queue,
    are discarded oldest first). on_transcript: ``(utterance, transcript) -> None`` called on the loop with the
    Transcript of each speculative turn as soon as it is transcribed (to decide the end of the turn from the words),
    or None.
    """

    def __init__(self, turns: VoiceTurns, start_task: StartTask, max_pending: int = 8,
                 on_transcript: Callable[[Utterance, Transcript], None] | None = None) -> None:
        self.turns = turns
        self._on_transcript = on_transcript
        self._start_task = start_task
        self._max_pending = max_pending
        self._pending: dict[tuple[int, float], tuple[Utterance, asyncio.Task[PreparedTurn]]] = {}
        self._stats = SpeculationStats()

    @property
    def stats(self) -> SpeculationStats:
        return SpeculationStats(self._stats.started, self._stats.committed, self._stats.discarded)

    def begin(self, utterance: Utterance) -> None:
        """Start transcribing and answering ``utterance``, a member's speech so far (on the loop)."""
        key = (utterance.user_id, utterance.started_at)
        self._drop(key)
        while len(self._pending) >= self._max_pending:
            self._drop(next(iter(self._pending)))
        task = self._start_task(self.turns.prepare(utterance), f"voice-speculate:{utterance.user_id}")
        if self._on_transcript is not None:
            task.add_done_callback(lambda done: self._transcribed(utterance, done))
        self._pending[key] = (utterance, task)
        self._stats.started += 1

    def _transcribed(self, utterance: Utterance, task: asyncio.Task[PreparedTurn]) -> None:
        if self._on_transcript is not None and not task.cancelled() and task.exception() is None:
            self._on_transcript(utterance, task.result().transcript)

    def cancel(self, user_id: int, started_at: float) -> None:
        """The member spoke again: discard the work on the utterance that started at ``started_at``."""
        self._drop((user_id, started_at))

    async def take(self, utterance: Utterance) -> PreparedTurn | None:
        """The turn prepared for the confirmed ``utterance``, once its transcription is done; None when there is none
        or it covered less audio (then it is discarded and the caller prepares the turn anew). Raises what the
        preparation raised (SpeechRecognitionError...)."""
        entry = self._pending.pop((utterance.user_id, utterance.started_at), None)
        if entry is None:
            return None
        tentative, task = entry
        if len(tentative.pcm) != len(utterance.pcm):
            self._discard(task)
            return None
        self._stats.committed += 1
        return await task

    async def close(self) -> list[Utterance]:
        """Discard every pending turn and wait until they are cancelled (their LLM streams closed); returns their
        utterances. New turns can begin afterwards (/stop goes on listening)."""
        pending = list(self._pending.values())
        self._pending.clear()
        self._stats.discarded += len(pending)
        await asyncio.gather(*(_discarded(task) for _, task in pending))
        return [utterance for utterance, _ in pending]

    def _drop(self, key: tuple[int, float]) -> None:
        entry = self._pending.pop(key, None)
        if entry is not None:
            self._discard(entry[1])

    def _discard(self, task: asyncio.Task[PreparedTurn]) -> None:
        self._stats.discarded += 1
        self._start_task(_discarded(task), "voice-speculate-discard")


async def _discarded(task: asyncio.Task[PreparedTurn]) -> None:
    """Cancel a turn's preparation, or, when it was done, its LLM request."""
    task.cancel()
    [result] = await asyncio.gather(task, return_exceptions=True)
    if isinstance(result, PreparedTurn):
        result.discard()


async def _replay(sentences: list[str]) -> AsyncIterator[str]:
    for sentence in sentences:
        yield sentence


class VoiceTurns:
    """Answers the utterances of one guild's voice channel, one call of ``answer`` per utterance.

    answering: the answering use case (the voice channel's persona and model read at each turn, so a change applies
    at once; the fair LLM queue, where spoken turns go before text answers; the remembered turns);
    speech: the guild's playback queue; memory: the voice conversation kept in memory when
    STORE_VOICE_TRANSCRIPTS is off (bounded; owned by the voice session so it outlives one /listen);
    post: ``async (text) -> None`` shows a line in the text channel (transcripts, answers, errors);
    member_name: ``async (user_id) -> str`` the member's display name;
    vocabulary: ``async () -> words`` the guild's vocabulary the transcription is biased towards (the bot's names,
    the wake words, the documents' distinctive terms: ``services.knowledge.vocabulary.guild_vocabulary``), asked at each
    utterance (kept in memory by ``DocumentIndex.document_terms``, so no I/O) so a reload counts at once; not asked
    when STT_VOCABULARY_BIAS is off;
    start_task: starts the task reading an answer ahead (the bot's task registry).
    """

    def __init__(self, *, settings: Settings, transcriber: Transcriber, answering: Answering, speech: SpeechQueue,
                 memory: MemoryHistory, guild_id: int, voice_channel_id: int,
                 post: Callable[[str], Awaitable[None]], member_name: Callable[[int], Awaitable[str]],
                 start_task: StartTask,
                 vocabulary: Callable[[], Awaitable[Sequence[str]]] | None = None) -> None:
        self.settings = settings
        self.transcriber = transcriber
        self.answering = answering
        self.speech = speech
        self.memory = memory
        self.guild_id = guild_id
        self.voice_channel_id = voice_channel_id
        self.post = post
        self.member_name = member_name
        self.vocabulary = vocabulary
        self.start_task = start_task
        # The speech of the turn ``answer`` is on, once handed to the playback queue (None before: the turn can then
        # be cancelled whole, with nothing played, posted or remembered).
        self.playing: PlayedSpeech | None = None

    async def prepare(self, utterance: Utterance) -> PreparedTurn:
        """Transcribe ``utterance`` and, when it addresses the bot, send the LLM request and read the answer ahead;
        nothing is posted, spoken or remembered (``answer`` does that; ``PreparedTurn.discard`` cancels).

        Raises ValueError and SpeechRecognitionError as ``Transcriber.transcribe``.
        """
        name = await self.member_name(utterance.user_id)
        vocabulary = await self._vocabulary()
        transcribing_at = time.monotonic()
        transcript = await self.transcriber.transcribe(utterance.pcm, vocabulary)
        request_text = addressed(transcript.text, self.settings.VOICE_WAKE_WORDS) if transcript.text else None
        prepared = PreparedTurn(utterance, name, transcript, request_text or None, transcribing_at)
        if prepared.request_text:
            request = await self._request(prepared.request_text, utterance.user_id)
            # last, with no await after it: a cancelled preparation never leaves a request running
            prepared.start(self.answering.stream(request), self.start_task, request,
                           self.settings.VOICE_FIRST_CLAUSE_WORDS)
        return prepared

    async def answer(self, utterance: Utterance, prepared: PreparedTurn | None = None) -> TurnReport | None:
        """Answer ``utterance`` out loud and remember the turn; None when nothing was answered.

        prepared: its turn from ``prepare`` (speculatively, before the end of speech was confirmed), or None to
        prepare it now. Its LLM request is made anew when the conversation changed since. Returns once the answer
        has played (or was cut; an answer cut before any of it played is neither posted nor remembered). Cancelled
        while ``playing`` is None, it leaves nothing behind: no speech queued, no post of the answer, no history, no
        LLM stream. Raises ServiceError subclasses (transcription failed, LLM unreachable before its first
        sentence, playback queue full) for the caller to show.
        """
        received_at = time.monotonic()  # the end of speech was detected (ENDPOINT_SILENCE_MS after it)
        if prepared is None:
            prepared = await self.prepare(utterance)
        try:
            return await self._answer(prepared, received_at)
        finally:
            self.playing = None
            prepared.discard()

    async def _answer(self, prepared: PreparedTurn, received_at: float) -> TurnReport | None:
        utterance, transcript, request_text = prepared.utterance, prepared.transcript, prepared.request_text
        if not transcript.text:
            return None
        await self.post(f"🎙️ **{prepared.name}**: {transcript.text}")
        if not request_text:
            return None
        llm_request = await self._request(request_text, utterance.user_id)
        # another turn ended, or the channel's settings changed, since it was prepared
        if prepared.request is None or llm_request.request != prepared.request.request:
            prepared.start(self.answering.stream(llm_request), self.start_task, llm_request,
                           self.settings.VOICE_FIRST_CLAUSE_WORDS)
        turn = prepared.turn
        assert turn is not None
        sentences = prepared.sentences()
        if not self.settings.VOICE_STREAM_ANSWERS:
            sentences = _replay([sentence async for sentence in sentences])  # the whole answer first
        request = self.playing = self.speech.enqueue(request_text, utterance.user_id, sentences=sentences)
        await request.done.wait()
        report = TurnReport.of(prepared, received_at, request)
        if request.error and not turn.answer:
            await self.post(f"⚠️ {request.error}")
            return report
        if request.cut and request.playing_at is None:  # stopped before it played: nothing was said, or is kept
            return report
        if turn.answer.strip():
            # Cut by barge-in or /stop: remember that the member did not hear it all.
            answer = await self.answering.remember(llm_request, turn.answer,
                                                   interrupted=request.cut or not turn.completed)
            await self.post(f"🔊 {answer}")
        return report

    async def _request(self, request_text: str, member_id: int) -> PreparedAnswer:
        """The answer to prepare for ``request_text`` of ``member_id``: the channel's persona with the voice style,
        its voice history (stored, or in memory when STORE_VOICE_TRANSCRIPTS is off), the request; and its model."""
        place = Place(self.guild_id, self.voice_channel_id, self.voice_channel_id, member_id, voice=True)
        memory = None if self.settings.STORE_VOICE_TRANSCRIPTS else self.memory
        return await self.answering.prepare(Question(request_text, place), memory=memory)

    async def _vocabulary(self) -> Sequence[str]:
        """The guild's vocabulary, or () when the bias is off; a failure to read it (the index unreachable) is
        logged and the utterance transcribed without it rather than lost."""
        if self.vocabulary is None or not self.settings.STT_VOCABULARY_BIAS:
            return ()
        try:
            return await self.vocabulary()
        except ServiceError as exc:
            log.warning("guild %s: transcribing without the documents' vocabulary: %s", self.guild_id,
                        exc.user_message)
            return ()
