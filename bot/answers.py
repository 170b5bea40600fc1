"""A text answer streamed into a Discord reply: the one way the cogs show what ``services.chat.answering`` answers."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from bot.streaming import StreamedReply, llm_queued_notice
from services.chat.answering import Answering, PreparedAnswer


async def stream_answer(answering: Answering, prepared: PreparedAnswer, reply: StreamedReply) -> str | None:
    """Stream the answer to ``prepared`` into ``reply`` and remember it (``Answering.deliver``); returns the answer,
    or None when there is none.

    While the question waits for the model, ``reply`` shows its place in the fair queue; a reasoning model's thinking
    is attached to the answer when the guild wants it shown (``PreparedAnswer.show_thinking``). ``reply.started`` is
    set once the question reaches the model (a question cancelled before that can be kept for after a restart).
    Raises LLMQueueFull and what the model raises before the first token (see ``StreamedReply.stream``).
    """
    reply.thinking = [] if prepared.show_thinking else None

    def started() -> None:
        reply.started = True  # the queue let it through: from here on it is being answered
        reply.placed.set()

    async def consume(deltas: AsyncGenerator[str, None], sources: str) -> str | None:
        return await reply.stream(deltas, suffix=sources)

    async def show_place(ahead: int) -> None:
        await reply.show_update(llm_queued_notice(ahead))  # skipped when the reply's bucket has no room to spare

    return await answering.deliver(prepared, consume, thinking=reply.thinking, on_start=started,
                                   on_place=show_place)
