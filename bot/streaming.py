"""Streaming an answer into Discord messages with throttled edits.

The text grows as tokens arrive; the visible messages are brought up to date at most once per
``interval_s`` (Discord rate-limits edits, and every edit is a REST call), plus once at the end. When the
text outgrows 2000 characters, the full part stays in its message and the rest continues in a new one
(split by ``split_message``, so nothing is cut mid-word or mid-code-block and nothing is lost).

When the work behind a message is cancelled (the bot shuts down), the message is given a last edit saying so
(``edit_after_cancel``), so that no "thinking..." placeholder, queue notice or half answer is left as if the
bot were still at it. A question that never reached the model can be kept for after the restart
(``StreamedReply.keep``); its message then says so (KEPT).

A reasoning model's thinking, when the guild wants it shown (``StreamedReply.thinking``), is attached to the first
message of the answer as a spoiler-marked file (THINKING_FILE, shown as ``SPOILER_thinking.md``), never in the text.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Protocol

import aiohttp
import discord

from bot.formatting import split_message
from services.errors import ServiceError

log = logging.getLogger(__name__)

CURSOR = " ▌"  # shown at the end of a message while the answer is still streaming
INTERRUPTED = "\n\n*(interrupted: the bot is shutting down)*"
NOT_ANSWERED = "⚠️ Not answered: the bot is shutting down; try again later."
KEPT = "⏸️ The bot is restarting: your question is kept and will be answered here when it is back."
EMPTY_ANSWER = "*(The model returned an empty answer; try rephrasing.)*"
THINKING_FILE = "thinking.md"  # sent with spoiler=True, which Discord shows as SPOILER_thinking.md
LAST_EDIT_TIMEOUT_S = 2.0  # shutdown waits for these edits; a slow Discord must not hold it up


def llm_queued_notice(ahead: int) -> str:
    """What a member whose answer waits for the model (the fair LLM queue) sees until the answer replaces it;
    worded like the channel queue's notice (``cogs/chat.py``), which it replaces in the same message."""
    return f"⏳ Queued: {ahead} ahead of you while the assistant answers other members; the answer will appear here."


async def edit_after_cancel(edit: Callable[[], Awaitable[object]], what: str) -> None:
    """Make ``edit()``, the last edit of a message whose work was just cancelled, and wait for it.

    Shielded from a further cancellation and limited to LAST_EDIT_TIMEOUT_S seconds; a failure (timeout,
    Discord refusing or unreachable) is logged with ``what`` (e.g. "an interrupted answer"), never raised.
    """

    async def attempt() -> None:
        try:
            async with asyncio.timeout(LAST_EDIT_TIMEOUT_S):
                await edit()
        except (TimeoutError, discord.HTTPException, aiohttp.ClientError) as exc:
            log.warning("could not mark %s: %s", what, exc)

    await asyncio.shield(attempt())


class EditableMessage(Protocol):
    """A message the stream can edit (a discord.Message, InteractionMessage or WebhookMessage)."""

    async def edit(self, *, content: str = ..., attachments: Sequence[discord.File] = ...) -> object: ...


SendFirst = Callable[[str], Awaitable[EditableMessage | None]]
SendMore = Callable[[str], Awaitable[EditableMessage]]


