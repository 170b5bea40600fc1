"""Voice sessions of every guild: connecting, moving, leaving, the idle/alone watch, speaking and listening.

Guild id -> ``VoiceSession``, with one ``asyncio.Lock`` per guild serialising join/leave/move there. Bounded by the
number of guilds the bot is in: an entry exists only while the bot is in a voice channel there, and is removed when
it leaves or is disconnected. The bot leaves by itself after VOICE_IDLE_TIMEOUT_S alone or silent. Use from the
event loop.

The manager is given what it uses rather than the bot: the settings, the synthesizer, the task registry, the guild
settings (autospeak), the bot's user id, and how to start listening in a session (``bot/listening.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import discord
from discord.ext import voice_recv

from bot.members import resolve_mentions
from bot.opus import load_opus
from bot.tasks import TaskRegistry
from bot.voice_session import SpeechRequest, VoiceSession
from config import Settings
from services.errors import InvalidInput, ServiceError
from services.speech.tts import Synthesizer
from services.storage.guild_settings import GuildSettingsStore

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0

VoiceChannel = discord.VoiceChannel | discord.StageChannel

StartListening = Callable[[VoiceSession, int], Awaitable[None]]
"""Start listening in a session, posting transcripts and answers to a text channel (id); raises OpusUnavailable."""


def caller_voice_channel(interaction: discord.Interaction) -> VoiceChannel:
    """The caller's voice channel, if the bot may connect and speak there; else InvalidInput saying why."""
    guild = interaction.guild
    member = interaction.user
    channel = member.voice.channel if isinstance(member, discord.Member) and member.voice else None
    if guild is None or channel is None:
        raise InvalidInput("Join a voice channel first, then use this command again.")
    permissions = channel.permissions_for(guild.me)
    # Without Connect, Discord denies Speak too: name only what the admin has to grant first.
    missing = "Connect" if not permissions.connect else "Speak" if not permissions.speak else None
    if missing:
        raise InvalidInput(f"I lack the {missing} permission in {channel.mention}; ask an admin to grant it.")
    return channel


