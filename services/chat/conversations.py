"""Conversation history in SQLite (the ``messages`` table of ``services.storage.database``) and context building
within a token budget.

One conversation per channel or thread. A turn (the member's message and the answer) is written in one
transaction, so the history never holds half a turn; older messages beyond ``max_messages`` per channel
are pruned in the same transaction. The answer's row therefore always directly follows its question's (ids are
consecutive), which is how ``forget_member`` finds the answers to a member's messages.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
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


def estimate_tokens(text: str) -> int:
    """Rough token count of ``text`` (characters / 4, at least 1 per message for its framing)."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def build_context(
    system_prompt: str, history: list[HistoryMessage], message: str, token_budget: int, *,
    files: Sequence[TextAttachment] = (), images: Sequence[bytes] = (),
) -> list[dict[str, Any]]:
    """Chat messages for Ollama: the system prompt, as much history as fits, then ``message``.

    history: oldest first. ``files`` (text attachments) are added to ``message`` under their names, taking at most
    half of ``token_budget`` (estimated tokens; a longer file is cut, with a note saying so). History is taken
    newest first until the rest of the budget would be exceeded, so the most recent exchanges are always kept; the
    system prompt and the new message itself are always included and do not count against the budget. ``images``
    (PNG/JPEG/WebP/GIF bytes) go in the last message's ``images`` field, for a model that can see them.
    """
    max_file_chars = text_budget_chars(token_budget, CHARS_PER_TOKEN)
    content = with_attachments(message, list(files), max_file_chars)
    used = estimate_tokens(content) - estimate_tokens(message) if files else 0
    kept: list[dict[str, Any]] = []
    for item in reversed(history):
        cost = estimate_tokens(item.content)
        if used + cost > token_budget:
            break
        kept.append({"role": item.role, "content": item.content})
        used += cost
    kept.reverse()
    last: dict[str, Any] = {"role": "user", "content": content}
    if images:
        last["images"] = list(images)
    return [{"role": "system", "content": system_prompt}, *kept, last]


class ConversationStore:
    """Per-channel history in the ``messages`` table of the bot's :class:`Database` (opened by its owner)."""

    def __init__(self, database: Database, *, max_messages: int) -> None:
        self.database = database
        self.max_messages = max_messages

    async def history(self, channel_id: int, limit: int = 200) -> list[HistoryMessage]:
        """The channel's last ``limit`` messages, oldest first."""
        rows = await self.database.fetchall(
            "SELECT role, content, author_id FROM messages WHERE channel_id = ? ORDER BY id DESC LIMIT ?",
            (channel_id, limit),
        )
        return [HistoryMessage(role, content, author_id) for role, content, author_id in reversed(rows)]

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
