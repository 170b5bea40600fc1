"""Conversation history in SQLite (aiosqlite) and context building within a token budget.

One conversation per channel or thread. A turn (the member's message and the answer) is written in one
transaction, so the history never holds half a turn; older messages beyond ``max_messages`` per channel
are pruned in the same transaction.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id INTEGER NOT NULL,
    guild_id INTEGER,
    author_id INTEGER,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_channel ON messages (channel_id, id);
"""

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
    system_prompt: str, history: list[HistoryMessage], message: str, token_budget: int
) -> list[dict[str, str]]:
    """Chat messages for Ollama: the system prompt, as much history as fits, then ``message``.

    history: oldest first. History is taken newest first until ``token_budget`` (estimated tokens) would
    be exceeded, so the most recent exchanges are always kept; the system prompt and the new message are
    always included and do not count against the budget.
    """
    kept: list[dict[str, str]] = []
    used = 0
    for item in reversed(history):
        cost = estimate_tokens(item.content)
        if used + cost > token_budget:
            break
        kept.append({"role": item.role, "content": item.content})
        used += cost
    kept.reverse()
    return [{"role": "system", "content": system_prompt}, *kept, {"role": "user", "content": message}]


class ConversationStore:
    """Per-channel history in one SQLite database file; open() before use, close() at shutdown."""

    def __init__(self, path: Path, *, max_messages: int) -> None:
        self.path = path
        self.max_messages = max_messages
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.executescript(_SCHEMA)
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("ConversationStore is not open")
        return self._db

    async def history(self, channel_id: int, limit: int = 200) -> list[HistoryMessage]:
        """The channel's last ``limit`` messages, oldest first."""
        async with self.db.execute(
            "SELECT role, content, author_id FROM messages WHERE channel_id = ? ORDER BY id DESC LIMIT ?",
            (channel_id, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return [HistoryMessage(role, content, author_id) for role, content, author_id in reversed(rows)]

    async def add_turn(
        self, channel_id: int, guild_id: int | None, author_id: int, question: str, answer: str
    ) -> None:
        """Store a member's message and the bot's answer atomically, pruning the channel to max_messages."""
        now = time.time()
        try:
            await self.db.executemany(
                "INSERT INTO messages (channel_id, guild_id, author_id, role, content, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (channel_id, guild_id, author_id, "user", question, now),
                    (channel_id, guild_id, None, "assistant", answer, now),
                ],
            )
            await self.db.execute(
                "DELETE FROM messages WHERE channel_id = ? AND id NOT IN"
                " (SELECT id FROM messages WHERE channel_id = ? ORDER BY id DESC LIMIT ?)",
                (channel_id, channel_id, self.max_messages),
            )
            await self.db.commit()
        except BaseException:
            await self.db.rollback()
            raise

    async def clear(self, channel_id: int) -> int:
        """Delete the channel's history; returns the number of messages deleted."""
        cursor = await self.db.execute("DELETE FROM messages WHERE channel_id = ?", (channel_id,))
        await self.db.commit()
        return cursor.rowcount
