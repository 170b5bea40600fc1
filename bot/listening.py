"""Listening in a voice channel: the receive path wired to the spoken turns, and the worker answering them.

``start_listening`` connects, for one guild's voice session: voice_recv -> ``VoiceReceiver`` (DAVE, Opus) ->
``Endpointer`` (utterances) -> a bounded queue -> one worker (``TurnWorker``) that answers each utterance with
``services.voice.voice_turns.VoiceTurns``, in the order they ended. A member talking over the bot stops only what plays
or waits to be played (barge-in, BARGE_IN=stop); /stop also drops the questions not answered yet
(``TurnWorker.stop``). Members who used `/voice ignoreme on` are dropped before decryption.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import discord

from bot.formatting import split_message
from bot.members import member_name
from bot.voice_receive import VoiceReceiver
from bot.voice_session import Listening, VoiceSession
from services.errors import ServiceError
from services.knowledge.vocabulary import guild_vocabulary
from services.voice.endpointing import Endpointer, Utterance
from services.voice.turn_taking import TurnEnd, end_of_turn
from services.voice.voice_turns import Speculation, StartTask, VoiceTurns

if TYPE_CHECKING:
    from bot.client import AssistantBot
    from services.speech.stt import Transcript

log = logging.getLogger(__name__)


async def start_listening(bot: AssistantBot, session: VoiceSession, text_channel_id: int) -> None:
    """Start listening in ``session``'s voice channel; transcripts and answers are posted to ``text_channel_id``.

    Raises OpusUnavailable when libopus cannot be loaded.
    """
    settings = bot.settings
    guild_id = session.guild_id
    # The speech model loads in a thread meanwhile; the first utterance waits for it if it must.
    bot.tasks.start(asyncio.to_thread(bot.transcriber.load), name=f"stt-load:{guild_id}")
    if settings.STT_VOCABULARY_BIAS:  # and the guild's document terms, which utterances then read from memory
        bot.tasks.start(bot.index.document_terms(guild_id), name=f"vocabulary:{guild_id}")
    await bot.guild_settings.opted_out(guild_id)  # cache the opt-outs the receive thread will check
    queue: asyncio.Queue[Utterance] = asyncio.Queue(maxsize=settings.STT_QUEUE_MAX)

    async def barge_in(user_id: int) -> None:
        # Only the speech: the talking member's own words, and the other members' questions, are still answered.
        if settings.BARGE_IN == "stop" and session.current is not None:
            log.info("guild %s: member %s talks over the bot: stopping its answer", guild_id, user_id)
            session.stop()

    async def post(text: str) -> None:
        await _post(bot, text_channel_id, text)

    async def vocabulary() -> tuple[str, ...]:
        guild = bot.get_guild(guild_id)
        names = [bot.user.name if bot.user else "", guild.me.display_name if guild else "",
                 *settings.VOICE_WAKE_WORDS]
        return guild_vocabulary(names, await bot.index.document_terms(guild_id))

    def start_task(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        return bot.tasks.start(coro, name=f"{name}:{guild_id}", awaited=True)

    turns = VoiceTurns(
        settings=settings, transcriber=bot.transcriber, answering=bot.answering, speech=session,
        memory=session.voice_history, guild_id=guild_id,
        voice_channel_id=session.channel.id if session.channel else 0, post=post,
        member_name=lambda user_id: member_name(bot.get_guild(guild_id), user_id), start_task=start_task,
        vocabulary=vocabulary,
    )
    silence_after = {TurnEnd.COMPLETE: settings.ENDPOINT_COMPLETE_MS, TurnEnd.UNSURE: settings.ENDPOINT_SILENCE_MS,
                     TurnEnd.INCOMPLETE: settings.ENDPOINT_INCOMPLETE_MS}

    def end_turn_from_words(utterance: Utterance, transcript: Transcript) -> None:
        end = end_of_turn(transcript, settings.ENDPOINT_SURE_NO_SPEECH_PROB)
        silence_ms = silence_after[end]
        applied = endpointer.end_after(utterance.user_id, utterance.started_at, silence_ms, end.value)
        log.debug("guild %s: %r (no-speech %s) reads %s: end of turn after %s ms (%s)", guild_id, transcript.text,
                  transcript.no_speech_prob, end.value, silence_ms, "applied" if applied else "too late")

    # Turns are transcribed and answered from a short silence on (ENDPOINT_SPECULATE_MS), committed at the end of
    # the turn, which comes sooner when the words heard read as finished and later when they trail off.
    speculation = Speculation(
        turns, start_task, on_transcript=end_turn_from_words if settings.ENDPOINT_COMPLETE_MS else None,
    ) if settings.ENDPOINT_SPECULATE_MS else None
    endpointer = Endpointer.from_settings(
        settings, loop=asyncio.get_running_loop(), on_utterance=queue, on_speech_start=barge_in,
        on_tentative=speculation.begin if speculation else None,
        on_resumed=speculation.cancel if speculation else None,
    )
    receiver = VoiceReceiver(
        endpointer, is_ignored=lambda user_id: bot.guild_settings.is_opted_out(guild_id, user_id),
        bot_user_id=bot.user.id if bot.user else None,
    )
    endpointer.start()
    worker = TurnWorker(session, turns, speculation, queue, post, start_task=start_task, clock=endpointer.clock)
    worker.task = bot.tasks.start(worker.run(), name=f"voice-turns:{guild_id}")
    session.listening = Listening(receiver, endpointer, worker, speculation)
    session.voice_client.listen(receiver.sink)  # type: ignore[attr-defined]


class TurnWorker:
    """Answers confirmed utterances one at a time, in the order they ended; each turn runs in a task of its own so
    that ``stop`` (/stop) can cancel it and the worker goes on with the next utterance.

    queue: the utterances the endpointer confirmed (bounded: STT_QUEUE_MAX; overload, utterances dropped because it
    was full, is reported in the channel); start_task: starts each turn's task (the bot's task registry); clock: the
    endpointer's clock (``Utterance.ended_at``'s), in seconds.
    ``task`` is the worker's own task (``run``), set by whoever starts it; ``close`` cancels it.
    """

    def __init__(self, session: VoiceSession, turns: VoiceTurns, speculation: Speculation | None,
                 queue: asyncio.Queue[Utterance], post: Callable[[str], Awaitable[None]], *,
                 start_task: StartTask, clock: Callable[[], float]) -> None:
        self.session = session
        self.turns = turns
        self.speculation = speculation
        self.queue = queue
        self.post = post
        self.start_task = start_task
        self.clock = clock
        self.task: asyncio.Task[None] | None = None
        self._turn: tuple[Utterance, asyncio.Task[None]] | None = None
        # Utterances that ended before the last /stop were asked before it: they are dropped even when their end
        # is confirmed after it (ENDPOINT_SILENCE_MS later).
        self._stopped_at = float("-inf")
        self._reported_drops = 0

    async def run(self) -> None:
        """Answer utterances until cancelled. Raises what a turn raised other than ServiceError and
        discord.HTTPException (those are posted in the channel)."""
        while True:
            utterance = await self.queue.get()
            if utterance.ended_at <= self._stopped_at:
                if self.speculation is not None:  # its speculation may have begun just after /stop
                    self.speculation.cancel(utterance.user_id, utterance.started_at)
                continue
            turn = self.start_task(self._answer(utterance), "voice-turn")
            self._turn = (utterance, turn)
            try:
                # gather: cancelling the worker cancels the turn; the turn cancelled by stop() is a result here
                [outcome] = await asyncio.gather(turn, return_exceptions=True)
            finally:
                self._turn = None
            if isinstance(outcome, Exception):
                raise outcome
            await self._report_drops()

    async def _answer(self, utterance: Utterance) -> None:
        try:
            prepared = await self.speculation.take(utterance) if self.speculation else None
            report = await self.turns.answer(utterance, prepared)
            if report is not None:
                self.session.last_turn = report
                log.info("guild %s: voice turn %s", self.session.guild_id, report)
        except (ServiceError, discord.HTTPException) as exc:
            message = exc.user_message if isinstance(exc, ServiceError) else str(exc)
            log.warning("guild %s: voice turn failed: %s", self.session.guild_id, message)
            await self.post(f"⚠️ {message}")

    async def _report_drops(self) -> None:
        dropped = self.session.listening.endpointer.stats.delivery_dropped if self.session.listening else 0
        if dropped > self._reported_drops:
            await self.post(f"⚠️ I could not keep up: {dropped - self._reported_drops} "
                            "utterance(s) were not transcribed. Please speak one at a time.")
            self._reported_drops = dropped

    async def stop(self) -> int:
        """Drop the spoken questions not answered yet (/stop): those waiting in the queue, those being prepared
        before the end of speech is confirmed (their LLM streams closed) and the one being answered, unless its
        answer already plays (``VoiceSession.stop`` cuts that one, and the turn remembers what was heard). Returns
        when all of them are cancelled; the worker goes on with the utterances that end after this call. Returns how
        many questions were dropped (each utterance once)."""
        self._stopped_at = self.clock()
        dropped: set[tuple[int, float]] = set()
        while not self.queue.empty():
            utterance = self.queue.get_nowait()
            dropped.add((utterance.user_id, utterance.started_at))
        if self._turn is not None and self.turns.playing is None:
            utterance, turn = self._turn
            turn.cancel()
            await asyncio.gather(turn, return_exceptions=True)
            dropped.add((utterance.user_id, utterance.started_at))
        if self.speculation is not None:
            dropped.update((utterance.user_id, utterance.started_at) for utterance in await self.speculation.close())
        return len(dropped)

    async def close(self) -> None:
        """Cancel the worker (and the turn it answers) and wait until it has ended."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def _post(bot: AssistantBot, channel_id: int, text: str) -> None:
    """Post ``text`` (split at 2000 characters, no pings) where voice transcripts go, if VOICE_POST_TRANSCRIPTS."""
    settings = bot.settings
    if not settings.VOICE_POST_TRANSCRIPTS:
        return
    channel = bot.get_channel(settings.VOICE_TRANSCRIPT_CHANNEL_ID or channel_id)
    if not isinstance(channel, discord.abc.Messageable):
        return
    for part in split_message(text):
        await channel.send(part, allowed_mentions=discord.AllowedMentions.none())
