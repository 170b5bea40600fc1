"""The task registry logs failures and cancels everything at shutdown within a deadline."""

import asyncio
import logging

import pytest

from bot.tasks import TaskRegistry


async def test_failed_task_is_logged_with_its_name(caplog):
    registry = TaskRegistry()

    async def boom() -> None:
        raise ValueError("broken")

    with caplog.at_level(logging.ERROR):
        task = registry.start(boom(), name="reindex:42")
        with pytest.raises(ValueError):
            await task
        await asyncio.sleep(0)
    assert "reindex:42" in caplog.text
    assert registry.running == []


async def test_shutdown_cancels_and_awaits_running_tasks():
    registry = TaskRegistry()
    cleaned = asyncio.Event()

    async def long_work() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.set()

    registry.start(long_work(), name="long")
    await asyncio.sleep(0)
    assert registry.running == ["long"]
    stuck = await registry.shutdown(timeout_s=1.0)
    assert stuck == [] and cleaned.is_set() and registry.running == []


async def test_shutdown_reports_tasks_that_ignore_cancellation_and_refuses_new_ones():
    registry = TaskRegistry()
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await release.wait()  # ignores the first cancel, like a blocking call would

    task = registry.start(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    assert await registry.shutdown(timeout_s=0.1) == ["stubborn"]
    late = asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        registry.start(late, name="late")
    release.set()
    await task
