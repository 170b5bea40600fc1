"""Questions kept across a restart: what was still waiting for the model at shutdown is answered when the bot is back.

At shutdown, a text question cancelled before it reached the model (``StreamedReply.started`` still False) is
stored by the ``keep`` callback its cog gave its reply (``keeper``) in ``waiting_questions``
(``services/storage/waiting_questions.py``, at most LLM_QUEUE_MAX), and its message says so (``bot.streaming.KEPT``).
Voice turns are not kept: they make no sense after a restart.

Once the next bot is ready, ``resume_waiting_questions`` puts them back, in the order they were first queued (each
once the one before has its place, ``StreamedReply.placed``), each through the handler its cog registered for its
kind (``ResumeHandlers``; a kind without one is logged and dropped), so the channel queues and the fair LLM queue
apply again. The answer goes where the member looks:

- an interaction's original response, edited through its webhook (``discord.Webhook.partial`` with the application
  id and the interaction token). Discord accepts the token for 15 minutes from the interaction
  (https://discord.com/developers/docs/interactions/receiving-and-responding), so a question older than
  TOKEN_USABLE_S is dropped and logged: it could not be answered in place any more;
- a reply to the member's message; a message or channel deleted meanwhile drops the question (logged, no traceback);
- else a new message in the channel (a thread the bot opened for the question).

In the last two cases the bot's message that said the question is kept (its id stored with it) becomes the answer,
edited in place, so no notice is left beside the answer; if it was deleted meanwhile, the answer is sent anew.

A row is deleted once its question is answered or dropped. The bot may crash between answering and deleting: that
question is then answered a second time after the next start, never lost.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

import discord

from bot.ratelimits import RateLimits
from bot.streaming import Keeper, StreamedReply, channel_reply, interaction_budget, message_reply
from bot.tasks import TaskRegistry
from bot.tree import error_message
from config import Settings
from services.errors import ServiceError
from services.storage.waiting_questions import KINDS, WaitingQuestion, WaitingQuestionStore

log = logging.getLogger(__name__)

# Seconds after the interaction that its reply is still worth starting: Discord's 15 minutes, less a minute to answer.
TOKEN_USABLE_S = 14 * 60

Kind = Literal["chat", "ask", "docs"]
"""What a kept question was, and so which cog answers it again: ``chat`` (/chat, a mention, a thread's message) and
``ask`` (/ask) in cogs/chat.py, ``docs`` (/docs ask) in cogs/documents.py. The kinds the store keeps
(``services.storage.waiting_questions.KINDS``), stored as is in ``WaitingQuestion.kind``."""

Resume = Callable[[WaitingQuestion, StreamedReply, discord.Message | None], Awaitable[object]]
"""A cog's handler for one kind: ``(question, reply, message)`` answers ``question`` into ``reply``; ``message`` is
the member's message when the question came as one (its attachments can be read again), else None. Raises what the
normal path raises (ServiceError, discord.HTTPException); the error sentence is then shown in ``reply``."""


class ResumeHandlers:
    """Kind -> the handler that answers a kept question of that kind again, registered by its cog at ``cog_load``."""

    def __init__(self) -> None:
        self._handlers: dict[str, Resume] = {}

    def register(self, kind: Kind, handler: Resume) -> None:
        """Answer the kept questions of ``kind`` with ``handler`` (replacing any before); raises ValueError for a kind
        the store does not keep."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind of kept question {kind!r}; the kinds are {', '.join(KINDS)}")
        self._handlers[kind] = handler

    def lookup(self, kind: str) -> Resume | None:
        """The handler of ``kind`` (as read from the database), None when no cog registered one for it."""
        return self._handlers.get(kind)


class Keeping(Protocol):
    """Where questions are kept, and whether they are to be kept now: the bot is one."""

    @property
    def shutting_down(self) -> bool: ...

    @property
    def waiting_questions(self) -> WaitingQuestionStore: ...


def from_interaction(kind: Kind, interaction: discord.Interaction, question: str) -> WaitingQuestion:
    """The question of a slash command (``kind``: ``chat``, ``ask`` or ``docs``), answered in its original response."""
    return WaitingQuestion(kind, interaction.guild_id, interaction.channel_id or 0, interaction.user.id, question,
                           time.time(), application_id=interaction.application_id,
                           interaction_token=interaction.token,
                           interaction_created_at=interaction.created_at.timestamp())


def from_message(message: discord.Message, question: str, *, channel_id: int | None = None) -> WaitingQuestion:
    """The question of a member's ``message`` (a conversation turn), answered by a reply to it, or, with
    ``channel_id`` (a thread the bot opened for it), by a new message there."""
    return WaitingQuestion("chat", message.guild.id if message.guild else None, channel_id or message.channel.id,
                           message.author.id, question, time.time(),
                           message_id=None if channel_id else message.id)


def keeper(bot: Keeping, question: WaitingQuestion) -> Keeper:
    """A ``StreamedReply.keep`` that stores ``question`` when the bot is shutting down, then the id of its notice."""
    return _Keeper(bot, question)


class _Keeper:
    def __init__(self, bot: Keeping, question: WaitingQuestion) -> None:
        self.bot = bot
        self.question = question
        self.row_id: int | None = None

    async def keep(self) -> bool:
        if not self.bot.shutting_down:
            return False
        try:
            self.row_id = await self.bot.waiting_questions.add(self.question)
        except (sqlite3.Error, RuntimeError) as exc:  # RuntimeError: the database is closed already
            log.warning("could not keep the waiting question of member %s: %s", self.question.member_id, exc)
            return False
        if self.row_id is None:
            log.warning("not keeping the question of member %s: %d questions are kept already (LLM_QUEUE_MAX)",
                        self.question.member_id, self.bot.waiting_questions.max_rows)
        return self.row_id is not None

    async def noticed(self, notice_id: int | None) -> None:
        await _set_notice(self.bot, self.row_id, notice_id)


