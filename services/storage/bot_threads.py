"""The threads the bot started (``/chat thread:True``, a mention in a free channel), in the ``bot_threads`` table of
``services.storage.database``: in those the bot answers every message without a mention.

A row holds the thread, its guild, its parent channel (whose settings apply in the thread) and the time of its last
answer. The table is bounded both ways: a thread inactive for ``ttl_s`` is forgotten (after that the bot answers
there only when mentioned, like anywhere else), and past ``max_threads`` the least recently active ones go. Pruning
happens when a thread is added. A deleted thread is removed with ``remove``.
"""

from __future__ import annotations

import time

from services.storage.database import Database


class BotThreadStore:
    """Reads and writes ``bot_threads`` in the bot's :class:`Database` (opened by its owner).

    ttl_s: seconds after its last activity that a thread is forgotten; max_threads: rows kept at most.
    """

    def __init__(self, database: Database, *, ttl_s: float, max_threads: int) -> None:
        self.database = database
        self.ttl_s = ttl_s
        self.max_threads = max_threads

    async def add(self, thread_id: int, guild_id: int, parent_id: int) -> None:
        """Remember a thread the bot just started in channel ``parent_id``; prunes expired and excess rows."""
        now = time.time()
        async with self.database.transaction() as db:
            await db.execute(
                "INSERT OR REPLACE INTO bot_threads (thread_id, guild_id, parent_id, last_active) VALUES (?, ?, ?, ?)",
                (thread_id, guild_id, parent_id, now))
            await db.execute("DELETE FROM bot_threads WHERE last_active < ?", (now - self.ttl_s,))
            await db.execute(
                "DELETE FROM bot_threads WHERE thread_id NOT IN"
                " (SELECT thread_id FROM bot_threads ORDER BY last_active DESC LIMIT ?)", (self.max_threads,))

    async def parent_of(self, thread_id: int) -> int | None:
        """The parent channel id of ``thread_id`` when the bot started it and has not forgotten it, else None."""
        row = await self.database.fetchone(
            "SELECT parent_id FROM bot_threads WHERE thread_id = ? AND last_active >= ?",
            (thread_id, time.time() - self.ttl_s))
        return None if row is None else int(row[0])

    async def touch(self, thread_id: int) -> None:
        """Record activity (an answer) in ``thread_id``, which keeps it remembered for another ``ttl_s``."""
        async with self.database.transaction() as db:
            await db.execute("UPDATE bot_threads SET last_active = ? WHERE thread_id = ?", (time.time(), thread_id))

    async def remove(self, thread_id: int) -> bool:
        """Forget ``thread_id`` (deleted); True when it was a thread the bot started."""
        async with self.database.transaction() as db:
            cursor = await db.execute("DELETE FROM bot_threads WHERE thread_id = ?", (thread_id,))
        return cursor.rowcount > 0
