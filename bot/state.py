"""Shared, lock-protected, bounded state of the bot: the chat sessions (voice sessions: ``bot/voice_manager.py``).

Chat sessions live here, one per channel or thread, behind one ``asyncio.Lock``. The map is bounded both
ways: idle sessions expire after ``ttl_s`` and, past ``max_sessions``, the least recently used one is
dropped. Dropping a session only forgets in-memory state; the conversation history stays in SQLite.
Each session carries its own lock so that two messages in one channel are answered one after the other,
each seeing the previous answer in its context.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class ChatSession:
    """The in-memory side of one channel's conversation."""

    channel_id: int
    guild_id: int | None
    turn_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    turns: int = 0
    busy: int = 0  # turns holding or waiting for turn_lock; a busy session is never evicted


class ChatSessions:
    """Channel id -> ChatSession, bounded by count and idle time."""

    def __init__(self, *, max_sessions: int, ttl_s: float) -> None:
        self._sessions: OrderedDict[int, ChatSession] = OrderedDict()
        self._lock = asyncio.Lock()
        self._max = max_sessions
        self._ttl_s = ttl_s

    async def _get(self, channel_id: int, guild_id: int | None) -> ChatSession:
        async with self._lock:
            now = time.monotonic()
            self._expire(now)
            session = self._sessions.get(channel_id)
            if session is None:
                session = ChatSession(channel_id=channel_id, guild_id=guild_id)
                self._sessions[channel_id] = session
            self._sessions.move_to_end(channel_id)
            session.last_used = now
            session.busy += 1
            self._evict_over_cap()
            return session

    async def _release(self, session: ChatSession) -> None:
        async with self._lock:
            session.busy -= 1
            session.last_used = time.monotonic()

    @asynccontextmanager
    async def turn(self, channel_id: int, guild_id: int | None) -> AsyncIterator[ChatSession]:
        """Hold the channel's turn: one answer at a time per channel, in arrival order."""
        session = await self._get(channel_id, guild_id)
        try:
            async with session.turn_lock:
                session.turns += 1
                yield session
        finally:
            await self._release(session)

    async def forget(self, channel_id: int) -> None:
        """Drop the channel's in-memory session (used by /reset)."""
        async with self._lock:
            session = self._sessions.get(channel_id)
            if session is not None and not session.busy:
                del self._sessions[channel_id]

    async def size(self) -> int:
        async with self._lock:
            self._expire(time.monotonic())
            return len(self._sessions)

    def _expire(self, now: float) -> None:
        for channel_id, session in list(self._sessions.items()):
            if not session.busy and now - session.last_used > self._ttl_s:
                del self._sessions[channel_id]

    def _evict_over_cap(self) -> None:
        # Least recently used first; sessions in use stay even if that briefly exceeds the cap.
        for channel_id, session in list(self._sessions.items()):
            if len(self._sessions) <= self._max:
                break
            if not session.busy:
                del self._sessions[channel_id]