class _KeptAgain:
    """The keeper of a kept question being answered: at a new shutdown its row stays, with its notice."""

    def __init__(self, bot: Keeping, question: WaitingQuestion) -> None:
        self.bot = bot
        self.question = question
        self.kept = False

    async def keep(self) -> bool:
        self.kept = self.bot.shutting_down
        return self.kept

    async def noticed(self, notice_id: int | None) -> None:
        await _set_notice(self.bot, self.question.id, notice_id)


async def _set_notice(bot: Keeping, row_id: int | None, notice_id: int | None) -> None:
    if row_id is None:
        return
    try:
        await bot.waiting_questions.set_notice(row_id, notice_id)
    except (sqlite3.Error, RuntimeError) as exc:  # the question stays kept; its answer will come in a new message
        log.warning("could not note the notice of kept question %s: %s", row_id, exc)


async def resume_waiting_questions(client: discord.Client, *, keeping: Keeping, handlers: ResumeHandlers,
                                   tasks: TaskRegistry, settings: Settings, limits: RateLimits | None = None) -> int:
    """Once ``client`` is ready, start answering every question kept in ``keeping`` with the handler of its kind (see
    module docstring); returns how many were started. Each runs as a task of ``tasks``, named
    ``kept-question:<row id>``; the answers plan their edits with ``limits`` (``bot.streaming``)."""
    await client.wait_until_ready()
    started = 0
    for question in await keeping.waiting_questions.all():
        assert question.id is not None
        handler = handlers.lookup(question.kind)
        if handler is None:
            log.warning("dropping the kept question of member %s: no handler for its kind %r (unknown, or its cog did"
                        " not load)", question.member_id, question.kind)
        target = (await _target(client, question, settings.STREAM_EDIT_INTERVAL_S, limits) if handler is not None
                  else None)
        if handler is None or target is None:
            await keeping.waiting_questions.remove(question.id)
            continue
        reply, message = target
        task = tasks.start(_answer(keeping, question, handler, reply, message), name=f"kept-question:{question.id}")
        started += 1
        # The next one starts once this one has its place in the queues (or is done), so they keep their order.
        placed = asyncio.ensure_future(reply.placed.wait())
        try:
            await asyncio.wait((task, placed), timeout=settings.LLM_TIMEOUT_S,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            placed.cancel()
    if started:
        log.info("answering %d questions kept from before the restart", started)
    return started


async def _target(client: discord.Client, question: WaitingQuestion,
                  interval_s: float, limits: RateLimits | None) -> tuple[StreamedReply, discord.Message | None] | None:
    """Where the answer goes (see module docstring), or None when it cannot go there any more (logged)."""
    try:
        if question.interaction_token is not None and question.application_id is not None:
            age_s = time.time() - (question.interaction_created_at or 0)
            if age_s > TOKEN_USABLE_S:
                log.warning("dropping the kept question of member %s: its interaction is %.0f s old, past Discord's"
                            " 15 minutes", question.member_id, age_s)
                return None
            webhook = discord.Webhook.partial(question.application_id, question.interaction_token, client=client)
            original = await webhook.fetch_message("@original")  # type: ignore[arg-type]  # Discord's alias

            async def first(content: str) -> discord.WebhookMessage:
                return await original.edit(content=content)

            async def more(content: str) -> discord.WebhookMessage:
                return await webhook.send(content, wait=True)

            budget = interaction_budget(limits, question.application_id, question.interaction_token)
            return StreamedReply(first, more, interval_s=interval_s, budget=budget), None
        channel = client.get_channel(question.channel_id) or await client.fetch_channel(question.channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            log.warning("dropping the kept question of member %s: channel %s cannot be written to",
                        question.member_id, question.channel_id)
            return None
        message = await channel.fetch_message(question.message_id) if question.message_id is not None else None
        reply = channel_reply(channel, interval_s, limits) if message is None else message_reply(message, interval_s,
                                                                                                    limits)
        notice = await _notice(channel, question)
        if notice is not None:
            reply.adopt(notice, notice.content)
        return reply, message
    except discord.HTTPException as exc:  # deleted, no access, or the token refused
        log.warning("dropping the kept question of member %s in channel %s: %s", question.member_id,
                    question.channel_id, exc)
        return None


async def _notice(channel: discord.abc.Messageable, question: WaitingQuestion) -> discord.Message | None:
    """The bot's message that said ``question`` is kept, or None when it has none or it was deleted."""
    if question.notice_id is None:
        return None
    try:
        return await channel.fetch_message(question.notice_id)
    except discord.NotFound:
        return None


async def _answer(keeping: Keeping, question: WaitingQuestion, handler: Resume, reply: StreamedReply,
                  message: discord.Message | None) -> None:
    """Answer one kept question, then delete its row, unless a new shutdown kept it again (the row stays)."""
    keep_again = _KeptAgain(keeping, question)
    reply.keep = keep_again
    try:
        await handler(question, reply, message)
    except (ServiceError, discord.HTTPException) as exc:
        try:
            await reply.show(error_message(exc))
        except discord.HTTPException as send_error:
            log.warning("could not answer the kept question %s: %s", question.id, send_error)
    finally:
        if not keep_again.kept:
            assert question.id is not None
            await asyncio.shield(keeping.waiting_questions.remove(question.id))
