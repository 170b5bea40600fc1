"""Chat with the local LLM: /chat, /ask, /reset, and replies to mentions, replies and free channels.

A channel (or thread) has one conversation, remembered in SQLite; /chat and mentions continue it, /ask is
one-shot and grounded in the guild's documents when they are relevant. Answers stream into the reply. The persona
and model are the channel's (``/settings``, ``cogs/settings.py``); in a free channel every member's message is
answered as if it mentioned the bot.

A channel answers one message at a time. A message that must wait shows "Queued: N ahead of you", and that
reply becomes its answer; past CHAT_QUEUE_MAX waiting, a message is refused at once (ephemerally for /chat).
Discord lets the bot edit an interaction's reply for 15 minutes only, so a /chat still waiting QUEUE_WAIT_MAX
after it was sent gives up with a sentence, leaving the rest of that time to stream its answer. The bound makes
that rare: with CHAT_QUEUE_MAX at its default of 5, it takes answers of two minutes each to wait that long.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import InputTooLong, ensure_length, member_cooldown, message_cooldown, set_max_length
from bot.client import AssistantBot
from bot.members import without_mention_of
from bot.state import ChatTurn
from bot.streaming import StreamedReply, interaction_reply, message_reply
from bot.tree import error_message
from services.conversations import build_context
from services.errors import ServiceError
from services.grounding import ground

log = logging.getLogger(__name__)

# An interaction's token (and so the bot's right to edit its reply) lasts 15 minutes; a /chat whose turn has not
# come 10 minutes after it was sent gives up, keeping 5 minutes to stream its answer.
QUEUE_WAIT_MAX = timedelta(minutes=10)


def queued_notice(ahead: int) -> str:
    """What a member whose message waits sees until the answer replaces it."""
    return f"⏳ Queued: {ahead} ahead of you in this channel; the answer will appear here."


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
        # A place in the channel's queue is taken before deferring, so that a refusal is ephemeral.
        async with await self._join_queue(interaction.channel_id or 0, interaction.guild_id) as place:
            await interaction.response.defer(thinking=True)
            reply = interaction_reply(interaction, self.settings.STREAM_EDIT_INTERVAL_S)
            wait_s = (interaction.created_at + QUEUE_WAIT_MAX - discord.utils.utcnow()).total_seconds()
            await self.bot.run_tracked(
                self.converse(place, interaction.user.id, text, reply, wait_timeout_s=max(0.0, wait_s)),
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
            self.answer_once(interaction.guild_id, interaction.channel or interaction.channel_id or 0,
                             interaction.user.id, text, reply),
            name=f"ask:{interaction.id}",
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
        if message.author.bot or message.is_system() or self.bot.shutting_down or self.bot.user is None:
            return  # is_system: joins, pins, boosts... which a free channel must not answer
        guild_id = message.guild.id if message.guild else None
        free = guild_id is not None and (await self.bot.chat_settings_of(guild_id, message.channel)).free_channel.value
        if not free and not await self._addresses_bot(message):
            return
        text = without_mention_of(self.bot.user.id, message.content)
        if not text and free:
            return  # e.g. only an attachment or a sticker: nothing to answer
        if not text:
            await message.reply("Ask me something after the mention, e.g. `@me what can you do?`", mention_author=False)
            return
        retry_after = self._mention_cooldown.update_rate_limit(message)
        if retry_after:
            await message.reply(f"Slow down: you can talk to me again in {retry_after:.0f} s.", mention_author=False)
            return
        reply = message_reply(message, self.settings.STREAM_EDIT_INTERVAL_S)
        try:
            text = ensure_length(text, self.settings.CHAT_MAX_CHARS)
            async with await self._join_queue(message.channel.id, guild_id) as place:
                await message.channel.typing()
                # No deadline: a message reply, unlike an interaction's, can be edited at any time.
                await self.bot.run_tracked(self.converse(place, message.author.id, text, reply),
                                           name=f"mention:{message.id}")
        except (ServiceError, InputTooLong, discord.HTTPException) as exc:
            try:
                await reply.show(error_message(exc))  # in place of a queue notice, when one is shown
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

    async def _join_queue(self, channel_id: int, guild_id: int | None) -> ChatTurn:
        """A place in the channel's queue; raises ChatQueueFull when CHAT_QUEUE_MAX messages already wait."""
        return await self.bot.chat_sessions.join(channel_id, guild_id, max_waiting=self.settings.CHAT_QUEUE_MAX)

    async def converse(self, place: ChatTurn, author_id: int, text: str, reply: StreamedReply, *,
                       wait_timeout_s: float | None = None) -> None:
        """Answer ``text`` in the channel's conversation when ``place``'s turn comes, streaming into ``reply``;
        store the turn.

        While it waits, ``reply`` shows the queue notice; ChatWaitTimeout after ``wait_timeout_s`` seconds.
        Cancelled (shutdown) while waiting or before any answer, ``reply`` says it was not answered.
        """
        channel_id, guild_id = place.session.channel_id, place.session.guild_id
        try:
            if place.session.turn_lock.locked():
                await reply.show(queued_notice(max(place.ahead, 1)))
            async with place.hold(wait_timeout_s):
                chat = await self.bot.chat_settings_of(guild_id, channel_id)
                history = await self.bot.conversations.history(channel_id)
                messages = build_context(chat.persona.value, history, text, self.settings.HISTORY_TOKEN_BUDGET)
                try:
                    answer = await reply.stream(self.bot.answer_stream(messages, model=chat.model.value,
                                                                       member_id=author_id, reply=reply,
                                                                       show_thinking=chat.show_thinking.value))
                except asyncio.CancelledError:
                    # Shutting down midway: what the member saw is remembered, marked as cut short.
                    if reply.text.strip():
                        await asyncio.shield(self.bot.conversations.add_turn(
                            channel_id, guild_id, author_id, text, reply.text + " [interrupted]"))
                    raise
                if answer is not None:  # stored before the turn passes on: the next message sees this answer
                    await self.bot.conversations.add_turn(channel_id, guild_id, author_id, text, answer)
        except asyncio.CancelledError:
            await reply.finish_interrupted()  # no-op when the stream already finished the reply
            raise
        if answer is not None:
            self.bot.dispatch("answer_complete", guild_id, author_id, answer)

    async def answer_once(self, guild_id: int | None, channel: Any, member_id: int, question: str,
                          reply: StreamedReply) -> str | None:
        """Answer ``question`` of the member ``member_id`` without conversation, grounded in the guild's documents
        when relevant, with the persona and model of ``channel`` (a channel, thread or channel id)."""
        chat = await self.bot.chat_settings_of(guild_id, channel)
        prompt = await ground(self.bot.index, guild_id, question, system_prompt=chat.persona.value,
                              top_k=self.settings.RETRIEVAL_TOP_K, min_score=self.settings.RETRIEVAL_MIN_SCORE)
        return await reply.stream(self.bot.answer_stream(prompt.messages, model=chat.model.value,
                                                         member_id=member_id, reply=reply,
                                                         show_thinking=chat.show_thinking.value),
                                  suffix=prompt.sources)


async def setup(bot: AssistantBot) -> None:
    await bot.add_cog(Chat(bot))
