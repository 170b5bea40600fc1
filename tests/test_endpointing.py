"""Tests of endpointing (services/voice/endpointing.py): PCM in, utterances out, no Discord and no Opus.

Frames are 20 ms of 48 kHz stereo s16le, fed at Discord's pace on an injected clock, as the receive path feeds them
after decoding each member's Opus packets.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from config import Settings
from services.voice.endpointing import Endpointer, Utterance
from tests.support.pcm import FRAME_S, Clock, drain, settle, tone_pcm

ALICE = 1001
BOB = 1002





def make_endpointer(
    queue: asyncio.Queue[Utterance] | None = None, **kwargs: Any
) -> tuple[Endpointer, asyncio.Queue[Utterance], Clock]:
    queue = queue if queue is not None else asyncio.Queue()
    clock = Clock()
    options: dict[str, Any] = {
        "endpoint_silence_ms": 600, "pre_roll_ms": 200, "min_utterance_s": 0.4, "max_utterance_s": 15.0,
        "clock": clock,
    }
    options.update(kwargs)
    return Endpointer(loop=asyncio.get_running_loop(), on_utterance=queue, **options), queue, clock


def feed(endpointer: Endpointer, clock: Clock, user_id: int, frames: list[bytes]) -> None:
    """Feed ``frames`` at Discord's pace: one every 20 ms of the clock."""
    for frame in frames:
        endpointer.feed(user_id, frame, clock.t)
        clock.t += FRAME_S



async def test_utterance_emitted_after_the_silence_gap_with_its_duration() -> None:
    endpointer, queue, clock = make_endpointer()
    frames = tone_pcm(50)
    feed(endpointer, clock, ALICE, frames)
    last = clock.t - FRAME_S

    assert endpointer.check_endpoints(last + 0.5) == 0  # 500 ms of silence: not yet
    endpointer.check_endpoints(last + 0.6)
    await settle()

    [utterance] = drain(queue)
    assert utterance.user_id == ALICE
    assert utterance.duration_s == pytest.approx(1.0)
    assert utterance.pcm == b"".join(frames)
    assert utterance.started_at == pytest.approx(1000.0)
    assert utterance.ended_at == pytest.approx(1001.0)
    assert endpointer.stats.utterances == 1


async def test_check_task_ends_utterances_of_pcm_fed_from_another_thread() -> None:
    queue: asyncio.Queue[Utterance] = asyncio.Queue()
    endpointer = Endpointer(
        loop=asyncio.get_running_loop(), on_utterance=queue, endpoint_silence_ms=100, min_utterance_s=0.2,
        check_interval_s=0.01,
    )
    endpointer.start()
    frames = tone_pcm(30)

    def receive_thread() -> None:  # like voice_recv's packet router: feed() off the event loop
        for frame in frames:
            endpointer.feed(ALICE, frame, endpointer.clock())

    thread = threading.Thread(target=receive_thread)
    thread.start()
    await asyncio.to_thread(thread.join)
    utterance = await asyncio.wait_for(queue.get(), timeout=5)
    await endpointer.stop()
    assert utterance.user_id == ALICE and utterance.duration_s == pytest.approx(0.6)


async def test_short_utterance_is_dropped() -> None:
    endpointer, queue, clock = make_endpointer()
    feed(endpointer, clock, ALICE, tone_pcm(10))  # 200 ms < 400 ms
    endpointer.check_endpoints(clock.t + 1)
    await settle()
    assert drain(queue) == []
    assert endpointer.stats.dropped_short == 1


async def test_long_utterance_is_cut_and_the_rest_continues() -> None:
    endpointer, queue, clock = make_endpointer(max_utterance_s=1.0)
    feed(endpointer, clock, ALICE, tone_pcm(60))  # 1.2 s without a pause
    await settle()
    [first] = drain(queue)  # emitted while the member is still talking
    assert first.duration_s == pytest.approx(1.0)

    endpointer.check_endpoints(clock.t + 1)
    await settle()
    [rest] = drain(queue)  # 200 ms: shorter than the minimum, but the tail of a long utterance is kept
    assert rest.duration_s == pytest.approx(0.2)
    assert rest.started_at == pytest.approx(first.ended_at)
    assert endpointer.stats.cut_long == 1 and endpointer.stats.dropped_short == 0


async def test_two_speakers_at_once_give_two_utterances() -> None:
    endpointer, queue, clock = make_endpointer()
    for a, b in zip(tone_pcm(40, freq=300), tone_pcm(25, freq=700) + [None] * 15, strict=True):
        endpointer.feed(ALICE, a, clock.t)
        if b is not None:
            endpointer.feed(BOB, b, clock.t)
        clock.t += FRAME_S
    endpointer.check_endpoints(clock.t + 1)
    await settle()
    by_user = {u.user_id: u for u in drain(queue)}
    assert by_user[ALICE].duration_s == pytest.approx(0.8)
    assert by_user[BOB].duration_s == pytest.approx(0.5)


