"""Voice: /join, /leave, /speak, /stop, /voice autospeak, /voice ignoreme.

The bot joins the caller's voice channel and speaks what members ask, one request after another, through the
guild's voice session (``bot/voice_manager.py``: joining, moving, leaving, the idle watch).
"""

from __future__ import annotations

from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import admin_only, ensure_length, member_cooldown, set_max_length
from bot.client import AssistantBot
from bot.voice_manager import caller_voice_channel


class Voice(commands.Cog):
    """Voice channel presence and speech (see module docstring)."""

    voice = app_commands.Group(name="voice", description="Voice settings", guild_only=True)

    def __init__(self, bot: AssistantBot) -> None:
        self.bot = bot
        self.settings = bot.settings

    async def cog_load(self) -> None:
        set_max_length(self.speak, "text", self.settings.SPEAK_MAX_CHARS)
        self.bot.voice_sessions.start()

    async def cog_unload(self) -> None:
        await self.bot.voice_sessions.close(timeout_s=self.settings.SHUTDOWN_TIMEOUT_S)

    # -- commands ---------------------------------------------------------------------------------------

    @app_commands.command(name="join", description="Bring the assistant into your voice channel.")
    @app_commands.guild_only()
    @member_cooldown("VOICE_COOLDOWN_S")
    async def join(self, interaction: discord.Interaction) -> None:
        channel = caller_voice_channel(interaction)  # instant checks answer before deferring
        await interaction.response.defer(ephemeral=True, thinking=True)
        session = await self.bot.voice_sessions.join(channel)
        await interaction.edit_original_response(content=f"Joined {session.channel.mention}.")  # type: ignore[union-attr]

    @app_commands.command(name="leave", description="Make the assistant leave the voice channel.")
    @app_commands.guild_only()
    @member_cooldown("VOICE_COOLDOWN_S")
    async def leave(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        left = await self.bot.voice_sessions.leave(interaction.guild_id or 0)
        await interaction.edit_original_response(
            content="Left the voice channel." if left else "I am not in a voice channel."
        )

    @app_commands.command(name="speak", description="Make the assistant say something in your voice channel.")
    @app_commands.describe(text="What to say")
    @app_commands.guild_only()
    @member_cooldown("VOICE_COOLDOWN_S")
    async def speak(self, interaction: discord.Interaction, text: app_commands.Range[str, 1, 6000]) -> None:
        text = ensure_length(text, self.settings.SPEAK_MAX_CHARS, "Your text")
        # Not in voice yet: join the caller (checked before deferring, so a refusal answers at once).
        connected = self.bot.voice_sessions.connected(interaction.guild_id or 0)
        join = None if connected else caller_voice_channel(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild is not None  # guild_only
        request = await self.bot.voice_sessions.speak(interaction.guild, join, text, interaction.user.id)
        await interaction.edit_original_response(
            content="Speaking." if request.position == 0 else f"Queued: {request.position} before yours."
        )

    @app_commands.command(name="stop", description="Stop speaking, clear the speech queue and drop spoken questions "
                                                   "not answered yet.")
    @app_commands.guild_only()
    @member_cooldown("VOICE_COOLDOWN_S")
    async def stop(self, interaction: discord.Interaction) -> None:
        # No defer: cancelling the turns takes a few loop passes, far within Discord's 3 s.
        speech, questions = await self.bot.voice_sessions.stop(interaction.guild_id or 0)
        await interaction.response.send_message(stopped_sentence(speech, questions), ephemeral=True)

    @voice.command(name="autospeak", description="Also speak chat answers in the asker's voice channel (admins).")
    @app_commands.describe(mode="on: speak answers too; off: only write them")
    @member_cooldown("SETTINGS_COOLDOWN_S")
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

    # -- events ---------------------------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_voice_state_update(self, member: discord.Member, before: discord.VoiceState,
                                    after: discord.VoiceState) -> None:
        await self.bot.voice_sessions.on_voice_state_update(member, after)

    @commands.Cog.listener()
    async def on_answer_complete(self, guild_id: int | None, member_id: int, text: str) -> None:
        """A chat answer was finished: speak it too when autospeak is on (see VoiceManager.speak_answer)."""
        if guild_id is not None:
            await self.bot.voice_sessions.speak_answer(guild_id, member_id, text)


def stopped_sentence(speech: int, questions: int) -> str:
    """/stop's reply in one sentence: ``speech`` requests cut or dropped, spoken ``questions`` dropped before their
    answer ("Stopped 1 speech request and dropped 2 spoken questions not answered yet.")."""
    if not speech and not questions:
        return "Nothing is playing or waiting to be answered."
    parts = []
    if speech:
        parts.append(f"stopped {speech} speech request{'s' if speech != 1 else ''}")
    if questions:
        parts.append(f"dropped {questions} spoken question{'s' if questions != 1 else ''} not answered yet")
    sentence = " and ".join(parts)
    return f"{sentence[0].upper()}{sentence[1:]}."


async def setup(bot: AssistantBot) -> None:
    await bot.add_cog(Voice(bot))
