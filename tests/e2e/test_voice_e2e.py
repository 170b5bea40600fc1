"""Voice through the sandbox: the real discord.py voice client connects, encrypts and sends Opus; the sandbox
decrypts and decodes it and measures what arrived."""

from __future__ import annotations

import asyncio
import random

import pytest

from services.speech.audio import pcm_duration_s
from tests.e2e.conftest import ADMINS_ONLY, ephemeral_replies

pytestmark = pytest.mark.voice  # paced in real time: run alone (tests/support/lanes.py)

# 18 sentences, under SPEAK_MAX_CHARS
LONG_TEXT = " ".join(f"This is sentence number {n} of a long announcement." for n in range(1, 19))


def about(seconds: float, expected: float) -> bool:
    """Whether ``seconds`` of audio is ``expected`` seconds, give or take Piper's own variation: its duration noise
    (noise_w) lengthens or shortens a reading of the same text by a few per cent (6 % seen), plus a frame or two."""
    return abs(seconds - expected) <= 0.1 * expected + 0.04


async def expected_seconds(harness, text: str) -> float:
    """Duration of ``text`` as the bot's own synthesizer renders it."""
    return sum([pcm_duration_s(audio.pcm) async for audio in harness.bot.synthesizer.stream(text)])


async def wait_for_spurts(harness, count: int, timeout: float = 30.0) -> list[dict]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(harness.sandbox.voice_spurts("Assistant")) < count:
        assert loop.time() < deadline, f"expected {count} spurts, got {harness.sandbox.voice_spurts('Assistant')}"
        await asyncio.sleep(0.05)
    return harness.sandbox.voice_spurts("Assistant")


async def joined(make_harness, **overrides):
    harness = await make_harness(**overrides)
    await harness.sandbox.join_voice("alice", "Lounge")
    _, events = await harness.answer("alice", "join")
    assert ephemeral_replies(events)[-1].startswith("Joined"), events
    assert harness.sandbox.voice_states.get("Assistant") == "Lounge"
    return harness


async def test_speak_sends_audio_matching_the_synthesized_duration(make_harness):
    harness = await joined(make_harness)
    text = "Hello everyone. Welcome to the server! The meeting starts in ten minutes."
    _, events = await harness.answer("alice", "speak", {"text": text})
    assert ephemeral_replies(events)[-1] == "Speaking."
    [spurt] = await wait_for_spurts(harness, 1)
    expected = await expected_seconds(harness, text)
    assert about(spurt["seconds"], expected), (spurt, expected)
    assert spurt["rms"] > 0.01 and spurt["frames"] >= expected / 0.02 * 0.9
    assert spurt["e2ee"] is True  # DAVE: encrypted by the bot's session, decrypted with alice's
    assert harness.sandbox.errors == []


async def test_the_voice_starts_loading_when_the_bot_joins(make_harness, tmp_path):
    # Its own voice (not the test session's shared one, loaded already): nothing loads it before the /join.
    harness = await make_harness(MODELS_DIR=tmp_path / "own-models")
    assert not harness.bot.synthesizer.loaded and "tts-load" not in harness.bot.tasks.running
    await harness.sandbox.join_voice("alice", "Lounge")
    _, events = await harness.answer("alice", "join")
    assert ephemeral_replies(events)[-1].startswith("Joined"), events
    loading = harness.bot.voice_sessions.voice_loading
    assert loading is not None
    await asyncio.wait_for(asyncio.shield(loading), timeout=45)  # a few seconds of CPU for Piper, in a thread
    assert harness.bot.synthesizer.loaded


async def test_queued_requests_play_in_order_without_overlap(make_harness):
    harness = await joined(make_harness)
    short, long = "One.", "This second request is much longer than the first one, so it plays for longer."
    await asyncio.gather(harness.command("alice", "speak", {"text": short}),
                         harness.command("bob", "speak", {"text": long}))
    first, second = await wait_for_spurts(harness, 2)
    assert first["seconds"] < second["seconds"]
    assert about(first["seconds"], await expected_seconds(harness, short))
    assert second["start_t_ms"] >= first["end_t_ms"]


async def test_stop_cuts_speech_within_200_ms(make_harness):
    harness = await joined(make_harness)
    await harness.answer("alice", "speak", {"text": LONG_TEXT})
    await asyncio.sleep(1.0)  # speaking by now
    position = harness.sandbox.event_position
    await harness.command("bob", "stop")
    stop_event = await harness.sandbox.wait_for(lambda ev: ev["event"] == "command", timeout=10, since=position)
    stopped_at = stop_event["t_ms"]
    [spurt] = await wait_for_spurts(harness, 1)
    assert spurt["end_t_ms"] - stopped_at <= 200, (spurt, stopped_at)
    assert spurt["seconds"] < await expected_seconds(harness, LONG_TEXT) / 2


