"""Forgetting: /forget me (any member) and /forget channel (admins).

``/forget me`` deletes, in this guild, every message the member wrote to the bot (chat, mentions, and voice
transcripts when STORE_VOICE_TRANSCRIPTS keeps them) and the bot's answers to those messages, since an answer
quotes or builds on what it answers; in memory, their turns of the current voice conversation go too. Their
``/voice ignoreme`` choice is kept: it is what they asked for, and deleting it would make the bot listen to them
again. ``/forget channel`` deletes the whole conversation of this channel (or thread). Both also delete the
questions kept from a shutdown to be answered after the restart (the member's, the channel's). Both answer,
ephemerally, with what was deleted.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import admin_only, member_cooldown
from bot.client import AssistantBot

log = logging.getLogger(__name__)


@app_commands.guild_only()
class Forget(commands.GroupCog, group_name="forget", group_description="Delete what the assistant remembers"):
    """/forget (see module docstring)."""

    def __init__(self, bot: AssistantBot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="me", description="Delete your messages to the assistant here, and its answers.")
    @member_cooldown("CHAT_COOLDOWN_S")
    async def me(self, interaction: discord.Interaction) -> None:
        guild_id, user_id = interaction.guild_id or 0, interaction.user.id
        messages, answers = await self.bot.conversations.forget_member(guild_id, user_id)
        waiting = await self.bot.waiting_questions.forget_member(guild_id, user_id)
        session = self.bot.voice_sessions.get(guild_id)
        in_voice = session.voice_history.forget(user_id) if session is not None else 0
        log.info("guild %s: member %s had the bot forget them: %d messages, %d answers, %d waiting questions,"
                 " %d voice messages in memory", guild_id, user_id, messages, answers, waiting, in_voice)
        kept = f", {waiting} of your questions kept for after a restart" if waiting else ""
        voice = f", and {in_voice} messages of the current voice conversation" if in_voice else ""
        await interaction.response.send_message(
            f"Forgotten: {messages} of your messages and {answers} of my answers to them{kept}{voice}.", ephemeral=True)

    @app_commands.command(name="channel", description="Delete this channel's conversation with the assistant (admins).")
    @member_cooldown("SETTINGS_COOLDOWN_S")
    @admin_only()
    async def channel(self, interaction: discord.Interaction) -> None:
        guild_id, channel_id = interaction.guild_id or 0, interaction.channel_id or 0
        # Deferred: the channel's turn waits for an answer still streaming here, which may take more than 3 s.
        await interaction.response.defer(ephemeral=True, thinking=True)
        async with self.bot.chat_sessions.turn(channel_id, guild_id):
            deleted = await self.bot.conversations.clear(channel_id)
        await self.bot.chat_sessions.forget(channel_id)
        waiting = await self.bot.waiting_questions.forget_channel(channel_id)
        session = self.bot.voice_sessions.get(guild_id)
        in_voice = 0
        if session is not None and session.channel is not None and session.channel.id == channel_id:
            in_voice = session.voice_history.forget()
        log.info("guild %s channel %s: member %s had the bot forget the channel: %d messages, %d waiting questions,"
                 " %d voice messages in memory", guild_id, channel_id, interaction.user.id, deleted, waiting, in_voice)
        kept = f", {waiting} questions kept for after a restart" if waiting else ""
        voice = f" and {in_voice} of the current voice conversation" if in_voice else ""
        await interaction.edit_original_response(
            content=f"Forgotten: {deleted} messages of this channel{kept}{voice}.")


async def setup(bot: AssistantBot) -> None:
    await bot.add_cog(Forget(bot))
