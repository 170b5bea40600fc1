"""The spoken conversation of one guild's voice channel: from members' audio to answers spoken back.

``VoiceConversation`` owns, for one guild, everything between the receive path and the playback queue:

- the endpointer (``services.voice.endpointing``), fed from the receive thread; its hooks are the conversation's;
- speculation: on a tentative end of speech (a silence of ENDPOINT_SPECULATE_MS) a ``Turn`` starts, transcribed and
  its answer asked for and read ahead while the member may still go on; the member speaking again cancels it;
- the end of the turn: the speculative transcript's words (``services.voice.turn_taking.end_of_turn``) tell the
  endpointer how much more silence ends it (ENDPOINT_COMPLETE_MS, ENDPOINT_INCOMPLETE_MS or ENDPOINT_SILENCE_MS);
- the queue of confirmed turns (STT_QUEUE_MAX), answered one at a time in the order they ended, each in a task of its
  own: the transcript posted, the answer (``services.chat.answering``) spoken sentence by sentence, the turn
  remembered, where the time went reported (``TurnReport``);
- every cancellation, through ``Turn.cancel``: barge-in (``BARGE_IN=stop``: a member talking over the bot cuts the
  answer that plays), ``stop`` (/stop), the member speaking again, ``close`` (/listen stop, leave, shutdown).

It knows nothing of Discord: the bot gives it the playback queue, a way to post to the text channel, a way to name a
member and the guild's vocabulary. Use it from the event loop (``feed`` its endpointer from any thread).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.chat.answering import Answering, MemoryHistory, Place, PreparedAnswer, Question
from services.errors import ServiceError
from services.speech.stt import Transcriber
from services.voice.endpointing import Endpointer, Utterance
from services.voice.turn import (
    PreparedTurn,
    SpeechQueue,
    StartTask,
    Turn,
    TurnReport,
    TurnState,
    addressed,
)
from services.voice.turn_taking import TurnEnd, end_of_turn

if TYPE_CHECKING:
    from config import Settings

log = logging.getLogger(__name__)

MAX_SPECULATIVE = 8
"""Speculative turns kept at once; beyond it (utterances that never came, e.g. dropped from a full queue) the oldest
is cancelled."""


@dataclass(slots=True)
class SpeculationStats:
    """Speculative turns since listening started (a copy is returned by ``VoiceConversation.speculation``)."""

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


Post = Callable[[str], Awaitable[None]]


class VoiceConversation:
    """The spoken conversation of one guild's voice channel (see module docstring).

    answering: the answering use case (the voice channel's persona and model read at each turn, the fair LLM queue,
    where spoken turns go first, the remembered turns); speech: the guild's playback queue; memory: the voice
    conversation kept in memory when STORE_VOICE_TRANSCRIPTS is off (owned by the voice session, so it outlives one
    /listen); post: ``async (text) -> None`` shows a line in the text channel (transcripts, answers, errors);
    member_name: ``async (user_id) -> str``; vocabulary: ``async () -> words`` the guild's vocabulary the
    transcription is biased towards (``services.knowledge.vocabulary.guild_vocabulary``), asked at each utterance
    unless STT_VOCABULARY_BIAS is off; start_task: starts the conversation's tasks (the bot's task registry);
    loop: the event loop the endpointer's hooks run on.
    """

    def __init__(self, *, settings: Settings, transcriber: Transcriber, answering: Answering, speech: SpeechQueue,
                 memory: MemoryHistory, guild_id: int, voice_channel_id: int, post: Post,
                 member_name: Callable[[int], Awaitable[str]], start_task: StartTask,
                 vocabulary: Callable[[], Awaitable[Sequence[str]]] | None = None,
                 loop: asyncio.AbstractEventLoop) -> None:
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
        self._start_task = start_task
        speculating = bool(settings.ENDPOINT_SPECULATE_MS)
        self._confirmed: asyncio.Queue[Utterance] = asyncio.Queue(maxsize=settings.STT_QUEUE_MAX)
        self.endpointer = Endpointer.from_settings(
            settings, loop=loop, on_utterance=self._confirmed, on_speech_start=self._speech_started,
            on_tentative=self._tentative if speculating else None, on_resumed=self._resumed if speculating else None,
        )
        self._speculative: dict[tuple[int, float], Turn] = {}  # LISTENING turns, by key
        self.current: Turn | None = None  # the turn being answered
        self._speculation = SpeculationStats()
        # Utterances that ended before the last /stop were asked before it: they are dropped even when their end
        # is confirmed after it (ENDPOINT_SILENCE_MS later).
        self._stopped_at = float("-inf")
        self._reported_drops = 0
        self._silence_after = {TurnEnd.COMPLETE: settings.ENDPOINT_COMPLETE_MS,
                               TurnEnd.UNSURE: settings.ENDPOINT_SILENCE_MS,
                               TurnEnd.INCOMPLETE: settings.ENDPOINT_INCOMPLETE_MS}
        self.last_report: TurnReport | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def speculation(self) -> SpeculationStats:
        stats = self._speculation
        return SpeculationStats(stats.started, stats.committed, stats.discarded)

    def start(self) -> None:
        """Start the endpointer and the task answering confirmed turns."""
        self.endpointer.start()
        self.task = self._start_task(self._run(), "voice-turns")

    # -- the endpointer's hooks (on the loop) -----------------------------------------------------------------------

    def _tentative(self, utterance: Utterance) -> None:
        """A tentative end of speech: start the turn on the speech so far."""
        self._drop_speculative(self._speculative.get((utterance.user_id, utterance.started_at)))
        while len(self._speculative) >= MAX_SPECULATIVE:
            self._drop_speculative(next(iter(self._speculative.values())))
        turn = self._new_turn(utterance, "voice-speculate")
        if self.settings.ENDPOINT_COMPLETE_MS:
            turn.preparation.add_done_callback(lambda done: self._transcribed(turn, done))
        self._speculative[turn.key] = turn
        self._speculation.started += 1

    def _resumed(self, user_id: int, started_at: float) -> None:
        """The member speaks again: the turn on their speech so far is cancelled."""
        self._drop_speculative(self._speculative.get((user_id, started_at)))

    def _transcribed(self, turn: Turn, preparation: asyncio.Task[PreparedTurn]) -> None:
        """The speculative transcript is ready: its words decide how much more silence ends the turn."""
        if turn.ended or preparation.cancelled() or preparation.exception() is not None:
            return
        transcript = preparation.result().transcript
        end = end_of_turn(transcript, self.settings.ENDPOINT_SURE_NO_SPEECH_PROB)
        silence_ms = self._silence_after[end]
        applied = self.endpointer.end_after(turn.utterance.user_id, turn.utterance.started_at, silence_ms, end.value)
        log.debug("guild %s: %r (%s, no-speech %s) reads %s: end of turn after %s ms (%s)", self.guild_id,
                  transcript.text, transcript.language, transcript.no_speech_prob, end.value, silence_ms,
                  "applied" if applied else "too late")

    async def _speech_started(self, user_id: int) -> None:
        """A member talks (barge-in): with BARGE_IN=stop, what plays is cut; their words, and the questions of the
        other members, are still answered."""
        if self.settings.BARGE_IN != "stop" or self.speech.current is None:
            return
        log.info("guild %s: member %s talks over the bot: stopping its answer", self.guild_id, user_id)
        if self.current is not None and self.current.state is TurnState.SPEAKING:
            self.current.cancel()
        self.speech.stop()  # and whatever else plays or waits to (/speak)

    def _drop_speculative(self, turn: Turn | None) -> None:
        if turn is None or self._speculative.pop(turn.key, None) is None:
            return
        turn.cancel()
        self._speculation.discarded += 1
        self._start_task(turn.wait(), "voice-speculate-discard")

    # -- answering --------------------------------------------------------------------------------------------------

    def _new_turn(self, utterance: Utterance, task_name: str) -> Turn:
        preparation = self._start_task(self._prepare(utterance), f"{task_name}:{utterance.user_id}")
        return Turn(utterance, preparation, self.speech)

    async def _run(self) -> None:
        """Answer confirmed turns, one at a time, in the order they ended, until cancelled. Raises what a turn raised
        other than ServiceError (posted in the channel)."""
        while True:
            utterance = await self._confirmed.get()
            turn = self._confirm(utterance)
            if turn is None:
                continue
            self.current = turn
            turn.task = self._start_task(self._answer(turn, time.monotonic()), f"voice-turn:{utterance.user_id}")
            try:
                # gather: cancelling this task cancels the turn's; a turn cancelled by stop() is a result here
                [outcome] = await asyncio.gather(turn.task, return_exceptions=True)
            finally:
                self.current = None
            if isinstance(outcome, Exception):
                raise outcome
            await self._report_drops()

    def _confirm(self, utterance: Utterance) -> Turn | None:
        """The turn of a confirmed ``utterance``: its speculative turn when it covered the same audio, else a new
        one; None when it ended before the last /stop (dropped)."""
        speculative = self._speculative.pop((utterance.user_id, utterance.started_at), None)
        if utterance.ended_at <= self._stopped_at:
            if speculative is not None:  # its speculation may have begun just after /stop
                speculative.cancel()
            return None
        if speculative is not None and len(speculative.utterance.pcm) == len(utterance.pcm):
            self._speculation.committed += 1
            speculative.utterance = utterance
            speculative.state = TurnState.TRANSCRIBING
            return speculative
        if speculative is not None:  # more audio came since: prepared anew
            self._speculation.discarded += 1
            speculative.cancel()
            self._start_task(speculative.wait(), "voice-speculate-discard")
        turn = self._new_turn(utterance, "voice-transcribe")
        turn.state = TurnState.TRANSCRIBING
        return turn

    async def _prepare(self, utterance: Utterance) -> PreparedTurn:
        """Transcribe ``utterance`` and, when it addresses the bot, send the LLM request and read the answer ahead;
        nothing is posted, spoken or remembered. Raises ValueError and SpeechRecognitionError as
        ``Transcriber.transcribe``."""
        name = await self.member_name(utterance.user_id)
        vocabulary = await self._vocabulary()
        transcribing_at = time.monotonic()
        transcript = await self.transcriber.transcribe(utterance.pcm, vocabulary)
        request_text = addressed(transcript.text, self.settings.VOICE_WAKE_WORDS) if transcript.text else None
        prepared = PreparedTurn(utterance, name, transcript, request_text or None, transcribing_at)
        if prepared.request_text:
            request = await self._request(prepared.request_text, utterance.user_id)
            # last, with no await after it: a cancelled preparation never leaves a request running
            prepared.start(self.answering.stream(request), self._start_task, request,
                           self.settings.VOICE_FIRST_CLAUSE_WORDS)
        return prepared

    async def _answer(self, turn: Turn, confirmed_at: float) -> None:
        """Answer ``turn`` out loud and remember it; a ServiceError (transcription failed, the model unreachable
        before its first sentence, the playback queue full) is posted. Cancelled before its answer plays, it leaves
        nothing behind: no speech queued, no post of the answer, no history, no LLM stream."""
        try:
            report = await self._speak(turn, confirmed_at)
            if report is not None:
                self.last_report = report
                log.info("guild %s: voice turn %s", self.guild_id, report)
        except ServiceError as exc:
            log.warning("guild %s: voice turn failed: %s", self.guild_id, exc.user_message)
            await self.post(f"⚠️ {exc.user_message}")
        except asyncio.CancelledError:
            turn.state = TurnState.CANCELLED
            if turn.playing is not None:
                self.speech.cut(turn.playing)
            raise
        finally:
            if turn.preparation.done() and not turn.preparation.cancelled() and turn.preparation.exception() is None:
                turn.preparation.result().discard()
        if not turn.ended:
            turn.state = TurnState.DONE

    async def _speak(self, turn: Turn, confirmed_at: float) -> TurnReport | None:
        prepared = await turn.preparation
        transcript, request_text = prepared.transcript, prepared.request_text
        if not transcript.text:
            return None
        await self.post(f"🎙️ **{prepared.name}**: {transcript.text}")
        if not request_text:
            return None
        turn.state = TurnState.ANSWERING
        request = await self._request(request_text, turn.utterance.user_id)
        # another turn ended, or the channel's settings changed, since it was prepared
        if prepared.request is None or request.request != prepared.request.request:
            prepared.start(self.answering.stream(request), self._start_task, request,
                           self.settings.VOICE_FIRST_CLAUSE_WORDS)
        answer = prepared.turn
        assert answer is not None
        sentences = prepared.sentences()
        if not self.settings.VOICE_STREAM_ANSWERS:
            sentences = _replay([sentence async for sentence in sentences])  # the whole answer first
        turn.playing = self.speech.enqueue(request_text, turn.utterance.user_id, sentences=sentences)
        await turn.playing.done.wait()
        played = turn.playing
        report = TurnReport.of(prepared, confirmed_at, played)
        if played.error and not answer.answer:
            await self.post(f"⚠️ {played.error}")
            return report
        if played.cut and played.playing_at is None:  # stopped before it played: nothing was said, or is kept
            return report
        if answer.answer.strip():
            # Cut by barge-in or /stop: remember that the member did not hear it all.
            remembered = await self.answering.remember(request, answer.answer,
                                                       interrupted=played.cut or not answer.completed)
            await self.post(f"🔊 {remembered}")
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

    async def _report_drops(self) -> None:
        dropped = self.endpointer.stats.delivery_dropped
        if dropped > self._reported_drops:
            await self.post(f"⚠️ I could not keep up: {dropped - self._reported_drops} "
                            "utterance(s) were not transcribed. Please speak one at a time.")
            self._reported_drops = dropped

    # -- stopping ---------------------------------------------------------------------------------------------------

    async def stop(self) -> int:
        """/stop: cancel every turn not answered yet (``Turn.cancel``): those whose end is confirmed and waiting, those
        prepared before their end is confirmed (their LLM streams closed), and the one being answered; the one whose
        answer plays is cut and remembers what was heard. Utterances that end before this call are dropped even when
        confirmed later; listening goes on. Returns once all of them have ended, with how many questions were dropped
        before any answer to them was queued to play (each utterance once)."""
        self._stopped_at = self.endpointer.clock()
        dropped: set[tuple[int, float]] = set()
        while not self._confirmed.empty():
            utterance = self._confirmed.get_nowait()
            dropped.add((utterance.user_id, utterance.started_at))
        turns = [*self._speculative.values(), *([self.current] if self.current is not None else [])]
        self._speculative.clear()
        for turn in turns:
            if turn.playing is None:  # an answer queued to play is counted with the speech it stops
                dropped.add(turn.key)
            if turn.state is TurnState.LISTENING:
                self._speculation.discarded += 1
            turn.cancel()
        await asyncio.gather(*(turn.wait() for turn in turns if turn.state is TurnState.CANCELLED))
        return len(dropped)

    async def close(self) -> None:
        """Stop listening for good (/listen stop, leave, shutdown): the endpointer stops, every turn is cancelled,
        the one playing included, with nothing more posted or remembered; returns once all have ended."""
        await self.endpointer.stop()
        turns = [*self._speculative.values(), *([self.current] if self.current is not None else [])]
        self._speculative.clear()
        self._speculation.discarded += sum(turn.state is TurnState.LISTENING for turn in turns)
        for turn in turns:
            turn.cancel(keep_heard=False)
        if self.task is not None:
            self.task.cancel()
        await asyncio.gather(*(turn.wait() for turn in turns), *([self.task] if self.task else []),
                             return_exceptions=True)


async def _replay(sentences: list[str]) -> AsyncIterator[str]:
    for sentence in sentences:
        yield sentence

