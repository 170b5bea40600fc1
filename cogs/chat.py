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
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.answers import stream_answer
from bot.checks import InputTooLong, ensure_length, member_cooldown, message_cooldown, set_max_length
from bot.client import AssistantBot
from bot.downloads import read_attachment
from bot.kept_questions import from_interaction, from_message, keeper
from bot.members import without_mention_of
from bot.state import ChatTurn
from bot.streaming import StreamedReply, channel_reply, interaction_reply, message_reply
from bot.tree import error_message
from services.chat.answering import Grounding, Place, Question
from services.chat.attachments import (
    AttachmentRefused,
    TextAttachment,
    check_attachment,
    decode_text,
    vision_models,
)
from services.errors import InvalidInput, ServiceError
from services.storage.waiting_questions import WaitingQuestion

log = logging.getLogger(__name__)

# An interaction's token (and so the bot's right to edit its reply) lasts 15 minutes; a /chat whose turn has not
# come 10 minutes after it was sent gives up, keeping 5 minutes to stream its answer.
QUEUE_WAIT_MAX = timedelta(minutes=10)
THREAD_NAME_MAX = 100  # characters; Discord's limit for a thread's name
# The question of a message that is only attachments (no words).
ATTACHMENT_ONLY_QUESTION = "Please look at the attached file."


def queued_notice(ahead: int) -> str:
    """What a member whose message waits sees until the answer replaces it."""
    return f"⏳ Queued: {ahead} ahead of you in this channel; the answer will appear here."


