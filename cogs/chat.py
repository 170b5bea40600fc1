"""Chat with the local LLM: /chat, /ask, /reset, and replies to mentions and replies.

A channel (or thread) has one conversation, remembered in SQLite; /chat and mentions continue it, /ask is
one-shot and grounded in the guild's documents when they are relevant. Answers stream into the reply.
"""

from __future__ import annotations

import asyncio
import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import InputTooLong, ensure_length, member_cooldown, message_cooldown, set_max_length
from bot.client import AssistantBot
from bot.members import without_mention_of
from bot.streaming import StreamedReply, interaction_reply, message_reply
from bot.tree import error_message
from services.conversations import build_context
from services.errors import ServiceError
from services.grounding import ground

log = logging.getLogger(__name__)


class Chat(commands.Cog):
    """Conversations with the LLM (see module docstring)."""

    def __init__(self, bot: AssistantBot) -> None:
        self.bot = bot
        self.settings = bot.settings
        self._mention_cooldown = message_cooldown(self.settings.CHAT_COOLDOWN_S)

    async def cog_load(self) -> None:
        set_max_length(self.chat, "message", self.settings.CHAT_MAX_CHARS)
        set_max_length(self.ask, "question", self.settings.ASK_MAX_CHARS)

    # -- commands ---------------------------------------------------------------------------------------

    @app_commands.command(name="chat", description="Talk with the assistant; it remembers this channel's conversation.")
    @app_commands.describe(message="What you want to say")
    @member_cooldown("CHAT_COOLDOWN_S")
    async def chat(self, interaction: discord.Interaction, message: app_commands.Range[str, 1, 6000]) -> None:
        text = ensure_length(message, self.settings.CHAT_MAX_CHARS)
        await interaction.response.defer(thinking=True)
        reply = interaction_reply(interaction, self.settings.STREAM_EDIT_INTERVAL_S)
        await self.bot.run_tracked(
            self.converse(interaction.channel_id or 0, interaction.guild_id, interaction.user.id, text, reply),
            name=f"chat:{interaction.id}",
        )

    @app_commands.command(
        name="ask", description="Ask a one-off question, answered from the server's documents when they help."
    )
    @app_commands.describe(question="Your question")
    @member_cooldown("CHAT_COOLDOWN_S")
    async def ask(self, interaction: discord.Interaction, question: app_commands.Range[str, 1, 6000]) -> None:
        text = ensure_length(question, self.settings.ASK_MAX_CHARS, "Your question")
        await interaction.response.defer(thinking=True)
        reply = interaction_reply(interaction, self.settings.STREAM_EDIT_INTERVAL_S)
        answer = await self.bot.run_tracked(
            self.answer_once(interaction.guild_id, text, reply), name=f"ask:{interaction.id}"
        )
        if answer is not None:
            self.bot.dispatch("answer_complete", interaction.guild_id, interaction.user.id, answer)

    @app_commands.command(name="reset", description="Forget this channel's conversation with the assistant.")
    @app_commands.default_permissions(manage_messages=True)
    @member_cooldown("CHAT_COOLDOWN_S")
    async def reset(self, interaction: discord.Interaction) -> None:
        # default_permissions only hides the command in Discord's client; check the real permission too.
        if interaction.guild is not None and not interaction.permissions.manage_messages:
            raise app_commands.MissingPermissions(["manage_messages"])
        # Deferred: the turn lock waits for an answer still streaming in this channel, which may take > 3 s.
        await interaction.response.defer(ephemeral=True, thinking=True)
        channel_id = interaction.channel_id or 0
        async with self.bot.chat_sessions.turn(channel_id, interaction.guild_id):
            deleted = await self.bot.conversations.clear(channel_id)
        await self.bot.chat_sessions.forget(channel_id)
        await interaction.edit_original_response(content=f"Conversation cleared ({deleted} messages forgotten).")

    # -- mentions and replies ---------------------------------------------------------------------------

    @commands.Cog.listener("on_message")
    async def on_mention(self, message: discord.Message) -> None:
        if message.author.bot or self.bot.shutting_down or self.bot.user is None:
            return
        if not await self._addresses_bot(message):
            return
        text = without_mention_of(self.bot.user.id, message.content)
        if not text:
            await message.reply("Ask me something after the mention, e.g. `@me what can you do?`", mention_author=False)
            return
        retry_after = self._mention_cooldown.update_rate_limit(message)
        if retry_after:
            await message.reply(f"Slow down: you can talk to me again in {retry_after:.0f} s.", mention_author=False)
            return
        try:
            text = ensure_length(text, self.settings.CHAT_MAX_CHARS)
            reply = message_reply(message, self.settings.STREAM_EDIT_INTERVAL_S)
            await message.channel.typing()
            await self.bot.run_tracked(
                self.converse(message.channel.id, message.guild.id if message.guild else None, message.author.id,
                              text, reply),
                name=f"mention:{message.id}",
            )
        except (ServiceError, InputTooLong, discord.HTTPException) as exc:
            try:
                await message.reply(error_message(exc), mention_author=False)
            except discord.HTTPException as send_error:
                log.warning("could not reply to mention %s: %s", message.id, send_error)

    async def _addresses_bot(self, message: discord.Message) -> bool:
        """True for a message that mentions the bot or replies to one of its messages."""
        assert self.bot.user is not None
        if any(user.id == self.bot.user.id for user in message.mentions):
            return True
        reference = message.reference
        if reference is None or reference.message_id is None:
            return False
        replied = reference.cached_message or reference.resolved
        if replied is None:
            try:
                replied = await message.channel.fetch_message(reference.message_id)
            except discord.HTTPException:
                return False
        return isinstance(replied, discord.Message) and replied.author.id == self.bot.user.id

    # -- the work ---------------------------------------------------------------------------------------

    async def converse(self, channel_id: int, guild_id: int | None, author_id: int, text: str,
                       reply: StreamedReply) -> None:
        """Answer ``text`` in the channel's conversation, streaming into ``reply``; store the turn."""
        async with self.bot.chat_sessions.turn(channel_id, guild_id):
            history = await self.bot.conversations.history(channel_id)
            messages = build_context(self.settings.SYSTEM_PROMPT, history, text, self.settings.HISTORY_TOKEN_BUDGET)
            try:
                answer = await reply.stream(self.bot.llm.chat_stream(messages))
            except asyncio.CancelledError:
                # Shutting down midway: what the member saw is remembered, marked as cut short.
                if reply.text.strip():
                    await asyncio.shield(self.bot.conversations.add_turn(
                        channel_id, guild_id, author_id, text, reply.text + " [interrupted]"))
                raise
            if answer is not None:
                await self.bot.conversations.add_turn(channel_id, guild_id, author_id, text, answer)
                self.bot.dispatch("answer_complete", guild_id, author_id, answer)

    async def answer_once(self, guild_id: int | None, question: str, reply: StreamedReply) -> str | None:
        """Answer ``question`` without conversation, grounded in the guild's documents when relevant."""
        prompt = await ground(self.bot.index, guild_id, question, system_prompt=self.settings.SYSTEM_PROMPT,
                              top_k=self.settings.RETRIEVAL_TOP_K, min_score=self.settings.RETRIEVAL_MIN_SCORE)
        return await reply.stream(self.bot.llm.chat_stream(prompt.messages), suffix=prompt.sources)


async def setup(bot: AssistantBot) -> None:
    await bot.add_cog(Chat(bot))