async def test_pre_roll_keeps_the_quiet_frames_before_speech() -> None:
    endpointer, queue, clock = make_endpointer(voice_threshold=0.05, pre_roll_ms=200)
    quiet = tone_pcm(25, amplitude=0.005)
    loud = tone_pcm(30, amplitude=0.3)
    feed(endpointer, clock, ALICE, quiet + loud)  # a client that transmits continuously, e.g. voice activity off
    endpointer.check_endpoints(clock.t + 1)
    await settle()
    [utterance] = drain(queue)
    assert utterance.duration_s == pytest.approx(0.6 + 0.2)  # 200 ms of pre-roll, not the whole 500 ms of hiss


async def test_speech_start_is_reported_once_after_300_ms() -> None:
    started: list[tuple[int, int]] = []
    fed = 0

    async def on_speech_start(user_id: int) -> None:
        started.append((user_id, fed))

    endpointer, queue, clock = make_endpointer(on_speech_start=on_speech_start)
    for frame in tone_pcm(40):
        endpointer.feed(ALICE, frame, clock.t)
        fed += 1
        clock.t += FRAME_S
        await settle()
    assert started == [(ALICE, 15)]  # 15 frames = 300 ms


async def test_idle_speakers_are_forgotten_and_their_number_is_bounded() -> None:
    endpointer, queue, clock = make_endpointer(max_speakers=3, idle_forget_s=5)
    frame = tone_pcm(1)[0]
    for user_id in range(2000, 2010):
        endpointer.feed(user_id, frame, clock.t)
        clock.t += FRAME_S
    assert len(endpointer._speakers) == 3
    endpointer.check_endpoints(clock.t + 10)
    assert endpointer._speakers == {}


async def test_full_queue_drops_and_counts() -> None:
    endpointer, queue, clock = make_endpointer(asyncio.Queue(maxsize=1))
    for user_id in (ALICE, BOB):
        feed(endpointer, clock, user_id, tone_pcm(25))
    endpointer.check_endpoints(clock.t + 1)
    await settle()
    assert queue.qsize() == 1 and endpointer.stats.delivery_dropped == 1


async def test_async_callback_receives_utterances_and_stop_cancels_it() -> None:
    got: list[Utterance] = []
    release = asyncio.Event()

    async def on_utterance(utterance: Utterance) -> None:
        got.append(utterance)
        await release.wait()

    clock = Clock()
    endpointer = Endpointer(loop=asyncio.get_running_loop(), on_utterance=on_utterance, clock=clock)
    endpointer.start()
    feed(endpointer, clock, ALICE, tone_pcm(30))
    assert endpointer.flush() == 1
    await settle()
    assert [u.user_id for u in got] == [ALICE] and len(endpointer._callbacks) == 1
    await endpointer.stop()
    assert endpointer._callbacks == set()
    feed(endpointer, clock, ALICE, tone_pcm(30))  # after stop: ignored
    assert endpointer.flush() == 0


async def test_from_settings_uses_the_listening_settings() -> None:
    settings = Settings(ENDPOINT_SILENCE_MS=300, MIN_UTTERANCE_S=0.1, MAX_UTTERANCE_S=2)
    endpointer = Endpointer.from_settings(settings, loop=asyncio.get_running_loop(), on_utterance=asyncio.Queue())
    assert endpointer.silence_s == 0.3 and endpointer._min_s == 0.1 and endpointer._max_bytes == 2 * 192_000


# -- speculation: tentative ends before the confirmed one ---------------------------------------------------------


def speculating(**kwargs: Any) -> tuple[Endpointer, asyncio.Queue[Utterance], Clock, list[tuple]]:
    """An endpointer with tentative ends after 200 ms of silence; the events it reports, in order, go to the list."""
    events: list[tuple] = []
    endpointer, queue, clock = make_endpointer(
        speculate_ms=200, on_tentative=lambda u: events.append(("tentative", u)),
        on_resumed=lambda user_id, started_at: events.append(("resumed", user_id, started_at)), **kwargs,
    )
    return endpointer, queue, clock, events


