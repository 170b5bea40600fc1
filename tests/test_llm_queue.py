"""The fair LLM queue: concurrency bound, round robin across members, voice first, bound, cancellation, places."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from services.chat.llm_queue import LLMQueue, LLMQueueFull, Priority


class Crowd:
    """Requests that wait for a slot in ``queue`` and record the order in which they get it."""

    def __init__(self, queue: LLMQueue) -> None:
        self.queue = queue
        self.served: list[str] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.places: dict[str, list[int]] = {}

    async def send(self, name: str, member_id: int, priority: Priority = Priority.TEXT,
                   hold: asyncio.Event | None = None) -> None:
        """Start a request named ``name``; returns once it holds a slot or waits in the queue."""

        async def on_place(ahead: int) -> None:
            self.places.setdefault(name, []).append(ahead)

        async def request() -> None:
            async with self.queue.slot(member_id, priority=priority, on_place=on_place):
                self.served.append(name)
                if hold is not None:
                    await hold.wait()

        self.tasks[name] = asyncio.create_task(request())
        await asyncio.sleep(0)  # let it take its place before the next one arrives

    async def finish(self) -> None:
        await asyncio.gather(*self.tasks.values())


async def test_members_take_turns_so_a_backlog_does_not_delay_a_first_request():
    queue = LLMQueue(max_concurrency=1, max_waiting=10)
    crowd = Crowd(queue)
    hold = asyncio.Event()
    await crowd.send("x", 9, hold=hold)  # holds the only slot while the others arrive
    for number in range(1, 5):
        await crowd.send(f"a{number}", 1)
    await crowd.send("b1", 2)
    await crowd.send("c1", 3)
    await crowd.send("b2", 2)
    assert queue.running == 1 and queue.waiting == 7
    hold.set()
    await crowd.finish()
    assert crowd.served == ["x", "a1", "b1", "c1", "a2", "b2", "a3", "a4"]


async def test_without_fairness_requests_are_served_in_arrival_order():
    queue = LLMQueue(max_concurrency=1, max_waiting=10, fair=False)
    crowd = Crowd(queue)
    hold = asyncio.Event()
    await crowd.send("x", 9, hold=hold)
    for name, member in (("a1", 1), ("a2", 1), ("a3", 1), ("b1", 2), ("c1", 3)):
        await crowd.send(name, member)
    hold.set()
    await crowd.finish()
    assert crowd.served == ["x", "a1", "a2", "a3", "b1", "c1"]


async def test_no_more_than_max_concurrency_hold_a_slot():
    queue = LLMQueue(max_concurrency=3, max_waiting=20)
    inside = peak = 0

    async def request(member_id: int) -> None:
        nonlocal inside, peak
        async with queue.slot(member_id):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(request(n % 4) for n in range(12)))
    assert peak == 3 and queue.running == 0 and queue.waiting == 0


async def test_voice_requests_go_before_text_ones():
    queue = LLMQueue(max_concurrency=1, max_waiting=10, notice_interval_s=0)
    crowd = Crowd(queue)
    hold = asyncio.Event()
    await crowd.send("x", 9, hold=hold)
    await crowd.send("text-a", 1)
    await crowd.send("text-b", 2)
    await crowd.send("voice-c", 3, Priority.VOICE)
    await asyncio.sleep(0)
    assert crowd.places["text-a"][-1] == 2  # the running one and the voice request are now ahead of it
    hold.set()
    await crowd.finish()
    assert crowd.served == ["x", "voice-c", "text-a", "text-b"]


async def test_past_the_bound_a_request_is_refused_and_takes_nothing():
    queue = LLMQueue(max_concurrency=1, max_waiting=2)
    crowd = Crowd(queue)
    hold = asyncio.Event()
    await crowd.send("x", 9, hold=hold)
    await crowd.send("a", 1)
    await crowd.send("b", 2)
    with pytest.raises(LLMQueueFull) as refused:
        async with queue.slot(3):
            pytest.fail("a request past the bound got a slot")
    assert refused.value.user_message == (
        "Too many requests are waiting for the assistant right now; try again in a few minutes.")
    assert queue.waiting == 2
    hold.set()
    await crowd.finish()
    assert crowd.served == ["x", "a", "b"]


async def test_a_cancelled_waiter_leaves_the_queue_at_once_and_those_behind_move_up():
    queue = LLMQueue(max_concurrency=1, max_waiting=10, notice_interval_s=0)
    crowd = Crowd(queue)
    hold = asyncio.Event()
    await crowd.send("x", 9, hold=hold)
    await crowd.send("a", 1)
    await crowd.send("b", 2)
    await asyncio.sleep(0)
    assert crowd.places["b"] == [2]
    crowd.tasks["a"].cancel()
    await asyncio.sleep(0)
    assert queue.waiting == 1  # no orphan entry: a is gone before any slot frees
    await asyncio.sleep(0)
    assert crowd.places["b"] == [2, 1]
    hold.set()
    with contextlib.suppress(asyncio.CancelledError):
        await crowd.finish()
    await asyncio.gather(crowd.tasks["b"])
    assert crowd.served == ["x", "b"]


async def test_a_cancelled_running_request_frees_its_slot():
    queue = LLMQueue(max_concurrency=1, max_waiting=10)
    crowd = Crowd(queue)
    await crowd.send("x", 9, hold=asyncio.Event())  # would hold the slot for ever
    await crowd.send("a", 1)
    crowd.tasks["x"].cancel()
    await asyncio.wait_for(crowd.tasks["a"], 1)
    assert crowd.served == ["x", "a"] and queue.running == 0


async def test_place_updates_are_throttled_but_the_latest_place_is_shown():
    queue = LLMQueue(max_concurrency=1, max_waiting=10, notice_interval_s=0.2)
    crowd = Crowd(queue)
    holds = [asyncio.Event() for _ in range(3)]
    for number, hold in enumerate(holds):
        await crowd.send(f"r{number}", number, hold=hold)
    await crowd.send("last", 7)
    await asyncio.sleep(0)
    assert crowd.places["last"] == [3]
    holds[0].set()
    await asyncio.sleep(0.01)
    holds[1].set()  # two moves within one interval: one update, with the newer place
    await asyncio.sleep(0.3)
    assert crowd.places["last"] == [3, 1]
    holds[2].set()
    await crowd.finish()


async def test_stream_holds_a_slot_while_streaming_and_closing_it_frees_the_slot():
    queue = LLMQueue(max_concurrency=1, max_waiting=10)
    closed = asyncio.Event()

    async def deltas():
        try:
            for word in ("one ", "two ", "three"):
                yield word
        finally:
            closed.set()

    stream = queue.stream(deltas(), member_id=1)
    assert await anext(stream) == "one "
    assert queue.running == 1
    await stream.aclose()
    assert closed.is_set() and queue.running == 0
    assert [delta async for delta in queue.stream(deltas(), member_id=2)] == ["one ", "two ", "three"]


async def test_a_refused_stream_closes_the_llm_stream_it_was_given():
    queue = LLMQueue(max_concurrency=1, max_waiting=0)
    started = asyncio.Event()

    async def deltas():
        started.set()
        yield "never"

    async with queue.slot(1):
        with pytest.raises(LLMQueueFull):
            await anext(queue.stream(deltas(), member_id=2))
    assert not started.is_set()  # the request never reached the model


async def test_a_closed_queue_lets_the_answers_under_way_finish_and_grants_no_more_slots():
    queue = LLMQueue(max_concurrency=1, max_waiting=5)
    crowd, release = Crowd(queue), asyncio.Event()
    await crowd.send("answering", 1, hold=release)
    await crowd.send("waiting", 2)
    queue.close()
    assert queue.answering == {crowd.tasks["answering"]}
    release.set()
    await crowd.tasks["answering"]
    await asyncio.sleep(0.05)
    assert crowd.served == ["answering"] and not crowd.tasks["waiting"].done()  # its slot is not given on
    assert queue.answering == set() and queue.running == 0
    crowd.tasks["waiting"].cancel()  # shutdown cancels what waits (the bot keeps it for after the restart)
    with contextlib.suppress(asyncio.CancelledError):
        await crowd.tasks["waiting"]
    assert queue.waiting == 0
