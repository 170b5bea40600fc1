"""Listening: /listen, and the spoken conversation in the bot's voice channel.

While listening, each member's utterance is transcribed, posted to the text channel where /listen was
used, answered by the LLM (in the voice channel's conversation) and spoken back sentence by sentence.
Turns are answered one at a time per guild, in order. A member talking over the bot stops its answer
(barge-in, BARGE_IN=stop). Members who used `/voice ignoreme on` are not listened to at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import member_cooldown
from bot.client import AssistantBot
from bot.formatting import split_message
from bot.voice_session import Listening, SpeechRequest, VoiceSession
from services.audio import to_mono_16k
from services.conversations import HistoryMessage, build_context
from services.errors import InvalidInput, ServiceError
from services.listener import Listener, Utterance
from services.voice_turns import VOICE_STYLE, SpokenTurn, addressed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TurnReport:
    """Where the time went between the end of a member's speech and the first answer audio, in ms.

    endpoint: waiting for ENDPOINT_SILENCE_MS of no packets (plus any wait behind an earlier turn);
    stt: transcription; llm_first_sentence: from the request to the LLM to its first complete sentence;
    tts_first_sentence: synthesizing that sentence; to_playback: from the end of speech to the start of
    playback (the sum of the above and the bot's own overhead).
    """

    endpoint_ms: float
    stt_ms: float
    llm_first_sentence_ms: float | None
    tts_first_sentence_ms: float | None
    to_playback_ms: float | None

    @classmethod
    def of(cls, utterance: Utterance, received_at: float, stt_s: float, turn: SpokenTurn,
           request: SpeechRequest) -> TurnReport:
        def ms(start: float | None, end: float | None) -> float | None:
            return None if start is None or end is None else round((end - start) * 1000, 1)

        timings = turn.timings
        return cls(
            endpoint_ms=round((received_at - utterance.ended_at) * 1000, 1),
            stt_ms=round(stt_s * 1000, 1),
            llm_first_sentence_ms=ms(timings.started, timings.first_sentence),
            tts_first_sentence_ms=ms(timings.first_sentence, request.first_audio_at),
            to_playback_ms=ms(utterance.ended_at, request.playing_at),
        )


async def _replay(sentences: list[str]) -> AsyncIterator[str]:
    for sentence in sentences:
        yield sentence


class Listen(commands.Cog):
    """Spoken conversation (see module docstring)."""

    def __init__(self, bot: AssistantBot) -> None:
        self.bot = bot
        self.settings = bot.settings

    @app_commands.command(name="listen", description="Listen in my voice channel and answer what members say.")
    @app_commands.describe(stop="True to stop listening")
    @app_commands.guild_only()
    @member_cooldown("VOICE_COOLDOWN_S")
    async def listen(self, interaction: discord.Interaction, stop: bool = False) -> None:
        session = self.bot.voice_sessions.get(interaction.guild_id or 0)
        if stop:
            stopped = session is not None and await session.stop_listening()
            await interaction.response.send_message(
                "Stopped listening." if stopped else "I am not listening.", ephemeral=not stopped
            )
            return
        if session is None or not session.voice_client.is_connected():
            raise InvalidInput("I am not in a voice channel; use /join first, then /listen.")
        if session.listening is not None:
            raise InvalidInput("I am already listening; use `/listen stop:True` to stop.")
        await interaction.response.defer(thinking=True)  # public: everyone must see that the bot listens
        await self._start(session, interaction.channel_id or 0)
        channel = session.channel
        await interaction.edit_original_response(content=(
            f"🎙️ Listening in {channel.mention if channel else 'the voice channel'}: what members say there is "
            "transcribed here and answered out loud. Use `/voice ignoreme on` to be left out, "
            "`/listen stop:True` to stop."
        ))

    async def _start(self, session: VoiceSession, text_channel_id: int) -> None:
        guild_id = session.guild_id
        # The speech model loads in a thread meanwhile; the first utterance waits for it if it must.
        self.bot.tasks.start(asyncio.to_thread(self.bot.transcriber.load), name=f"stt-load:{guild_id}")
        await self.bot.guild_settings.opted_out(guild_id)  # cache the opt-outs the receive thread will check
        queue: asyncio.Queue[Utterance] = asyncio.Queue(maxsize=self.settings.STT_QUEUE_MAX)

        async def barge_in(user_id: int) -> None:
            if self.settings.BARGE_IN == "stop" and session.current is not None:
                log.info("guild %s: member %s talks over the bot: stopping its answer", guild_id, user_id)
                session.stop()

        listener = Listener.from_settings(
            self.settings, loop=asyncio.get_running_loop(), on_utterance=queue, on_speech_start=barge_in,
            is_ignored=lambda user_id: self.bot.guild_settings.is_opted_out(guild_id, user_id),
            bot_user_id=self.bot.user.id if self.bot.user else None,
        )
        listener.start()
        worker = self.bot.tasks.start(self._answer_turns(session, queue, text_channel_id),
                                      name=f"voice-turns:{guild_id}")
        session.listening = Listening(listener, worker, text_channel_id)
        session.voice_client.listen(listener.sink)  # type: ignore[attr-defined]

    async def _answer_turns(self, session: VoiceSession, queue: asyncio.Queue[Utterance],
                            text_channel_id: int) -> None:
        """One turn at a time, in the order utterances ended; overload (utterances dropped because the queue
        of STT_QUEUE_MAX was full) is reported in the channel."""
        reported_drops = 0
        while True:
            utterance = await queue.get()
            try:
                await self._turn(session, utterance, text_channel_id)
            except (ServiceError, discord.HTTPException) as exc:
                message = exc.user_message if isinstance(exc, ServiceError) else str(exc)
                log.warning("guild %s: voice turn failed: %s", session.guild_id, message)
                await self._post(text_channel_id, f"⚠️ {message}")
            listening = session.listening
            dropped = listening.listener.stats.delivery_dropped if listening else reported_drops
            if dropped > reported_drops:
                await self._post(text_channel_id, f"⚠️ I could not keep up: {dropped - reported_drops} "
                                 "utterance(s) were not transcribed. Please speak one at a time.")
                reported_drops = dropped

    async def _turn(self, session: VoiceSession, utterance: Utterance, text_channel_id: int) -> None:
        received_at = time.monotonic()  # the end of speech was detected (ENDPOINT_SILENCE_MS after it)
        name = await self._member_name(session.guild_id, utterance.user_id)
        transcript = await self.bot.transcriber.transcribe(to_mono_16k(utterance.pcm))
        if not transcript.text:
            return
        await self._post(text_channel_id, f"🎙️ **{name}**: {transcript.text}")
        request_text = addressed(transcript.text, self.settings.VOICE_WAKE_WORDS)
        if not request_text:
            return
        voice_channel_id = session.channel.id if session.channel else 0
        store = self.settings.STORE_VOICE_TRANSCRIPTS
        history = await self.bot.conversations.history(voice_channel_id) if store else list(session.voice_history)
        messages = build_context(f"{self.settings.SYSTEM_PROMPT}\n\n{VOICE_STYLE}", history, request_text,
                                 self.settings.HISTORY_TOKEN_BUDGET)
        turn = SpokenTurn(self.bot.llm.chat_stream(messages))
        sentences = turn.sentences()
        if not self.settings.VOICE_STREAM_ANSWERS:
            sentences = _replay([sentence async for sentence in sentences])  # the whole answer first
        request = session.enqueue(request_text, utterance.user_id, sentences=sentences)
        await request.done.wait()
        session.last_turn = TurnReport.of(utterance, received_at, transcript.transcribe_s, turn, request)
        log.info("guild %s: voice turn %s", session.guild_id, session.last_turn)
        if request.error and not turn.answer:
            await self._post(text_channel_id, f"⚠️ {request.error}")
            return
        if turn.answer.strip():
            # Cut by barge-in or /stop: remember that the member did not hear it all.
            interrupted = request.cut or not turn.completed
            answer = f"{turn.answer} [interrupted]" if interrupted else turn.answer
            if store:
                await self.bot.conversations.add_turn(voice_channel_id, session.guild_id, utterance.user_id,
                                                      request_text, answer)
            else:
                session.voice_history.extend([HistoryMessage("user", request_text, utterance.user_id),
                                              HistoryMessage("assistant", answer)])
            await self._post(text_channel_id, f"🔊 {answer}")

    async def _member_name(self, guild_id: int, user_id: int) -> str:
        guild = self.bot.get_guild(guild_id)
        if guild is None:
            return "someone"
        member = guild.get_member(user_id)
        if member is None:  # members are not cached without the members intent
            try:
                member = await guild.fetch_member(user_id)
            except discord.HTTPException:
                return "someone"
        return member.display_name

    async def _post(self, channel_id: int, text: str) -> None:
        if not self.settings.VOICE_POST_TRANSCRIPTS:
            return
        channel = self.bot.get_channel(self.settings.VOICE_TRANSCRIPT_CHANNEL_ID or channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            return
        for part in split_message(text):
            await channel.send(part, allowed_mentions=discord.AllowedMentions.none())


async def setup(bot: AssistantBot) -> None:
    await bot.add_cog(Listen(bot))
