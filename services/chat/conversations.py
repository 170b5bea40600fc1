"""Conversation history in SQLite (the ``messages`` table of ``services.storage.database``) and context building
within a token budget, laid out so that the model's server can reuse its cache of the previous prompt.

One conversation per channel or thread. A turn (the member's message and the answer) is written in one
transaction, so the history never holds half a turn; older messages beyond ``max_messages`` per channel
are pruned in the same transaction. The answer's row therefore always directly follows its question's (ids are
consecutive), which is how ``forget_member`` finds the answers to a member's messages.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from services.chat.attachments import TextAttachment, text_budget_chars, with_attachments
from services.storage.database import Database

CHARS_PER_TOKEN = 4  # the usual rough estimate for English text with LLM tokenizers


@dataclass(frozen=True)
class HistoryMessage:
    role: str  # "user" or "assistant"
    content: str
    author_id: int | None = None
    id: int | None = None  # increasing along the conversation: the database row id, or a counter in memory


def estimate_tokens(text: str) -> int:
    """Rough token count of ``text`` (characters / 4, at least 1 per message for its framing)."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def history_window(history: Sequence[HistoryMessage], token_budget: int, keep_from: int | None = None) -> int:
    """Where the part of ``history`` (oldest first) sent to the model starts: an index into ``history``.

    The window is chosen so that the prompt's beginning stays the same from one turn to the next. The model's
    server keeps the previous prompt in its cache and reads again only what follows the first difference
    (llama.cpp, Ollama's runner, reuses the longest common prefix), so a prompt that only grows at its end costs
    only its new tokens, while a prompt that loses its oldest message is read again whole.

    keep_from: the ``id`` of the first message sent last time in this conversation. While that message is still in
    ``history`` and everything from it on fits ``token_budget`` (estimated tokens), the window starts there again.
    Otherwise the oldest messages are dropped until at most half the budget is left, so that many turns can be
    appended before the next drop, instead of one message dropped every turn. The window starts at a member's
    message (``len(history)`` when none is left).
    """
    costs = [estimate_tokens(message.content) for message in history]
    if keep_from is not None:
        for index, message in enumerate(history):
            if message.id == keep_from:
                if sum(costs[index:]) <= token_budget:
                    return index
                break
    start, kept = len(history), 0
    while start > 0 and kept + costs[start - 1] <= token_budget // 2:
        start -= 1
        kept += costs[start]
    while start < len(history) and history[start].role != "user":
        start += 1
    return start


class HistoryWindows:
    """Where each conversation's window started last time (``history_window``'s ``keep_from``), remembered for at
    most ``max_conversations`` conversations, the least recently used forgotten first (it then starts afresh)."""

    def __init__(self, max_conversations: int = 10_000) -> None:
        self.max_conversations = max_conversations
        self._starts: OrderedDict[Hashable, int | None] = OrderedDict()

    def select(self, conversation: Hashable, history: Sequence[HistoryMessage],
               token_budget: int) -> list[HistoryMessage]:
        """The messages of ``history`` (oldest first) to send for ``conversation`` (any key naming it), within
        ``token_budget`` estimated tokens; remembers where they start for the next turn."""
        start = history_window(history, token_budget, self._starts.get(conversation))
        window = list(history[start:])
        self._starts[conversation] = window[0].id if window else None
        self._starts.move_to_end(conversation)
        while len(self._starts) > self.max_conversations:
            self._starts.popitem(last=False)
        return window


def build_context(
    system_prompt: str, history: Sequence[HistoryMessage], message: str, token_budget: int, *,
    files: Sequence[TextAttachment] = (), images: Sequence[bytes] = (),
) -> list[dict[str, Any]]:
    """Chat messages for Ollama: the system prompt, ``history``, then ``message``, in that order, so that what stays
    the same from turn to turn comes first (see ``history_window``, which chooses ``history``).

    history: the past messages to send, oldest first. ``files`` (text attachments) are added to ``message`` under
    their names, taking at most half of ``token_budget`` (estimated tokens; a longer file is cut, with a note saying
    so); they do not shorten the history, whose beginning would change. ``images`` (PNG/JPEG/WebP/GIF bytes) go in
    the last message's ``images`` field, for a model that can see them.
    """
    content = with_attachments(message, list(files), text_budget_chars(token_budget, CHARS_PER_TOKEN))
    last: dict[str, Any] = {"role": "user", "content": content}
    if images:
        last["images"] = list(images)
    past = [{"role": item.role, "content": item.content} for item in history]
    return [{"role": "system", "content": system_prompt}, *past, last]


class ConversationStore:
    """Per-channel history in the ``messages`` table of the bot's :class:`Database` (opened by its owner)."""

    def __init__(self, database: Database, *, max_messages: int) -> None:
        self.database = database
        self.max_messages = max_messages

    async def history(self, channel_id: int, limit: int = 200) -> list[HistoryMessage]:
        """The channel's last ``limit`` messages, oldest first."""
        rows = await self.database.fetchall(
            "SELECT role, content, author_id, id FROM messages WHERE channel_id = ? ORDER BY id DESC LIMIT ?",
            (channel_id, limit),
        )
        return [HistoryMessage(role, content, author_id, row_id) for role, content, author_id, row_id in reversed(rows)]

    async def add_turn(
        self, channel_id: int, guild_id: int | None, author_id: int, question: str, answer: str
    ) -> None:
        """Store a member's message and the bot's answer atomically, pruning the channel to max_messages."""
        now = time.time()
        async with self.database.transaction() as db:
            await db.executemany(
                "INSERT INTO messages (channel_id, guild_id, author_id, role, content, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (channel_id, guild_id, author_id, "user", question, now),
                    (channel_id, guild_id, None, "assistant", answer, now),
                ],
            )
            await db.execute(
                "DELETE FROM messages WHERE channel_id = ? AND id NOT IN"
                " (SELECT id FROM messages WHERE channel_id = ? ORDER BY id DESC LIMIT ?)",
                (channel_id, channel_id, self.max_messages),
            )

    async def clear(self, channel_id: int) -> int:
        """Delete the channel's history; returns the number of messages deleted."""
        async with self.database.transaction() as db:
            cursor = await db.execute("DELETE FROM messages WHERE channel_id = ?", (channel_id,))
        return cursor.rowcount

    async def forget_member(self, guild_id: int, author_id: int) -> tuple[int, int]:
        """Delete every message ``author_id`` wrote in ``guild_id`` (text and stored voice transcripts) and the
        bot's answers to them, which quote or build on what the member said.

        Returns (the member's messages deleted, answers deleted); one transaction.
        """
        async with self.database.transaction() as db:
            cursor = await db.execute(
                "DELETE FROM messages WHERE role = 'assistant' AND id IN (SELECT id + 1 FROM messages"
                " WHERE guild_id = ? AND author_id = ? AND role = 'user')",
                (guild_id, author_id),
            )
            answers = cursor.rowcount
            cursor = await db.execute("DELETE FROM messages WHERE guild_id = ? AND author_id = ?",
                                      (guild_id, author_id))
        return cursor.rowcount, answers