async def test_leave_and_external_disconnect_leave_no_state(make_harness):
    harness = await joined(make_harness)
    _, events = await harness.answer("alice", "leave")
    assert ephemeral_replies(events)[-1] == "Left the voice channel."
    assert harness.bot.voice_sessions.all() == [] and "Assistant" not in harness.sandbox.voice_states
    await harness.answer("alice", "join")
    await harness.answer("alice", "speak", {"text": LONG_TEXT})
    await harness.sandbox.disconnect_bot_voice()
    for _ in range(100):
        if not harness.bot.voice_sessions.all():
            break
        await asyncio.sleep(0.05)
    assert harness.bot.voice_sessions.all() == [] and "Assistant" not in harness.sandbox.voice_states
    assert not any(task.startswith("voice-player") for task in harness.bot.tasks.running)


async def test_not_in_voice_and_missing_permission_are_explained(make_harness):
    harness = await make_harness()
    _, events = await harness.answer("alice", "join")
    assert ephemeral_replies(events)[-1] == "Join a voice channel first, then use this command again."
    await harness.sandbox.join_voice("alice", "Quiet")
    _, events = await harness.answer("alice", "join")
    assert "I lack the Speak permission" in ephemeral_replies(events)[-1]
    await harness.sandbox.join_voice("alice", "Private")
    _, events = await harness.answer("alice", "join")
    assert "I lack the Connect permission" in ephemeral_replies(events)[-1]
    assert "Assistant" not in harness.sandbox.voice_states


async def test_twenty_concurrent_commands_leave_consistent_state(make_harness):
    harness = await joined(make_harness)
    for member in ("bob", "admin"):
        await harness.sandbox.join_voice(member, "Lounge")
    rng = random.Random(7)
    members = ["alice", "bob", "admin"]
    commands = [("speak", {"text": "Hello there."}), ("stop", {}), ("join", {}), ("leave", {})]
    await asyncio.gather(*(
        harness.command(rng.choice(members), *rng.choice(commands)) for _ in range(20)
    ))
    await harness.settle(timeout=30)
    await asyncio.sleep(0.5)
    sessions = harness.bot.voice_sessions.all()
    in_voice = "Assistant" in harness.sandbox.voice_states
    assert len(sessions) == (1 if in_voice else 0)
    if sessions:
        assert sessions[0].voice_client.is_connected()
    assert harness.sandbox.errors == []
    replies = [e["content"] for e in harness.sandbox.channel_messages("general") if e["author"] == "Assistant"]
    assert not any("Something went wrong" in (reply or "") for reply in replies)


async def test_autospeak_speaks_chat_answers_to_members_in_the_voice_channel(make_harness):
    harness = await joined(make_harness)
    _, events = await harness.answer("alice", "voice autospeak", {"mode": "on"})
    assert ephemeral_replies(events) == [ADMINS_ONLY]
    await harness.answer("alice", "chat", {"message": "not spoken yet"})
    await asyncio.sleep(0.5)
    assert harness.sandbox.voice_spurts("Assistant") == []
    _, events = await harness.answer("admin", "voice autospeak", {"mode": "on"})
    assert ephemeral_replies(events) == ["Chat answers will also be spoken in voice."]
    await harness.answer("alice", "chat", {"message": "say this aloud"})
    [spurt] = await wait_for_spurts(harness, 1)
    assert about(spurt["seconds"], await expected_seconds(harness, "You said: say this aloud"))
    # bob is not in the voice channel: his answer is only written
    await harness.answer("bob", "chat", {"message": "only text for me"})
    await asyncio.sleep(0.5)
    assert len(harness.sandbox.voice_spurts("Assistant")) == 1


async def test_busy_elsewhere_is_refused_and_idle_bot_moves(make_harness):
    harness = await joined(make_harness)
    await harness.answer("alice", "speak", {"text": LONG_TEXT})
    await harness.sandbox.join_voice("bob", "Games")
    _, events = await harness.answer("bob", "join")
    assert ephemeral_replies(events)[-1].startswith("⚠️ I am busy speaking in")
    assert harness.sandbox.voice_states["Assistant"] == "Lounge"
    await harness.answer("alice", "stop")
    _, events = await harness.answer("bob", "join")
    assert ephemeral_replies(events)[-1].startswith("Joined")
    assert harness.sandbox.voice_states["Assistant"] == "Games"
    assert len(harness.bot.voice_sessions.all()) == 1


async def test_bot_leaves_after_the_idle_timeout(make_harness):
    loop = asyncio.get_running_loop()
    joined_at = loop.time()
    harness = await joined(make_harness, VOICE_IDLE_TIMEOUT_S=5)
    await harness.sandbox.leave_voice("alice")
    while "Assistant" in harness.sandbox.voice_states:
        assert loop.time() - joined_at < 15, "the bot stayed in the voice channel"
        await asyncio.sleep(0.1)
    assert loop.time() - joined_at >= 5
    assert harness.bot.voice_sessions.all() == []


async def test_blank_speak_is_refused(make_harness):
    harness = await joined(make_harness)
    _, events = await harness.answer("alice", "speak", {"text": "   "})
    assert ephemeral_replies(events) == ["Your text is blank; write some text and try again."]
    await asyncio.sleep(0.5)
    assert harness.sandbox.voice_spurts("Assistant") == []
