"""Shared, lock-protected, bounded state of the bot: the chat sessions (voice sessions: ``bot/voice_manager.py``).

Chat sessions live here, one per channel or thread, behind one ``asyncio.Lock``. The map is bounded both
ways: idle sessions expire after ``ttl_s`` and, past ``max_sessions``, the least recently used one is
dropped. Dropping a session only forgets in-memory state; the conversation history stays in SQLite.
Each session carries its own lock so that two messages in one channel are answered one after the other,
each seeing the previous answer in its context. The queue behind that lock is bounded too: ``join`` takes a
place (refused with ChatQueueFull past ``max_waiting``) and tells how many are ahead; ``ChatTurn.hold`` then
waits for the turn, giving up with ChatWaitTimeout after ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from services.errors import ServiceError


class ChatQueueFull(ServiceError):
    """The channel already has as many messages waiting for an answer as it may hold."""

    def __init__(self) -> None:
        super().__init__("Too many messages are waiting for an answer in this channel; try again shortly.")


class ChatWaitTimeout(ServiceError):
    """A message waited longer than it may for the answers ahead of it in its channel."""

    def __init__(self) -> None:
        super().__init__("Your message waited too long behind the answers ahead of it in this channel and was not "
                         "answered; try again when the channel is quieter.")


@dataclass
class ChatSession:
    """The in-memory side of one channel's conversation."""

    channel_id: int
    guild_id: int | None
    turn_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    turns: int = 0
    busy: int = 0  # places taken (holding or waiting for turn_lock); a busy session is never evicted


class ChatTurn:
    """A place in one channel's queue, from ``ChatSessions.join``; ``ahead`` places were taken before it and
    not yet released at that moment. Release it when done: ``async with`` it, or call ``release()``."""

    def __init__(self, session: ChatSession, ahead: int) -> None:
        self.session = session
        self.ahead = ahead
        self._released = False

    @asynccontextmanager
    async def hold(self, timeout_s: float | None = None) -> AsyncIterator[ChatSession]:
        """Wait for this place's turn (places are served in the order they were taken), hold it for the body.

        Raises ChatWaitTimeout when the turn has not come within ``timeout_s`` seconds (None: wait as long as
        it takes); the place itself stays taken until released.
        """
        try:
            async with asyncio.timeout(timeout_s):
                await self.session.turn_lock.acquire()
        except TimeoutError:
            raise ChatWaitTimeout() from None
        try:
            self.session.turns += 1
            yield self.session
        finally:
            self.session.turn_lock.release()

    def release(self) -> None:
        """Give the place back (idempotent)."""
        # Synchronous on purpose: no await, so a cancellation can never leave the place taken (a leaked place
        # would shrink the channel's queue for good). Nothing else runs meanwhile, so no lock is needed either.
        if not self._released:
            self._released = True
            self.session.busy -= 1
            self.session.last_used = time.monotonic()

    async def __aenter__(self) -> ChatTurn:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


class ChatSessions:
    """Channel id -> ChatSession, bounded by count and idle time."""

    def __init__(self, *, max_sessions: int, ttl_s: float) -> None:
        self._sessions: OrderedDict[int, ChatSession] = OrderedDict()
        self._lock = asyncio.Lock()
        self._max = max_sessions
        self._ttl_s = ttl_s

    async def join(self, channel_id: int, guild_id: int | None, *, max_waiting: int | None = None) -> ChatTurn:
        """Take a place in the channel's queue; ``ChatTurn.ahead`` says how many places are before it.

        max_waiting: how many places may wait behind the one being answered; past it this raises ChatQueueFull
        and takes nothing (None: no bound).
        """
        async with self._lock:
            now = time.monotonic()
            self._expire(now)
            session = self._sessions.get(channel_id)
            if session is None:
                session = ChatSession(channel_id=channel_id, guild_id=guild_id)
                self._sessions[channel_id] = session
            if max_waiting is not None and session.busy > max_waiting:
                raise ChatQueueFull()
            self._sessions.move_to_end(channel_id)
            session.last_used = now
            ahead = session.busy
            session.busy += 1
            self._evict_over_cap()
            return ChatTurn(session, ahead)

    @asynccontextmanager
    async def turn(self, channel_id: int, guild_id: int | None) -> AsyncIterator[ChatSession]:
        """Hold the channel's turn: one answer at a time per channel, in arrival order (no bound, no deadline)."""
        async with await self.join(channel_id, guild_id) as place, place.hold() as session:
            yield session

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
