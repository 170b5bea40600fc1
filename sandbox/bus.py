"""The sandbox's event bus: events in the order they happened, a bounded history, and subscriber queues."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable

from .model import Event

_log = logging.getLogger(__name__)

EVENT_HISTORY = 10_000
SUBSCRIBER_QUEUE = 10_000


class EventBus:
    """Events in order, a bounded history of them, and subscriber queues.

    Positions are absolute indexes into the stream of published events (``position`` is the next one).
    """

    def __init__(self) -> None:
        self._history: deque[Event] = deque(maxlen=EVENT_HISTORY)
        self._first = 0  # absolute index of _history[0]
        self._subscribers: set[asyncio.Queue[Event]] = set()

    @property
    def position(self) -> int:
        return self._first + len(self._history)

    def publish(self, event: Event) -> None:
        if len(self._history) == self._history.maxlen:
            self._first += 1
        self._history.append(event)
        for queue in self._subscribers:
            if queue.full():  # a subscriber that stopped reading: drop its oldest event, not ours
                queue.get_nowait()
                _log.warning("sandbox event subscriber is not reading; dropped an event")
            queue.put_nowait(event)

    def since(self, position: int) -> list[Event]:
        return list(itertools.islice(self._history, max(0, position - self._first), None))

    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(queue)

    async def wait_for(self, predicate: Callable[[Event], bool], timeout_s: float, since: int | None) -> Event:
        queue = self.subscribe()
        try:
            if since is not None:
                for event in self.since(since):
                    if predicate(event):
                        return event
            async with asyncio.timeout(timeout_s):
                while True:
                    event = await queue.get()
                    if predicate(event):
                        return event
        finally:
            self.unsubscribe(queue)
