"""The task registry: every background task of the bot is started, named and reaped here.

A task that fails is logged with its name; at shutdown every task still running is cancelled and awaited
with a deadline, so nothing outlives the bot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskRegistry:
    """Tracks background tasks by name; not thread-safe (use it from the event loop only)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._awaited: set[asyncio.Task[Any]] = set()
        self._closed = False

    def start(self, coro: Coroutine[Any, Any, Any], *, name: str, awaited: bool = False) -> asyncio.Task[Any]:
        """Schedule ``coro`` as a tracked task called ``name``.

        awaited: the caller awaits the task and handles its errors, so a failure is not logged here.
        Raises RuntimeError once the registry is shutting down (the coroutine is closed, not leaked).
        """
        if self._closed:
            coro.close()
            raise RuntimeError(f"cannot start task {name!r}: shutting down")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        if awaited:
            self._awaited.add(task)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task in self._awaited:
            self._awaited.discard(task)
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task %r failed", task.get_name(), exc_info=exc)

    @property
    def running(self) -> list[str]:
        """Names of the tasks still running."""
        return sorted(task.get_name() for task in self._tasks)

    async def shutdown(self, timeout_s: float) -> list[str]:
        """Refuse new tasks, cancel the running ones and wait up to ``timeout_s`` seconds for them.

        Returns the names of tasks that did not finish within the deadline (they are left cancelled).
        """
        self._closed = True
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if not tasks:
            return []
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        stuck = sorted(task.get_name() for task in pending)
        if stuck:
            log.warning("tasks still running after %.1f s: %s", timeout_s, ", ".join(stuck))
        return stuck