class VoiceManager:
    """The bot's voice sessions (see module docstring)."""

    def __init__(self, settings: Settings, *, synthesizer: Synthesizer, tasks: TaskRegistry,
                 guild_settings: GuildSettingsStore, start_listening: StartListening,
                 bot_user_id: Callable[[], int | None]) -> None:
        self._settings = settings
        self._synthesizer = synthesizer
        self._tasks = tasks
        self._guild_settings = guild_settings
        self._start_listening = start_listening
        self._bot_user_id = bot_user_id  # None until the bot has logged in
        self._sessions: dict[int, VoiceSession] = {}
        self._guild_locks: dict[int, asyncio.Lock] = {}
        self._idle_watch: asyncio.Task[None] | None = None
        self._voice_load: asyncio.Task[None] | None = None

    def load_voice(self) -> None:
        """Start loading the voice (Piper, a few seconds of CPU) in a thread, as the tracked task "tts-load", unless
        it is loaded or loading already; returns at once. Called when the bot joins a voice channel (and at start with
        VOICE_PRELOAD), so the first /speak does not wait for it. A voice that cannot be loaded is logged here in one
        line; /speak says it again to whoever asks."""
        if self._synthesizer.loaded or (self._voice_load is not None and not self._voice_load.done()):
            return
        self._voice_load = self._tasks.start(self._load_voice(), name="tts-load")

    @property
    def voice_loading(self) -> asyncio.Task[None] | None:
        """The task of the latest ``load_voice`` (done once the voice is loaded or failed to), or None before."""
        return self._voice_load

    async def _load_voice(self) -> None:
        try:
            await asyncio.to_thread(self._synthesizer.load)
        except ServiceError as exc:
            log.warning("the voice could not be loaded: %s", exc.user_message)

    def start(self) -> None:
        """Start the idle/alone watch (on the bot's event loop); a second call does nothing."""
        if self._idle_watch is None or self._idle_watch.done():
            self._idle_watch = self._tasks.start(self._watch_idle(), name="voice-idle-watch")

    def get(self, guild_id: int) -> VoiceSession | None:
        return self._sessions.get(guild_id)

    def connected(self, guild_id: int) -> VoiceSession | None:
        """The guild's session while its voice client is connected, else None."""
        session = self._sessions.get(guild_id)
        return session if session is not None and session.voice_client.is_connected() else None

    def all(self) -> list[VoiceSession]:
        return list(self._sessions.values())

    def _guild_lock(self, guild_id: int) -> asyncio.Lock:
        return self._guild_locks.setdefault(guild_id, asyncio.Lock())

    # -- presence ---------------------------------------------------------------------------------------------

    async def join(self, channel: VoiceChannel) -> VoiceSession:
        """Join (or move to) ``channel``; raises InvalidInput when busy elsewhere, OpusUnavailable without opus.

        The voice starts loading meanwhile (``load_voice``), if it is not loaded yet."""
        guild = channel.guild
        self.load_voice()
        await asyncio.to_thread(load_opus)  # OpusUnavailable says how to install it
        async with self._guild_lock(guild.id):
            session = self._sessions.get(guild.id)
            if session is not None and session.voice_client.is_connected():
                if session.channel == channel:
                    return session
                if session.busy:
                    raise InvalidInput(
                        f"I am busy speaking in {session.channel.mention}; "  # type: ignore[union-attr]
                        "wait until I am done, or use /stop first."
                    )
            if session is not None:
                # Moving is a fresh connection, not VoiceClient.move_to: in discord.py 2.7.1 the voice socket
                # reader can stay blocked (up to 30 s) in select() on the old, closed socket and miss the IP
                # discovery reply of the new one, so a move within 30 s of connecting could hang.
                del self._sessions[guild.id]
                await session.close()
            # Not deafened, and able to receive: /listen can start at any time without reconnecting.
            voice_client = await channel.connect(timeout=CONNECT_TIMEOUT_S, cls=voice_recv.VoiceRecvClient)
            session = VoiceSession(
                voice_client, synthesizer=self._synthesizer, tasks=self._tasks,
                queue_max=self._settings.VOICE_QUEUE_MAX, voice_history_max=self._settings.HISTORY_MAX_MESSAGES,
            )
            self._sessions[guild.id] = session
            return session

    async def leave(self, guild_id: int) -> bool:
        """Leave the guild's voice channel and forget its session; False when the bot was not in one."""
        async with self._guild_lock(guild_id):
            session = self._sessions.pop(guild_id, None)
            if session is None:
                return False
            await session.close()
            return True

    async def close(self, timeout_s: float) -> None:
        """Leave every voice channel, each within ``timeout_s`` (shutdown)."""
        for session in self.all():
            try:
                await asyncio.wait_for(self.leave(session.guild_id), timeout=timeout_s)
            except (TimeoutError, discord.DiscordException) as exc:
                log.warning("leaving voice in guild %s failed: %s", session.guild_id, exc)

    async def on_voice_state_update(self, member: discord.Member, after: discord.VoiceState) -> None:
        """Forget the session when someone else disconnected the bot (kick, channel deleted)."""
        bot_user_id = self._bot_user_id()
        if bot_user_id is not None and member.id == bot_user_id and after.channel is None:
            session = self._sessions.get(member.guild.id)
            if session is not None and not session.voice_client.is_connected():
                log.info("guild %s: disconnected from voice by someone else", member.guild.id)
                await self.leave(member.guild.id)

    async def _watch_idle(self) -> None:
        """Leave channels where the bot has been alone or silent for VOICE_IDLE_TIMEOUT_S."""
        timeout = self._settings.VOICE_IDLE_TIMEOUT_S
        alone_since: dict[int, float] = {}
        while True:
            await asyncio.sleep(min(5.0, timeout / 4))
            now = time.monotonic()
            for session in self.all():
                humans = [m for m in getattr(session.channel, "members", []) if not m.bot]
                if humans:
                    alone_since.pop(session.guild_id, None)
                else:
                    alone_since.setdefault(session.guild_id, now)
                alone = now - alone_since.get(session.guild_id, now) >= timeout
                idle = not session.busy and now - session.last_activity >= timeout
                # A dropped connection is not checked here: discord.py reconnects by itself, and a final
                # disconnect arrives as a voice state update (on_voice_state_update).
                if alone or idle:
                    log.info("guild %s: leaving voice (%s)", session.guild_id, "alone" if alone else "idle")
                    alone_since.pop(session.guild_id, None)
                    await self.leave(session.guild_id)

    # -- speaking ---------------------------------------------------------------------------------------------

    async def speak(self, guild: discord.Guild, join: VoiceChannel | None, text: str, member_id: int) -> SpeechRequest:
        """Queue ``text`` (mentions read as names) in ``guild``'s voice session, joining ``join`` first if given.

        Raises InvalidInput when the queue is full or the bot is busy elsewhere.
        """
        session = await self.join(join) if join is not None else self.connected(guild.id)
        if session is None:
            raise InvalidInput("I am not in a voice channel; use /join first.")
        return session.enqueue(resolve_mentions(guild, text), member_id)

    async def stop(self, guild_id: int) -> tuple[int, int]:
        """Stop the bot's answers in flight in the guild (``VoiceSession.stop_answers``); returns (speech requests
        dropped or cut, spoken questions dropped)."""
        session = self._sessions.get(guild_id)
        return await session.stop_answers() if session is not None else (0, 0)

    async def speak_answer(self, guild_id: int, member_id: int, text: str) -> None:
        """Speak a finished chat answer when autospeak is on and the asker is in the bot's voice channel."""
        if not await self._guild_settings.autospeak(guild_id):
            return
        session = self.connected(guild_id)
        if session is None or not any(m.id == member_id for m in getattr(session.channel, "members", [])):
            return
        try:
            session.enqueue(text, member_id)
        except InvalidInput as exc:
            log.info("guild %s: not speaking an answer: %s", guild_id, exc.user_message)

    # -- listening --------------------------------------------------------------------------------------------

    def can_listen(self, guild_id: int) -> VoiceSession:
        """The session to listen in; raises InvalidInput when the bot is not in voice or already listens."""
        session = self.connected(guild_id)
        if session is None:
            raise InvalidInput("I am not in a voice channel; use /join first, then /listen.")
        if session.listening is not None:
            raise InvalidInput("I am already listening; use `/listen stop:True` to stop.")
        return session

    async def listen(self, guild_id: int, text_channel_id: int) -> VoiceSession:
        """Start listening in the guild's voice channel (see ``can_listen`` for the errors)."""
        session = self.can_listen(guild_id)
        await self._start_listening(session, text_channel_id)
        return session

    async def stop_listening(self, guild_id: int) -> bool:
        """Stop listening in the guild; False when it was not listening."""
        session = self._sessions.get(guild_id)
        return session is not None and await session.stop_listening()
