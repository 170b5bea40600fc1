"""Chat sessions: one turn at a time per channel, bounded by count, expiry and waiting places."""

import asyncio

import pytest

from bot.state import ChatQueueFull, ChatSessions, ChatWaitTimeout


async def test_turns_in_one_channel_run_one_after_the_other():
    sessions = ChatSessions(max_sessions=10, ttl_s=60)
    order: list[str] = []

    async def turn(name: str, delay: float) -> None:
        async with sessions.turn(1, None):
            order.append(f"{name}-start")
            await asyncio.sleep(delay)
            order.append(f"{name}-end")

    await asyncio.gather(turn("a", 0.05), turn("b", 0.0))
    assert order == ["a-start", "a-end", "b-start", "b-end"]


async def test_different_channels_run_concurrently():
    sessions = ChatSessions(max_sessions=10, ttl_s=60)
    inside = 0
    peak = 0

    async def turn(channel: int) -> None:
        nonlocal inside, peak
        async with sessions.turn(channel, None):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.02)
            inside -= 1

    await asyncio.gather(*(turn(c) for c in range(5)))
    assert peak == 5


async def test_size_cap_evicts_least_recently_used_idle_sessions():
    sessions = ChatSessions(max_sessions=3, ttl_s=60)
    for channel in range(10):
        async with sessions.turn(channel, None):
            pass
    assert await sessions.size() == 3


async def test_busy_session_is_never_evicted():
    sessions = ChatSessions(max_sessions=1, ttl_s=60)
    async with sessions.turn(1, None) as held:
        for other in (2, 3):
            async with sessions.turn(other, None):
                pass
    async with sessions.turn(1, None) as again:
        assert again is held and again.turns == 2


async def test_idle_sessions_expire():
    sessions = ChatSessions(max_sessions=10, ttl_s=0.05)
    async with sessions.turn(1, None):
        pass
    await asyncio.sleep(0.1)
    assert await sessions.size() == 0


async def test_a_place_knows_how_many_are_ahead_and_the_queue_is_bounded_per_channel():
    sessions = ChatSessions(max_sessions=10, ttl_s=60)
    answering = await sessions.join(1, None, max_waiting=1)
    waiting = await sessions.join(1, None, max_waiting=1)
    assert (answering.ahead, waiting.ahead) == (0, 1)
    with pytest.raises(ChatQueueFull) as refused:
        await sessions.join(1, None, max_waiting=1)
    assert refused.value.user_message.endswith("try again shortly.")
    elsewhere = await sessions.join(2, None, max_waiting=1)  # another channel has its own queue
    assert elsewhere.ahead == 0
    answering.release()
    later = await sessions.join(1, None, max_waiting=1)  # a place came free
    assert later.ahead == 1
    for place in (waiting, later, elsewhere):
        place.release()


async def test_zero_waiting_places_refuse_while_an_answer_is_being_written():
    sessions = ChatSessions(max_sessions=10, ttl_s=60)
    async with await sessions.join(1, None, max_waiting=0) as place, place.hold():
        with pytest.raises(ChatQueueFull):
            await sessions.join(1, None, max_waiting=0)


async def test_a_turn_that_waits_past_its_deadline_gives_up_and_frees_its_place():
    sessions = ChatSessions(max_sessions=10, ttl_s=60)
    async with await sessions.join(1, None) as first, first.hold():
        async with await sessions.join(1, None) as second:
            with pytest.raises(ChatWaitTimeout) as gave_up:
                async with second.hold(timeout_s=0.05):
                    pytest.fail("the turn was never free")
    assert "try again" in gave_up.value.user_message
    async with await sessions.join(1, None, max_waiting=0) as again:
        assert again.ahead == 0
