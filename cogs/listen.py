"""Listening: /listen starts (or stops) the spoken conversation in the bot's voice channel.

While listening, each member's utterance is transcribed, posted to the text channel where /listen was used,
answered by the LLM and spoken back sentence by sentence (``bot/listening.py``, ``services/voice/conversation.py``).
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import member_cooldown
from bot.client import AssistantBot


class Listen(commands.Cog):
    """Spoken conversation (see module docstring)."""

    def __init__(self, bot: AssistantBot) -> None:
        self.bot = bot

    @app_commands.command(name="listen", description="Listen in my voice channel and answer what members say.")
    @app_commands.describe(stop="True to stop listening")
    @app_commands.guild_only()
    @member_cooldown("VOICE_COOLDOWN_S")
    async def listen(self, interaction: discord.Interaction, stop: bool = False) -> None:
        guild_id = interaction.guild_id or 0
        if stop:
            stopped = await self.bot.voice_sessions.stop_listening(guild_id)
            await interaction.response.send_message(
                "Stopped listening." if stopped else "I am not listening.", ephemeral=not stopped
            )
            return
        self.bot.voice_sessions.can_listen(guild_id)  # refusals answer at once, before deferring
        await interaction.response.defer(thinking=True)  # public: everyone must see that the bot listens
        session = await self.bot.voice_sessions.listen(guild_id, interaction.channel_id or 0)
        channel = session.channel
        await interaction.edit_original_response(content=(
            f"🎙️ Listening in {channel.mention if channel else 'the voice channel'}: what members say there is "
            "transcribed here and answered out loud. Use `/voice ignoreme on` to be left out, "
            "`/listen stop:True` to stop."
        ))


async def setup(bot: AssistantBot) -> None:
    await bot.add_cog(Listen(bot))
