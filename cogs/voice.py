"""Voice: /join, /leave, /speak, /stop, /voice autospeak.

The bot joins the caller's voice channel and speaks what members ask, one request after another through
the guild's VoiceSession. It leaves after VOICE_IDLE_TIMEOUT_S alone or silent, and forgets the session
when someone else disconnects it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands, voice_recv

from bot.checks import admin_only, ensure_length, member_cooldown, set_max_length
from bot.client import AssistantBot
from bot.opus import load_opus
from bot.voice_session import VoiceSession
from services.errors import InvalidInput

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0
_MENTION = re.compile(r"<@!?(\d+)>")


class Voice(commands.Cog):
    """Voice channel presence and speech (see module docstring)."""

    voice = app_commands.Group(name="voice", description="Voice settings", guild_only=True)

    def __init__(self, bot: AssistantBot) -> None:
        self.bot = bot
        self.settings = bot.settings
        self.sessions = bot.voice_sessions

    async def cog_load(self) -> None:
        set_max_length(self.speak, "text", self.settings.SPEAK_MAX_CHARS)
        # Load the voice model now, in a thread, so the first /speak does not wait for it; the bot is ready
        # long before that finishes.
        self.bot.tasks.start(asyncio.to_thread(self.bot.synthesizer.load), name="tts-load")
        self.bot.tasks.start(self._watch_idle(), name="voice-idle-watch")

    async def cog_unload(self) -> None:
        for session in self.sessions.all():
            await self._leave(session.guild_id)

    # -- commands ---------------------------------------------------------------------------------------

    @app_commands.command(name="join", description="Bring the assistant into your voice channel.")
    @app_commands.guild_only()
    @member_cooldown("VOICE_COOLDOWN_S")
    async def join(self, interaction: discord.Interaction) -> None:
        channel = self._caller_channel(interaction)  # instant checks answer before deferring
        await interaction.response.defer(ephemeral=True, thinking=True)
        session = await self._connect(interaction, channel)
        await interaction.edit_original_response(content=f"Joined {session.channel.mention}.")  # type: ignore[union-attr]

    @app_commands.command(name="leave", description="Make the assistant leave the voice channel.")
    @app_commands.guild_only()
    @member_cooldown("VOICE_COOLDOWN_S")
    async def leave(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        left = await self._leave(interaction.guild_id or 0)
        await interaction.edit_original_response(
            content="Left the voice channel." if left else "I am not in a voice channel."
        )

    @app_commands.command(name="speak", description="Make the assistant say something in your voice channel.")
    @app_commands.describe(text="What to say")
    @app_commands.guild_only()
    @member_cooldown("VOICE_COOLDOWN_S")
    async def speak(self, interaction: discord.Interaction, text: app_commands.Range[str, 1, 6000]) -> None:
        text = ensure_length(text, self.settings.SPEAK_MAX_CHARS, "Your text")
        if not text:
            raise InvalidInput("There is nothing to say; write some text after /speak.")
        session = self.sessions.get(interaction.guild_id or 0)
        connected = session is not None and session.voice_client.is_connected()
        channel = None if connected else self._caller_channel(interaction)  # not in voice yet: join the caller
        await interaction.response.defer(ephemeral=True, thinking=True)
        if channel is not None:
            session = await self._connect(interaction, channel)
        assert session is not None
        request = session.enqueue(self._resolve_mentions(interaction.guild, text), interaction.user.id)
        await interaction.edit_original_response(
            content="Speaking." if request.position == 0 else f"Queued: {request.position} before yours."
        )

    @app_commands.command(name="stop", description="Stop speaking and clear the speech queue.")
    @app_commands.guild_only()
    @member_cooldown("VOICE_COOLDOWN_S")
    async def stop(self, interaction: discord.Interaction) -> None:
        session = self.sessions.get(interaction.guild_id or 0)
        dropped = session.stop() if session is not None else 0
        await interaction.response.send_message(
            f"Stopped ({dropped} request{'s' if dropped != 1 else ''} dropped)." if dropped else "Nothing is playing.",
            ephemeral=True,
        )

    @voice.command(name="autospeak", description="Also speak chat answers in the asker's voice channel (admins).")
    @app_commands.describe(mode="on: speak answers too; off: only write them")
    @app_commands.default_permissions(manage_guild=True)
    @member_cooldown("VOICE_COOLDOWN_S")
    @admin_only()
    async def autospeak(self, interaction: discord.Interaction, mode: Literal["on", "off"]) -> None:
        enabled = mode == "on"
        await self.bot.guild_settings.set_autospeak(interaction.guild_id or 0, enabled)
        await interaction.response.send_message(
            "Chat answers will also be spoken in voice." if enabled else "Chat answers will only be written.",
            ephemeral=True,
        )

    @voice.command(name="ignoreme", description="Choose whether the assistant listens to you in voice.")
    @app_commands.describe(mode="on: never transcribe me; off: listen to me again")
    @member_cooldown("VOICE_COOLDOWN_S")
    async def ignoreme(self, interaction: discord.Interaction, mode: Literal["on", "off"]) -> None:
        await self.bot.guild_settings.set_opted_out(interaction.guild_id or 0, interaction.user.id, mode == "on")
        await interaction.response.send_message(
            "I will not listen to you in voice." if mode == "on" else "I will listen to you again in voice.",
            ephemeral=True,
        )

    # -- joining and leaving ----------------------------------------------------------------------------

    def _caller_channel(self, interaction: discord.Interaction) -> discord.VoiceChannel | discord.StageChannel:
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

    async def _connect(self, interaction: discord.Interaction,
                       channel: discord.VoiceChannel | discord.StageChannel) -> VoiceSession:
        """Join (or move to) ``channel``; raises InvalidInput when busy elsewhere, OpusUnavailable without opus."""
        guild = channel.guild
        await asyncio.to_thread(load_opus)  # OpusUnavailable says how to install it
        async with self.sessions.guild_lock(guild.id):
            session = self.sessions.get(guild.id)
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
                self.sessions.pop(guild.id)
                await session.close()
            # Not deafened, and able to receive: /listen can start at any time without reconnecting.
            voice_client = await channel.connect(timeout=CONNECT_TIMEOUT_S, cls=voice_recv.VoiceRecvClient)
            session = VoiceSession(
                voice_client, synthesizer=self.bot.synthesizer, tasks=self.bot.tasks,
                queue_max=self.settings.VOICE_QUEUE_MAX, text_channel_id=interaction.channel_id,
                voice_history_max=self.settings.HISTORY_MAX_MESSAGES,
            )
            self.sessions.set(session)
            return session

    async def _leave(self, guild_id: int) -> bool:
        """Leave the guild's voice channel and forget its session; False when the bot was not in one."""
        async with self.sessions.guild_lock(guild_id):
            session = self.sessions.pop(guild_id)
            if session is None:
                return False
            await session.close()
            return True

    @commands.Cog.listener()
    async def on_voice_state_update(self, member: discord.Member, before: discord.VoiceState,
                                    after: discord.VoiceState) -> None:
        # Someone else disconnected the bot (kick, channel deleted): forget the session.
        if self.bot.user is not None and member.id == self.bot.user.id and after.channel is None:
            session = self.sessions.get(member.guild.id)
            if session is not None and not session.voice_client.is_connected():
                log.info("guild %s: disconnected from voice by someone else", member.guild.id)
                await self._leave(member.guild.id)

    async def _watch_idle(self) -> None:
        """Leave channels where the bot has been alone or silent for VOICE_IDLE_TIMEOUT_S."""
        timeout = self.settings.VOICE_IDLE_TIMEOUT_S
        alone_since: dict[int, float] = {}
        while True:
            await asyncio.sleep(min(5.0, timeout / 4))
            now = time.monotonic()
            for session in self.sessions.all():
                channel = session.channel
                humans = [m for m in getattr(channel, "members", []) if not m.bot]
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
                    await self._leave(session.guild_id)

    # -- speaking chat answers --------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_answer_complete(self, guild_id: int | None, member_id: int, text: str) -> None:
        """Speak a finished chat answer when autospeak is on and the asker is in the bot's voice channel."""
        if guild_id is None or not await self.bot.guild_settings.autospeak(guild_id):
            return
        session = self.sessions.get(guild_id)
        if session is None or not session.voice_client.is_connected():
            return
        members = getattr(session.channel, "members", [])
        if any(member.id == member_id for member in members):
            try:
                session.enqueue(text, member_id)
            except InvalidInput as exc:
                log.info("guild %s: not speaking an answer: %s", guild_id, exc.user_message)

    def _resolve_mentions(self, guild: discord.Guild | None, text: str) -> str:
        def name(match: re.Match[str]) -> str:
            member = guild.get_member(int(match.group(1))) if guild else None
            return member.display_name if member else "someone"

        return _MENTION.sub(name, text)


async def setup(bot: AssistantBot) -> None:
    await bot.add_cog(Voice(bot))