async def test_a_short_silence_hands_the_utterance_so_far_over_and_the_end_confirms_the_same_audio() -> None:
    endpointer, queue, clock, events = speculating()
    frames = tone_pcm(50)
    feed(endpointer, clock, ALICE, frames)
    last = clock.t - FRAME_S

    endpointer.check_endpoints(last + 0.15)
    await settle()
    assert events == []  # 150 ms: nothing yet
    endpointer.check_endpoints(last + 0.2)
    endpointer.check_endpoints(last + 0.4)  # once per silence, not at every check
    await settle()
    [(kind, tentative)] = events
    assert kind == "tentative" and tentative.pcm == b"".join(frames) and drain(queue) == []
    assert endpointer.is_speaking(ALICE)  # not removed from the buffer

    endpointer.check_endpoints(last + 0.6)
    await settle()
    [utterance] = drain(queue)
    assert (utterance.pcm, utterance.started_at) == (tentative.pcm, tentative.started_at)
    assert len(events) == 1 and endpointer.stats.tentative == 1 and endpointer.stats.resumed == 0


async def test_speech_resumed_after_a_tentative_end_is_reported_and_continues_the_same_utterance() -> None:
    endpointer, queue, clock, events = speculating()
    first, second = tone_pcm(40, freq=300), tone_pcm(30, freq=500)
    feed(endpointer, clock, ALICE, first)
    clock.t += 0.3  # a 320 ms pause mid-sentence: longer than 200 ms, shorter than 600 ms
    endpointer.check_endpoints()
    await settle()
    [(kind, tentative)] = events
    assert kind == "tentative"
    feed(endpointer, clock, ALICE, second)
    await settle()
    assert events[1] == ("resumed", ALICE, tentative.started_at)
    assert drain(queue) == []

    endpointer.check_endpoints(clock.t + 0.25)  # the second pause is a new tentative end of the same utterance
    endpointer.check_endpoints(clock.t + 0.6)
    await settle()
    [utterance] = drain(queue)  # ONE utterance: both halves
    assert utterance.pcm == b"".join(first + second) and utterance.started_at == tentative.started_at
    assert [event[0] for event in events] == ["tentative", "resumed", "tentative"]
    assert events[2][1].pcm == utterance.pcm
    assert endpointer.stats.tentative == 2 and endpointer.stats.resumed == 1 and endpointer.stats.utterances == 1


async def test_no_tentative_end_for_a_too_short_utterance_or_with_speculation_off() -> None:
    endpointer, queue, clock, events = speculating()
    feed(endpointer, clock, ALICE, tone_pcm(10))  # 200 ms < min_utterance_s
    endpointer.check_endpoints(clock.t + 0.3)
    feed(endpointer, clock, ALICE, tone_pcm(5))
    await settle()
    assert events == []

    off, queue, clock = make_endpointer(on_tentative=lambda u: events.append(u))
    feed(off, clock, ALICE, tone_pcm(50))
    off.check_endpoints(clock.t + 0.3)
    await settle()
    assert events == [] and drain(queue) == []
    with pytest.raises(ValueError, match="speculate_ms"):
        make_endpointer(speculate_ms=600)


async def test_the_words_heard_at_a_tentative_end_shorten_or_lengthen_the_silence_that_confirms_it() -> None:
    endpointer, queue, clock, events = speculating()
    feed(endpointer, clock, ALICE, tone_pcm(40))
    last = clock.t - FRAME_S
    endpointer.check_endpoints(last + 0.2)
    await settle()
    [(_, tentative)] = events
    assert endpointer.end_after(ALICE, tentative.started_at, 1300, "incomplete")  # "What is the"
    endpointer.check_endpoints(last + 1.0)
    await settle()
    assert drain(queue) == []  # past ENDPOINT_SILENCE_MS, not ended
    endpointer.check_endpoints(last + 1.31)
    await settle()
    assert len(drain(queue)) == 1 and endpointer.stats.ended_by_words == {"incomplete": 1}

    feed(endpointer, clock, BOB, tone_pcm(40))
    clock.t += 0.4
    endpointer.check_endpoints()
    await settle()
    bob = events[-1][1]
    assert endpointer.end_after(BOB, bob.started_at, 350, "complete")  # transcribed after 400 ms: ends at once
    await settle()
    assert [u.user_id for u in drain(queue)] == [BOB] and endpointer.stats.ended_by_words["complete"] == 1


async def test_words_of_an_utterance_that_went_on_since_do_not_end_it() -> None:
    endpointer, queue, clock, events = speculating()
    feed(endpointer, clock, ALICE, tone_pcm(40))
    clock.t += 0.25
    endpointer.check_endpoints()
    await settle()
    [(_, tentative)] = events
    feed(endpointer, clock, ALICE, tone_pcm(10))  # resumed before the transcript came
    assert not endpointer.end_after(ALICE, tentative.started_at, 350, "complete")
    endpointer.check_endpoints(clock.t + 0.5)
    await settle()
    assert drain(queue) == [] and endpointer.is_speaking(ALICE)
