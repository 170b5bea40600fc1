"""Streaming an answer into Discord messages with throttled edits.

The text grows as tokens arrive; the visible messages are brought up to date at most once per
``interval_s``, plus once at the end. Every edit is a REST call in a rate-limited bucket (the message's channel, or
the interaction's token), which other answers in the channel may share: with a budget (``bot.ratelimits.EditBudget``,
fed by Discord's X-RateLimit headers) an edit on the way is made only when the bucket has room for it and for the
last edit of every answer streaming into it, and the edits are spread over the bucket's window; the others are
skipped, their text shown by the next edit (edits coalesce). The last edit waits for room rather than meeting a
429, so the answer always arrives whole, without discord.py holding it on an empty bucket. When the
text outgrows 2000 characters, the full part stays in its message and the rest continues in a new one
(split by ``split_message``, so nothing is cut mid-word or mid-code-block and nothing is lost).

When the work behind a message is cancelled (the bot shuts down), the message is given a last edit saying so
(``edit_after_cancel``), so that no "thinking..." placeholder, queue notice or half answer is left as if the
bot were still at it. A question that never reached the model can be kept for after the restart
(``StreamedReply.keep``); its message then says so (KEPT), and after the restart the answer replaces that message
(``StreamedReply.adopt``) rather than appearing beside it.

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
from bot.ratelimits import CHANNEL_CREATE, CHANNEL_EDIT, WEBHOOK_CREATE, WEBHOOK_EDIT, EditBudget, RateLimits
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


async def edit_after_cancel(edit: Callable[[], Awaitable[object]], what: str, *, room_s: float = 0.0) -> None:
    """Make ``edit()``, the last edit of a message whose work was just cancelled, and wait for it.

    Shielded from a further cancellation and limited to LAST_EDIT_TIMEOUT_S seconds, plus ``room_s``, the seconds its
    rate-limit bucket needs before it takes the edit (``EditBudget.seconds_to_room``: the edit counts against the
    bucket like any other); a failure (timeout, Discord refusing or unreachable) is logged with ``what`` (e.g. "an
    interrupted answer"), never raised.
    """

    async def attempt() -> None:
        try:
            async with asyncio.timeout(LAST_EDIT_TIMEOUT_S + room_s):
                await edit()
        except (TimeoutError, discord.HTTPException, aiohttp.ClientError) as exc:
            log.warning("could not mark %s: %s", what, exc)

    await asyncio.shield(attempt())


class EditableMessage(Protocol):
    """A message the stream can edit (a discord.Message, InteractionMessage or WebhookMessage)."""

    async def edit(self, *, content: str = ..., attachments: Sequence[discord.File] = ...) -> object: ...


SendFirst = Callable[[str], Awaitable[EditableMessage | None]]
SendMore = Callable[[str], Awaitable[EditableMessage]]


class Keeper(Protocol):
    """Keeps a question that never reached the model for after a restart (``bot.kept_questions``)."""

    async def keep(self) -> bool:
        """Store the question; True when it is kept (the bot is shutting down and there was room)."""
        ...

    async def noticed(self, notice_id: int | None) -> None:
        """The id of the bot's message that now says the question is kept (None when it has no id)."""
        ...


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
    keep: None, or a ``Keeper`` that stores the question to be answered after a restart; ``finish_interrupted`` asks
    it for a question cancelled before it reached the model, then tells it which message says it is kept.
    budget: None (edits throttled by ``interval_s`` alone), or the rate-limit budget of the bucket the messages are
    edited in (see the module docstring); create_budget: the bucket new messages are sent in, when it is another
    (a channel's; an interaction's webhook has one bucket for both).
    """

    def __init__(self, send_first: SendFirst, send_more: SendMore, *, interval_s: float,
                 budget: EditBudget | None = None, create_budget: EditBudget | None = None) -> None:
        self._clock = budget.clock if budget is not None else time.monotonic
        self._create_budget = create_budget if budget is not None else None
        self._send_first = send_first
        self._send_more = send_more
        self._interval_s = interval_s
        self._budget = budget
        self._messages: list[EditableMessage | None] = []
        self._shown: list[str] = []
        self._last_update = float("-inf")
        self._interrupted = False
        self.text = ""
        self.thinking: list[str] | None = None
        self.started = False
        self.placed = asyncio.Event()
        self.keep: Keeper | None = None

    async def consume(self, deltas: AsyncGenerator[str, None]) -> str:
        """Append every delta of ``deltas``, updating the messages as allowed (the interval, and the budget: see the
        module docstring); returns the full text."""
        with contextlib.ExitStack() as streaming:
            for budget in {id(b): b for b in (self._budget, self._create_budget) if b is not None}.values():
                streaming.enter_context(budget.streaming())
            async with contextlib.aclosing(deltas):  # close the HTTP stream at once if an update fails
                async for delta in deltas:
                    self.text += delta
                    if self.text.strip() and self._clock() - self._last_update >= self._gap_s():
                        await self.update(final=False)
        return self.text

    def _gap_s(self) -> float:
        """Seconds between two edits on the way: ``interval_s``, or longer when the bucket has fewer to spare."""
        return max(self._interval_s, self._budget.gap_s() if self._budget is not None else 0.0)

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
        if self._budget is not None:
            await self._budget.wait_for_room(1)
            self._budget.spend(1)
        await first.edit(attachments=[file])

    async def finish_interrupted(self) -> None:
        """After a cancellation (shutdown): end a partial answer with INTERRUPTED; replace what is shown (the
        "thinking..." placeholder, a queue notice) with KEPT when the question never reached the model and ``keep``
        kept it, else with NOT_ANSWERED. Done once; see ``edit_after_cancel``."""
        if self._interrupted:
            return
        self._interrupted = True
        room_s = self._budget.seconds_to_room(1) if self._budget is not None else 0.0
        if self.text.strip():
            await edit_after_cancel(lambda: self.update(final=True, suffix=INTERRUPTED), "an interrupted answer",
                                    room_s=room_s)
        elif self.keep is not None and not self.started and await asyncio.shield(self.keep.keep()):
            await edit_after_cancel(lambda: self.show(KEPT), "a kept question", room_s=room_s)
            await asyncio.shield(self.keep.noticed(self.first_message_id))
        else:
            await edit_after_cancel(lambda: self.show(NOT_ANSWERED), "an unanswered message", room_s=room_s)

    @property
    def first_message_id(self) -> int | None:
        """The id of the first message, once sent (None before, or when it has none: an interaction's response)."""
        first = self._messages[0] if self._messages else None
        return getattr(first, "id", None)

    def adopt(self, message: EditableMessage, content: str) -> None:
        """Make ``message``, which shows ``content`` (the notice of a kept question), the first message: the answer
        replaces it. Call before anything is shown."""
        assert not self._messages, "adopt() before the first message is sent"
        self._messages.append(message)
        self._shown.append(content)

    async def show(self, content: str) -> None:
        """Show ``content`` alone in the first message (a queue notice, an error); the answer replaces it."""
        await self._show_part(0, content)

    async def show_update(self, content: str) -> None:
        """Like ``show``, for an update that a later one supersedes (a place in a queue that keeps changing): made
        only when the budget has room for it as for an edit on the way, else skipped (never waits)."""
        if self._budget is not None and self._messages and not self._budget.allows(1):
            self.placed.set()
            return
        await self._show_part(0, content)

    async def update(self, *, final: bool, suffix: str = "") -> None:
        """Bring the messages up to date with the text (+ ``suffix``); ``final`` drops the cursor.

        Not ``final`` (an edit on the way), it is skipped when the budget has no room for its requests (one per
        message that changes); ``final``, each request waits for room in the bucket (``EditBudget.wait_for_room``).
        New messages are sent before the messages already shown are edited."""
        self._last_update = self._clock()
        body = self.text + suffix
        parts = split_message(body + ("" if final else CURSOR)) or ["…"]
        if self._budget is not None and not final and not self._fits(parts):
            return  # coalesced: the next edit shows this text too
        # New messages first, then the edits of those shown: the cursor stays in view until the last request, which
        # may have to wait for the bucket's next window.
        for number in sorted(range(len(parts)), key=lambda n: n < len(self._shown)):
            await self._show_part(number, parts[number])

    def _fits(self, parts: list[str]) -> bool:
        """Whether the budgets have room for showing ``parts`` now: one edit per shown message that changes, one new
        message per part not shown yet."""
        edits = sum(1 for number, content in enumerate(parts[: len(self._shown)]) if self._shown[number] != content)
        new = max(0, len(parts) - len(self._shown))
        assert self._budget is not None
        if self._create_budget is None or self._create_budget is self._budget:
            return self._budget.allows(edits + new)
        return (not edits or self._budget.allows(edits)) and (not new or self._create_budget.allows(new))

    async def _show_part(self, number: int, content: str) -> None:
        """Make message ``number`` (0: the first) show ``content``, sending it when it does not exist yet."""
        self.placed.set()
        if number < len(self._shown) and self._shown[number] == content:
            return
        budget = self._create_budget if number >= len(self._messages) and self._create_budget else self._budget
        if budget is not None:
            await budget.wait_for_room(1)
            budget.spend(1)
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


def interaction_budget(limits: RateLimits | None, application_id: int, token: str) -> EditBudget | None:
    """The budget of an interaction's webhook bucket (its @original and followups), or None without ``limits``."""
    return None if limits is None else limits.budget(f"{application_id}+{token}", WEBHOOK_EDIT, WEBHOOK_CREATE)


def channel_budgets(limits: RateLimits | None, channel_id: int) -> dict[str, EditBudget | None]:
    """The budgets of a channel's buckets for editing and for sending messages, as ``StreamedReply`` keywords
    (``budget``, ``create_budget``); None each without ``limits``."""
    if limits is None:
        return {"budget": None, "create_budget": None}
    major = str(channel_id)
    return {"budget": limits.budget(major, CHANNEL_EDIT), "create_budget": limits.budget(major, CHANNEL_CREATE)}


def interaction_reply(interaction: discord.Interaction, interval_s: float,
                      limits: RateLimits | None = None) -> StreamedReply:
    """A StreamedReply that fills the deferred response, then continues in followups; planned with ``limits``."""

    async def first(content: str) -> discord.InteractionMessage:
        return await interaction.edit_original_response(content=content)

    async def more(content: str) -> discord.WebhookMessage:
        return await interaction.followup.send(content, wait=True)

    budget = interaction_budget(limits, interaction.application_id, interaction.token)
    return StreamedReply(first, more, interval_s=interval_s, budget=budget)


def message_reply(message: discord.Message, interval_s: float, limits: RateLimits | None = None) -> StreamedReply:
    """A StreamedReply that answers ``message`` with a reply, then continues in the channel; planned with
    ``limits``."""

    async def first(content: str) -> discord.Message:
        return await message.reply(content, mention_author=False)

    async def more(content: str) -> discord.Message:
        return await message.channel.send(content)

    return StreamedReply(first, more, interval_s=interval_s, **channel_budgets(limits, message.channel.id))


def channel_reply(channel: discord.abc.Messageable, interval_s: float,
                  limits: RateLimits | None = None) -> StreamedReply:
    """A StreamedReply that posts in ``channel`` (e.g. a thread the bot just opened) rather than replying; planned
    with ``limits``."""

    async def send(content: str) -> discord.Message:
        return await channel.send(content)

    return StreamedReply(send, send, interval_s=interval_s, **channel_budgets(limits, getattr(channel, "id", 0)))