class StreamedReply:
    """Shows a growing text in one or more Discord messages.

    send_first(content): shows the first message (e.g. edits the deferred interaction response) and
    returns something with ``edit(content=...)``, or None when ``send_first`` itself is the way to edit.
    send_more(content): sends a further message (a followup or a channel message) and returns it.
    thinking: None, or a list that receives the model's thinking (str pieces) while the answer streams; at the end
    of the answer, thinking there is attached to the first message as a spoiler-marked file.
    started: set once the question reached the model (``bot.answers.stream_answer``).
    placed: set once the answer has its place in a queue or is under way: when the reply first shows something (a
    queue notice) or ``started`` is set.
    keep: None, or ``async () -> bool`` that stores the question to be answered after a restart (True when kept);
    called by ``finish_interrupted`` for a question cancelled before it reached the model.
    """

    def __init__(self, send_first: SendFirst, send_more: SendMore, *, interval_s: float) -> None:
        self._send_first = send_first
        self._send_more = send_more
        self._interval_s = interval_s
        self._messages: list[EditableMessage | None] = []
        self._shown: list[str] = []
        self._last_update = float("-inf")
        self._interrupted = False
        self.text = ""
        self.thinking: list[str] | None = None
        self.started = False
        self.placed = asyncio.Event()
        self.keep: Callable[[], Awaitable[bool]] | None = None

    async def consume(self, deltas: AsyncGenerator[str, None]) -> str:
        """Append every delta of ``deltas``, updating the messages as allowed; returns the full text."""
        async with contextlib.aclosing(deltas):  # close the HTTP stream at once if an update fails
            async for delta in deltas:
                self.text += delta
                if self.text.strip() and time.perf_counter() - self._last_update >= self._interval_s:
                    await self.update(final=False)
        return self.text

    async def stream(self, deltas: AsyncGenerator[str, None], *, suffix: str = "") -> str | None:
        """Show the streamed answer, then ``suffix``; returns the answer to remember, or None.

        A ServiceError before the first token propagates (the caller's error handler answers); one
        midway keeps what was shown and adds the error sentence (returns None). On cancellation
        (shutdown) the reply is finished by ``finish_interrupted`` before CancelledError propagates.
        """
        try:
            answer = await self.consume(deltas)
        except ServiceError as exc:
            if not self.text.strip():
                raise
            await self.update(final=True, suffix=f"\n\n⚠️ {exc.user_message}")
            return None
        except asyncio.CancelledError:
            await self.finish_interrupted()
            raise
        if not answer.strip():
            self.text = EMPTY_ANSWER
            await self.update(final=True)
            await self._attach_thinking()
            return None
        await self.update(final=True, suffix=suffix)
        await self._attach_thinking()
        return answer

    async def _attach_thinking(self) -> None:
        """Attach the thinking, when there is some, to the first message as a spoiler-marked Markdown file."""
        thinking = "".join(self.thinking or []).strip()
        first = self._messages[0] if self._messages else None
        if not thinking or first is None:
            return
        file = discord.File(io.BytesIO(thinking.encode()), filename=THINKING_FILE, spoiler=True)
        await first.edit(attachments=[file])

    async def finish_interrupted(self) -> None:
        """After a cancellation (shutdown): end a partial answer with INTERRUPTED; replace what is shown (the
        "thinking..." placeholder, a queue notice) with KEPT when the question never reached the model and ``keep``
        kept it, else with NOT_ANSWERED. Done once; see ``edit_after_cancel``."""
        if self._interrupted:
            return
        self._interrupted = True
        if self.text.strip():
            await edit_after_cancel(lambda: self.update(final=True, suffix=INTERRUPTED), "an interrupted answer")
        elif self.keep is not None and not self.started and await asyncio.shield(self.keep()):
            await edit_after_cancel(lambda: self.show(KEPT), "a kept question")
        else:
            await edit_after_cancel(lambda: self.show(NOT_ANSWERED), "an unanswered message")

    async def show(self, content: str) -> None:
        """Show ``content`` alone in the first message (a queue notice, an error); the answer replaces it."""
        await self._show_part(0, content)

    async def update(self, *, final: bool, suffix: str = "") -> None:
        """Bring the messages up to date with the text (+ ``suffix``); ``final`` drops the cursor."""
        self._last_update = time.perf_counter()
        body = self.text + suffix
        parts = split_message(body + ("" if final else CURSOR)) or ["…"]
        for number, content in enumerate(parts):
            await self._show_part(number, content)

    async def _show_part(self, number: int, content: str) -> None:
        """Make message ``number`` (0: the first) show ``content``, sending it when it does not exist yet."""
        self.placed.set()
        if number < len(self._shown) and self._shown[number] == content:
            return
        if number == 0 and not self._messages:
            self._messages.append(await self._send_first(content))
        elif number == 0 and self._messages[0] is None:
            await self._send_first(content)
        elif number < len(self._messages):
            await self._messages[number].edit(content=content)  # type: ignore[union-attr]
        else:
            self._messages.append(await self._send_more(content))
        if number < len(self._shown):
            self._shown[number] = content
        else:
            self._shown.append(content)


def interaction_reply(interaction: discord.Interaction, interval_s: float) -> StreamedReply:
    """A StreamedReply that fills the deferred response, then continues in followups."""

    async def first(content: str) -> discord.InteractionMessage:
        return await interaction.edit_original_response(content=content)

    async def more(content: str) -> discord.WebhookMessage:
        return await interaction.followup.send(content, wait=True)

    return StreamedReply(first, more, interval_s=interval_s)


def message_reply(message: discord.Message, interval_s: float) -> StreamedReply:
    """A StreamedReply that answers ``message`` with a reply, then continues in the channel."""

    async def first(content: str) -> discord.Message:
        return await message.reply(content, mention_author=False)

    async def more(content: str) -> discord.Message:
        return await message.channel.send(content)

    return StreamedReply(first, more, interval_s=interval_s)


def channel_reply(channel: discord.abc.Messageable, interval_s: float) -> StreamedReply:
    """A StreamedReply that posts in ``channel`` (e.g. a thread the bot just opened) rather than replying."""

    async def send(content: str) -> discord.Message:
        return await channel.send(content)

    return StreamedReply(send, send, interval_s=interval_s)
