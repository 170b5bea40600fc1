"""The fair queue in front of Ollama: at most ``max_concurrency`` chat requests at once, the others wait their turn.

Ollama answers at most OLLAMA_NUM_PARALLEL requests per model at once (default 1, its FAQ "How does Ollama handle
concurrent requests?") and holds the rest in arrival order, so a member who sends ten questions delays everyone
who comes after. The waiting happens here instead, where it can be fair:

- Voice requests are served before text ones (a member in voice hears silence while waiting; text shows a notice).
- Within a priority, members take turns (round robin): each member's requests in their order, one member after
  the other; a member with nothing waiting joins the rotation at its end. A member's first request therefore
  waits for at most one request of each member ahead of it, however many those members have queued.
  With ``fair=False`` requests are served in arrival order (FIFO), as Ollama does; benchmarks compare the two.
- Past ``max_waiting`` waiting requests a new one is refused with LLMQueueFull.
- A waiting request is told its place through ``on_place(ahead)``: at once, then again when the place changes,
  at most once per ``notice_interval_s``. ``ahead`` counts the requests being answered plus those that will be
  served before it.
- A request cancelled while waiting leaves the queue at once; one cancelled while running frees its slot at once.
- At shutdown ``close()`` stops granting slots: the requests holding one go on (``answering`` names their tasks, so
  the bot can let them finish), those waiting wait until they are cancelled.

Embeddings do not go through this queue: Ollama serves them on the embedding model's own runner, with its own
parallel slots, so they never hold up a chat answer (and indexing must not wait behind a crowd's questions).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from services.errors import ServiceError

OnPlace = Callable[[int], Awaitable[object]]


class Priority(IntEnum):
    """Which requests are served first: lower values first."""

    VOICE = 0
    TEXT = 1


class LLMQueueFull(ServiceError):
    """As many requests as the queue may hold are already waiting for the model."""

    def __init__(self) -> None:
        super().__init__("Too many requests are waiting for the assistant right now; try again in a few minutes.")


@dataclass(eq=False)
class _Entry:
    member_id: int
    priority: Priority
    key: int  # the member's id when fair, else the arrival number (every request its own "member": FIFO)
    ahead: int = 0
    granted: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class LLMQueue:
    """At most ``max_concurrency`` holders of a slot at once; see the module docstring.

    max_concurrency: requests sent to Ollama at once (>= 1). max_waiting: requests that may wait (>= 0).
    fair: round robin across members (True) or arrival order (False). notice_interval_s: the least time in
    seconds between two ``on_place`` calls for one request. Use from one event loop.
    """

    def __init__(self, *, max_concurrency: int, max_waiting: int, fair: bool = True,
                 notice_interval_s: float = 1.0) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if max_waiting < 0:
            raise ValueError("max_waiting must not be negative")
        self.max_concurrency = max_concurrency
        self.max_waiting = max_waiting
        self.fair = fair
        self.notice_interval_s = notice_interval_s
        self.running = 0
        self.closed = False
        self._holders: set[asyncio.Task[Any]] = set()  # the tasks holding a slot
        # Per priority: the rotation of members (first = next served) and each one's waiting requests, in order.
        self._waiting: dict[Priority, OrderedDict[int, deque[_Entry]]] = {p: OrderedDict() for p in Priority}
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        return sum(len(entries) for members in self._waiting.values() for entries in members.values())

    @property
    def answering(self) -> set[asyncio.Task[Any]]:
        """The tasks holding a slot now (a copy): the answers the model has started on or is about to."""
        return set(self._holders)

    def close(self) -> None:
        """Grant no more slots (shutdown): requests holding one go on; waiting and new ones wait until cancelled."""
        self.closed = True

    @contextlib.asynccontextmanager
    async def slot(self, member_id: int, *, priority: Priority = Priority.TEXT,
                   on_place: OnPlace | None = None) -> AsyncIterator[None]:
        """Hold one of the ``max_concurrency`` slots for the body, waiting for it in the fair order.

        on_place: ``async (ahead: int)``, called while waiting (see module docstring); what it raises ends the
        wait (and leaves the queue) and propagates. Raises LLMQueueFull, taking nothing, when ``max_waiting``
        requests already wait.
        """
        if not self.closed and self.running < self.max_concurrency and not self.waiting:
            self.running += 1
        else:
            if self.waiting >= self.max_waiting:
                raise LLMQueueFull()
            key = member_id if self.fair else next(self._arrivals)
            entry = _Entry(member_id, priority, key)
            self._waiting[priority].setdefault(key, deque()).append(entry)
            self._reposition()
            try:
                await self._wait(entry, on_place)
            except BaseException:
                if entry.granted:  # granted while on_place was running: give the slot back
                    self._release()
                else:
                    self._remove(entry)
                raise
        holder = asyncio.current_task()
        if holder is not None:
            self._holders.add(holder)
        try:
            yield
        finally:
            self._holders.discard(holder)  # type: ignore[arg-type]
            self._release()

    async def stream(self, deltas: AsyncGenerator[str, None], *, member_id: int,
                     priority: Priority = Priority.TEXT, on_place: OnPlace | None = None) -> AsyncIterator[str]:
        """Yield ``deltas`` (an LLM stream not started yet, e.g. ``LLMClient.chat_stream(...)``) once a slot is
        held, holding it until the stream ends or is closed. Raises what ``slot`` and ``deltas`` raise."""
        async with contextlib.aclosing(deltas), self.slot(member_id, priority=priority, on_place=on_place):
            async for delta in deltas:
                yield delta

    async def _wait(self, entry: _Entry, on_place: OnPlace | None) -> None:
        shown: int | None = None
        shown_at = float("-inf")
        while not entry.granted:
            delay: float | None = None
            if on_place is not None and entry.ahead != shown:
                delay = shown_at + self.notice_interval_s - time.monotonic()
                if delay <= 0:
                    shown = entry.ahead
                    await on_place(shown)
                    shown_at = time.monotonic()
                    continue
            entry.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):  # None: until granted or moved
                    await entry.wake.wait()

    def _release(self) -> None:
        self.running -= 1
        while not self.closed and self.running < self.max_concurrency:
            entry = self._pop_next()
            if entry is None:
                break
            entry.granted = True
            self.running += 1
            entry.wake.set()
        self._reposition()

    def _pop_next(self) -> _Entry | None:
        for priority in Priority:
            members = self._waiting[priority]
            if members:
                key, entries = next(iter(members.items()))
                entry = entries.popleft()
                if entries:
                    members.move_to_end(key)  # the member's next request waits for the others' turns
                else:
                    del members[key]
                return entry
        return None

    def _remove(self, entry: _Entry) -> None:
        members = self._waiting[entry.priority]
        entries = members.get(entry.key)
        if entries is not None and entry in entries:
            entries.remove(entry)
            if not entries:
                del members[entry.key]
            self._reposition()

    def _reposition(self) -> None:
        """Give every waiting request its place in the serving order, waking those whose place changed."""
        ahead = self.running
        for priority in Priority:
            rotation = list(self._waiting[priority].values())
            # Round robin from the current rotation: every member's first request, then every second one...
            for round_ in itertools.count():
                served = [entries[round_] for entries in rotation if len(entries) > round_]
                if not served:
                    break
                for entry in served:
                    if entry.ahead != ahead:
                        entry.ahead = ahead
                        entry.wake.set()
                    ahead += 1