def thread_name(question: str) -> str:
    """A thread's name from the question that opened it: one line, at most THREAD_NAME_MAX characters, cut at a
    word with "…" when longer."""
    name = " ".join(question.split())
    if len(name) <= THREAD_NAME_MAX:
        return name
    cut = name[: THREAD_NAME_MAX - 1]
    if " " in cut[THREAD_NAME_MAX // 2:]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:.-") + "…"


class Chat(commands.Cog):
    """Conversations with the LLM (see module docstring)."""

    def __init__(self, bot: AssistantBot) -> None:
        self.bot = bot
        self.settings = bot.settings
        self._mention_cooldown = message_cooldown(self.settings.CHAT_COOLDOWN_S)

    async def cog_load(self) -> None:
        set_max_length(self.chat, "message", self.settings.CHAT_MAX_CHARS)
        set_max_length(self.ask, "question", self.settings.ASK_MAX_CHARS)
        self.bot.resume_handlers.register("chat", self.resume_conversation)
        self.bot.resume_handlers.register("ask", self.resume_ask)

    # -- commands ---------------------------------------------------------------------------------------

    @app_commands.command(name="chat", description="Talk with the assistant; it remembers this channel's conversation.")
    @app_commands.describe(message="What you want to say",
                           thread="Open a thread named after your message; the assistant answers everything there")
    @member_cooldown("CHAT_COOLDOWN_S")
    async def chat(self, interaction: discord.Interaction, message: app_commands.Range[str, 1, 6000],
                   thread: bool = False) -> None:
        text = ensure_length(message, self.settings.CHAT_MAX_CHARS)
        if thread:
            await self._chat_in_new_thread(interaction, text)
            return
        # A place in the channel's queue is taken before deferring, so that a refusal is ephemeral.
        async with await self._join_queue(interaction.channel_id or 0, interaction.guild_id) as place:
            await interaction.response.defer(thinking=True)
            reply = interaction_reply(interaction, self.settings.STREAM_EDIT_INTERVAL_S, self.bot.rate_limits)
            reply.keep = keeper(self.bot, from_interaction("chat", interaction, text))
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
        reply = interaction_reply(interaction, self.settings.STREAM_EDIT_INTERVAL_S, self.bot.rate_limits)
        reply.keep = keeper(self.bot, from_interaction("ask", interaction, text))
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

    async def _chat_in_new_thread(self, interaction: discord.Interaction, text: str) -> None:
        """/chat thread:True: the reply names the thread, which is started from it; the answer streams in there."""
        channel = interaction.channel
        if not isinstance(channel, discord.TextChannel):
            raise InvalidInput("A thread can only be opened in a server's text channel; use /chat without thread here.")
        await interaction.response.defer(thinking=True)
        name = thread_name(text)
        await interaction.edit_original_response(content=f"🧵 **{discord.utils.escape_markdown(name)}**")
        started = await (await interaction.original_response()).create_thread(name=name)
        await self.bot.bot_threads.add(started.id, channel.guild.id, channel.id)
        async with await self._join_queue(started.id, channel.guild.id) as place:
            reply = channel_reply(started, self.settings.STREAM_EDIT_INTERVAL_S, self.bot.rate_limits)
            reply.keep = keeper(self.bot, WaitingQuestion("chat", channel.guild.id, started.id, interaction.user.id,
                                                          text, time.time()))
            await self.bot.run_tracked(self.converse(place, interaction.user.id, text, reply),
                                       name=f"chat-thread:{interaction.id}")

    # -- threads -------------------------------------------------------------------------------------------

    async def _bot_thread(self, channel: Any) -> bool:
        """Whether ``channel`` is a thread the bot started and still remembers (``bot_threads``)."""
        if isinstance(channel, discord.TextChannel | discord.VoiceChannel | discord.DMChannel):
            return False  # not a thread: no database read for every message of a channel
        return await self.bot.bot_threads.parent_of(channel.id) is not None

    @commands.Cog.listener()
    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        """A deleted thread the bot started: forget it, its session and its conversation (nobody can read it)."""
        if not await self.bot.bot_threads.remove(payload.thread_id):
            return
        async with self.bot.chat_sessions.turn(payload.thread_id, payload.guild_id):  # after an answer in progress
            deleted = await self.bot.conversations.clear(payload.thread_id)
        await self.bot.chat_sessions.forget(payload.thread_id)
        log.info("thread %s was deleted: forgot it and its %d messages", payload.thread_id, deleted)

    # -- mentions and replies ---------------------------------------------------------------------------

    @commands.Cog.listener("on_message")
    async def on_mention(self, message: discord.Message) -> None:
        if message.author.bot or message.is_system() or self.bot.shutting_down or self.bot.user is None:
            return  # is_system: joins, pins, boosts... which a free channel must not answer
        guild_id = message.guild.id if message.guild else None
        in_bot_thread = guild_id is not None and await self._bot_thread(message.channel)
        free_channel = (guild_id is not None and not in_bot_thread
                        and (await self.bot.chat_settings_of(guild_id, message.channel)).free_channel.value)
        addressed = await self._addresses_bot(message)
        if not (in_bot_thread or free_channel or addressed):
            return
        text = without_mention_of(self.bot.user.id, message.content)
        if not text and message.attachments:
            text = ATTACHMENT_ONLY_QUESTION
        if not text and (free_channel or in_bot_thread):
            return  # e.g. only a sticker: nothing to answer
        if not text:
            await message.reply("Ask me something after the mention, e.g. `@me what can you do?`", mention_author=False)
            return
        retry_after = self._mention_cooldown.update_rate_limit(message)
        if retry_after:
            await message.reply(f"Slow down: you can talk to me again in {retry_after:.0f} s.", mention_author=False)
            return
        reply = message_reply(message, self.settings.STREAM_EDIT_INTERVAL_S, self.bot.rate_limits)
        try:
            text = ensure_length(text, self.settings.CHAT_MAX_CHARS)
            chat = await self.bot.chat_settings_of(guild_id, message.channel)
            files, images = await self._read_attachments(message.attachments, chat.model.value)
            channel: Any = message.channel
            if free_channel and addressed and isinstance(channel, discord.TextChannel):
                # A mention in a free channel opens a thread from the question, and the answer goes there.
                channel = await message.create_thread(name=thread_name(text))
                await self.bot.bot_threads.add(channel.id, channel.guild.id, message.channel.id)
                reply = channel_reply(channel, self.settings.STREAM_EDIT_INTERVAL_S, self.bot.rate_limits)
            elif in_bot_thread:
                await self.bot.bot_threads.touch(channel.id)
            reply.keep = keeper(self.bot, from_message(message, text, channel_id=None if channel is message.channel
                                                       else channel.id))
            async with await self._join_queue(channel.id, guild_id) as place:
                await channel.typing()
                # No deadline: a message reply, unlike an interaction's, can be edited at any time.
                await self.bot.run_tracked(self.converse(place, message.author.id, text, reply, files=files,
                                                         images=images), name=f"mention:{message.id}")
        except (ServiceError, InputTooLong, discord.HTTPException) as exc:
            try:
                await reply.show(error_message(exc))  # in place of a queue notice, when one is shown
            except discord.HTTPException as send_error:
                log.warning("could not reply to mention %s: %s", message.id, send_error)

    async def _read_attachments(self, attachments: list[discord.Attachment],
                                model: str) -> tuple[list[TextAttachment], list[bytes]]:
        """The text files and images of a message, for ``model``; raises AttachmentRefused (one sentence) for a file
        of another type, over ATTACHMENT_MAX_BYTES, binary or not UTF-8, and for an image when ``model`` cannot see
        images (naming one that can, when Ollama has one)."""
        limit = self.settings.ATTACHMENT_MAX_BYTES
        kinds = [check_attachment(a.filename, a.content_type, a.size, limit) for a in attachments]
        if "image" in kinds and "vision" not in await self.bot.llm.capabilities(model):
            seeing = await vision_models(self.bot.llm)
            advice = (f"`{seeing[0]}` can: an admin can switch with `/settings model`." if seeing
                      else "no model on this Ollama server can (pull one such as llava or gemma3).")
            raise AttachmentRefused(f"The model `{model}` cannot see images; {advice}")
        files, images = [], []
        for attachment, kind in zip(attachments, kinds, strict=True):
            data = await read_attachment(attachment, limit)
            if kind == "image":
                images.append(data)
            else:
                files.append(await asyncio.to_thread(decode_text, attachment.filename, data))
        return files, images

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
                       wait_timeout_s: float | None = None, files: Sequence[TextAttachment] = (),
                       images: Sequence[bytes] = ()) -> None:
        """Answer ``text`` (with attached ``files`` and ``images``) in the channel's conversation when ``place``'s
        turn comes, streaming into ``reply`` (``services.chat.answering``: the turn is remembered before the next
        message's turn comes).

        While it waits, ``reply`` shows the queue notice; ChatWaitTimeout after ``wait_timeout_s`` seconds.
        Cancelled (shutdown) while waiting or before any answer, ``reply`` says it was not answered.
        """
        channel_id, guild_id = place.session.channel_id, place.session.guild_id
        try:
            if place.session.turn_lock.locked():
                await reply.show(queued_notice(max(place.ahead, 1)))
            async with place.hold(wait_timeout_s):
                where = Place(guild_id, channel_id, await self.bot.settings_channel_of(channel_id), author_id)
                prepared = await self.bot.answering.prepare(Question(text, where, files=files, images=images))
                answer = await stream_answer(self.bot.answering, prepared, reply)
        except asyncio.CancelledError:
            await reply.finish_interrupted()  # no-op when the stream already finished the reply
            raise
        if answer is not None:
            self.bot.dispatch("answer_complete", guild_id, author_id, answer)

    async def resume_conversation(self, question: WaitingQuestion, reply: StreamedReply,
                                  message: discord.Message | None) -> None:
        """Answer a kept /chat, mention or thread question (``bot/kept_questions.py``) in its channel's conversation,
        with the attachments of ``message`` read again; a /chat still gives up QUEUE_WAIT_MAX after it was sent."""
        files: list[TextAttachment] = []
        images: list[bytes] = []
        if message is not None and message.attachments:
            chat = await self.bot.chat_settings_of(question.guild_id, question.channel_id)
            files, images = await self._read_attachments(message.attachments, chat.model.value)
        wait_s = None
        if question.interaction_created_at is not None:
            wait_s = max(0.0, question.interaction_created_at + QUEUE_WAIT_MAX.total_seconds() - time.time())
        async with await self._join_queue(question.channel_id, question.guild_id) as place:
            await self.converse(place, question.member_id, question.question, reply, wait_timeout_s=wait_s,
                                files=files, images=images)

    async def resume_ask(self, question: WaitingQuestion, reply: StreamedReply,
                         message: discord.Message | None) -> None:
        """Answer a kept /ask question (``bot/kept_questions.py``)."""
        await self.answer_once(question.guild_id, question.channel_id, question.member_id, question.question, reply)

    async def answer_once(self, guild_id: int | None, channel: Any, member_id: int, question: str,
                          reply: StreamedReply) -> str | None:
        """Answer ``question`` of the member ``member_id`` without conversation, grounded in the guild's documents
        when relevant, with the persona and model of ``channel`` (a channel, thread or channel id)."""
        channel_id = channel if isinstance(channel, int) else channel.id
        where = Place(guild_id, channel_id, await self.bot.settings_channel_of(channel), member_id)
        prepared = await self.bot.answering.prepare(Question(question, where, Grounding.DOCUMENTS))
        return await stream_answer(self.bot.answering, prepared, reply)


async def setup(bot: AssistantBot) -> None:
    await bot.add_cog(Chat(bot))
