"""Listening in a voice channel: the receive path wired to the guild's spoken conversation.

``start_listening`` connects, for one guild's voice session: voice_recv -> ``VoiceReceiver`` (DAVE, Opus) -> the
endpointer of a ``services.voice.conversation.VoiceConversation``, which owns the spoken turns from there on (their
speculation, the end of each turn, answering them in order, and every cancellation). Members who used
`/voice ignoreme on` are dropped before decryption. This module gives the conversation what only the bot has: the
text channel to post in, members' names, the guild's vocabulary, the task registry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import discord

from bot.formatting import split_message
from bot.members import member_name
from bot.tasks import TaskRegistry
from bot.voice_receive import VoiceReceiver
from bot.voice_session import Listening, VoiceSession
from services.chat.answering import Answering
from services.knowledge.index import DocumentIndex
from services.knowledge.vocabulary import guild_vocabulary
from services.speech.stt import Transcriber
from services.storage.guild_settings import GuildSettingsStore
from services.voice.conversation import VoiceConversation

if TYPE_CHECKING:
    from config import Settings

log = logging.getLogger(__name__)


class ListeningBot(Protocol):
    """What listening needs of the bot (``bot.client.AssistantBot`` has it)."""

    settings: Settings
    transcriber: Transcriber
    answering: Answering
    index: DocumentIndex
    guild_settings: GuildSettingsStore
    tasks: TaskRegistry

    @property
    def user(self) -> discord.ClientUser | None: ...

    def get_guild(self, id: int, /) -> discord.Guild | None: ...

    def get_channel(self, id: int, /) -> Any: ...


async def start_listening(bot: ListeningBot, session: VoiceSession, text_channel_id: int) -> None:
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

    async def post(text: str) -> None:
        await _post(bot, text_channel_id, text)

    async def vocabulary() -> tuple[str, ...]:
        guild = bot.get_guild(guild_id)
        names = [bot.user.name if bot.user else "", guild.me.display_name if guild else "",
                 *settings.VOICE_WAKE_WORDS]
        return guild_vocabulary(names, await bot.index.document_terms(guild_id))

    def start_task(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        return bot.tasks.start(coro, name=f"{name}:{guild_id}", awaited=True)

    conversation = VoiceConversation(
        settings=settings, transcriber=bot.transcriber, answering=bot.answering, speech=session,
        memory=session.voice_history, guild_id=guild_id, voice_channel_id=session.channel.id if session.channel else 0,
        post=post, member_name=lambda user_id: member_name(bot.get_guild(guild_id), user_id), start_task=start_task,
        vocabulary=vocabulary, loop=asyncio.get_running_loop(),
    )
    receiver = VoiceReceiver(
        conversation.endpointer, is_ignored=lambda user_id: bot.guild_settings.is_opted_out(guild_id, user_id),
        bot_user_id=bot.user.id if bot.user else None,
    )
    conversation.start()
    session.listening = Listening(receiver, conversation)
    session.voice_client.listen(receiver.sink)  # type: ignore[attr-defined]


async def _post(bot: ListeningBot, channel_id: int, text: str) -> None:
    """Post ``text`` (split at 2000 characters, no pings) where voice transcripts go, if VOICE_POST_TRANSCRIPTS; a
    failure to post is logged (the conversation goes on)."""
    settings = bot.settings
    if not settings.VOICE_POST_TRANSCRIPTS:
        return
    channel = bot.get_channel(settings.VOICE_TRANSCRIPT_CHANNEL_ID or channel_id)
    if not isinstance(channel, discord.abc.Messageable):
        return
    try:
        for part in split_message(text):
            await channel.send(part, allowed_mentions=discord.AllowedMentions.none())
    except discord.HTTPException as exc:
        log.warning("could not post to channel %s: %s", channel_id, exc)
