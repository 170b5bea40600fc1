"""Listening in a voice channel: the receive path wired to the spoken turns, and the worker answering them.

``start_listening`` connects, for one guild's voice session: voice_recv -> ``VoiceReceiver`` (DAVE, Opus) ->
``Endpointer`` (utterances) -> a bounded queue -> one worker task that answers each utterance with
``services.voice_turns.VoiceTurns``, in the order they ended. A member talking over the bot stops its answer
(barge-in, BARGE_IN=stop). Members who used `/voice ignoreme on` are dropped before decryption.
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
from services.endpointing import Endpointer, Utterance
from services.errors import ServiceError
from services.turn_taking import TurnEnd, turn_end
from services.vocabulary import guild_vocabulary
from services.voice_turns import Speculation, VoiceTurns

if TYPE_CHECKING:
    from bot.client import AssistantBot

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
        settings=settings, transcriber=bot.transcriber, llm=bot.llm, llm_queue=bot.llm_queue,
        conversations=bot.conversations, speech=session, history=session.voice_history,
        chat_settings=bot.chat_settings, guild_id=guild_id,
        voice_channel_id=session.channel.id if session.channel else 0, post=post,
        member_name=lambda user_id: member_name(bot.get_guild(guild_id), user_id), start_task=start_task,
        vocabulary=vocabulary,
    )
    def end_turn_from_words(utterance: Utterance, text: str) -> None:
        end = turn_end(text)
        silence_ms = settings.ENDPOINT_COMPLETE_MS if end is TurnEnd.COMPLETE else settings.ENDPOINT_INCOMPLETE_MS
        applied = endpointer.end_after(utterance.user_id, utterance.started_at, silence_ms, end.value)
        log.debug("guild %s: %r reads %s: end of turn after %s ms (%s)", guild_id, text, end.value, silence_ms,
                  "applied" if applied else "too late")

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
    worker = bot.tasks.start(_answer_turns(session, turns, speculation, queue, post), name=f"voice-turns:{guild_id}")
    session.listening = Listening(receiver, endpointer, worker, speculation)
    session.voice_client.listen(receiver.sink)  # type: ignore[attr-defined]


async def _answer_turns(session: VoiceSession, turns: VoiceTurns, speculation: Speculation | None,
                        queue: asyncio.Queue[Utterance], post: Callable[[str], Awaitable[None]]) -> None:
    """One turn at a time, in the order utterances ended; overload (utterances dropped because the queue
    of STT_QUEUE_MAX was full) is reported in the channel."""
    reported_drops = 0
    while True:
        utterance = await queue.get()
        try:
            prepared = await speculation.take(utterance) if speculation else None
            report = await turns.answer(utterance, prepared)
            if report is not None:
                session.last_turn = report
                log.info("guild %s: voice turn %s", session.guild_id, report)
        except (ServiceError, discord.HTTPException) as exc:
            message = exc.user_message if isinstance(exc, ServiceError) else str(exc)
            log.warning("guild %s: voice turn failed: %s", session.guild_id, message)
            await post(f"⚠️ {message}")
        listening = session.listening
        dropped = listening.endpointer.stats.delivery_dropped if listening else reported_drops
        if dropped > reported_drops:
            await post(f"⚠️ I could not keep up: {dropped - reported_drops} "
                       "utterance(s) were not transcribed. Please speak one at a time.")
            reported_drops = dropped


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
