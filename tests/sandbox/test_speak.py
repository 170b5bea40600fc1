"""Simulated members speaking into a voice channel (``Sandbox.speak``), heard by a bare discord.py client that
listens with discord-ext-voice-recv's ``VoiceRecvClient``, as a listening bot would.

Two views of what the client receives: the *wire* (every datagram on the client's voice socket, timed in
discord.py's socket reader thread) for pacing and pauses, and voice-recv's *sink* (after its decryption, SSRC ->
user mapping and jitter buffer) for attribution and audio. The sandbox runs DAVE, so what the sink gets is
end-to-end encrypted: the listener removes that layer with the client's own DAVE session, as the bot does.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import davey
import discord
import numpy as np
import pytest
import soundfile
from discord.ext import voice_recv

from bot.opus import load_opus
from sandbox import ALICE_USER_ID, BOB_USER_ID, LOUNGE_CHANNEL_ID, Sandbox, SandboxError, run_playground
from sandbox.voice.speech import MAX_PAUSE_FRAMES, SILENCE_RMS, corrupt_opus, frame_rms, split_spurts

pytestmark = pytest.mark.voice  # paced in real time: run alone (tests/support/lanes.py)

TONE_RATE = 22_050  # the test WAVs are 22.05 kHz mono, so speak() has to resample and upmix them


def tone(seconds: float, freq: float = 440.0, amplitude: float = 0.4) -> np.ndarray:
    t = np.arange(round(TONE_RATE * seconds)) / TONE_RATE
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype(np.float32)


def write_wav(path: Path, *parts: np.ndarray) -> Path:
    soundfile.write(path, np.concatenate(parts), TONE_RATE, subtype="PCM_16")
    return path


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(TONE_RATE * seconds), dtype=np.float32)


@dataclass(frozen=True)
class Heard:
    """One packet as voice-recv's sink got it."""

    user_id: int | None
    ssrc: int
    sequence: int
    timestamp: int
    opus: bytes  # DAVE removed when it could be (else the payload as it came)
    extensions: dict[int, bytes]
    e2ee: bool  # the payload was a DAVE frame this client decrypted


class Listener:
    """A VoiceRecvClient listening with an Opus sink (decode=False: a corrupt frame must not kill voice-recv's
    decoding thread; we decode ourselves), plus a raw listener on the client's voice socket."""

    def __init__(self, vc: voice_recv.VoiceRecvClient) -> None:
        self.vc = vc
        self.heard: list[Heard] = []
        self.wire: list[tuple[float, int]] = []  # (time.monotonic(), SSRC) of each RTP datagram
        vc.listen(voice_recv.BasicSink(self._on_voice, decode=False))
        vc._connection.add_socket_listener(self._on_datagram)

    def _on_voice(self, user: discord.Member | discord.User | None, data: voice_recv.VoiceData) -> None:
        packet = data.packet
        user_id = user.id if user is not None else None
        extensions = dict(packet.extension_data)
        payload, e2ee = bytes(data.opus), False
        session = self.vc._connection.dave_session
        if user_id is not None and session is not None and session.ready:
            try:
                payload, e2ee = session.decrypt(user_id, davey.MediaType.audio, payload), True
            except ValueError:  # damaged on purpose (corrupt_next_frames): left as it came
                pass
        self.heard.append(Heard(user_id, packet.ssrc, packet.sequence, packet.timestamp, payload, extensions, e2ee))

    def _on_datagram(self, data: bytes) -> None:
        if len(data) >= 12 and data[1] & 0x7F == 0x78:
            self.wire.append((time.monotonic(), int.from_bytes(data[8:12], "big")))

    def of(self, user_id: int) -> list[Heard]:
        return [h for h in self.heard if h.user_id == user_id]


def wire_spurts(times: list[float], gap_s: float = 0.2) -> list[list[float]]:
    """Arrival times split where no packet came for ``gap_s``."""
    spurts: list[list[float]] = []
    for t in times:
        if spurts and t - spurts[-1][-1] <= gap_s:
            spurts[-1].append(t)
        else:
            spurts.append([t])
    return spurts


def decoded_seconds(packets: list[Heard]) -> float:
    decoder = discord.opus.Decoder()
    samples = sum(len(decoder.decode(p.opus, fec=False)) // 4 for p in packets)
    return samples / 48_000


async def until(predicate: Any, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - voice-recv's threads have nothing to await
            await asyncio.sleep(0.02)


async def listen(client: discord.Client, channel_id: int = LOUNGE_CHANNEL_ID) -> Listener:
    channel = client.get_channel(channel_id)
    assert isinstance(channel, discord.VoiceChannel)
    vc = await channel.connect(cls=voice_recv.VoiceRecvClient, self_deaf=False, timeout=5)
    assert isinstance(vc, voice_recv.VoiceRecvClient)
    return Listener(vc)


# --------------------------------------------------------------------------------------------- planning


def test_talk_spurts_skip_pauses_longer_than_100_ms() -> None:
    loud, quiet = 0.1, SILENCE_RMS / 2
    levels = np.array([quiet] * 3 + [loud] * 4 + [quiet] * MAX_PAUSE_FRAMES + [loud] * 2 + [quiet] * 6 + [loud])
    # a 100 ms pause stays inside the spurt; 120 ms splits it; the edges are never sent
    assert split_spurts(levels) == [range(3, 14), range(20, 21)]
    assert split_spurts(np.full(10, quiet)) == []


def test_frame_rms_and_corrupt_opus() -> None:
    pcm = (np.full(960 * 2, 16384, dtype="<i2")).tobytes() + bytes(3840)
    assert frame_rms(pcm).tolist() == [0.5, 0.0]
    load_opus()
    opus = discord.opus.Encoder().encode(bytes(3840), 960)
    bad = corrupt_opus(opus)
    assert len(bad) == len(opus) and bad[0] >> 3 == opus[0] >> 3  # same size and Opus configuration
    with pytest.raises(discord.opus.OpusError):
        discord.opus.Decoder().decode(bad, fec=False)


# --------------------------------------------------------------------------------------------- speaking


async def test_speech_with_a_pause_arrives_as_two_paced_spurts(
    sandbox: Sandbox, client: discord.Client, tmp_path: Path
) -> None:
    listener = await listen(client)
    await sandbox.join_voice("alice", "Lounge")
    wav = write_wav(tmp_path / "pause.wav", tone(1.0), silence(1.0), tone(1.0, freq=660))
    event = await sandbox.speak("alice", wav)

    assert event["event"] == "member_speech" and event["member"] == "alice" and event["channel"] == "Lounge"
    assert event["seconds"] == pytest.approx(3.0, abs=0.02) and event["spurts"] == 2
    assert event["frames_sent"] == pytest.approx(100, abs=2) and event["frames_dropped"] == event["corrupted"] == 0

    # The wire: two spurts of ~50 packets at ~50 packets/s, a ~1 s gap with no packet at all.
    await until(lambda: len(listener.wire) >= event["frames_sent"])
    await asyncio.sleep(0.1)
    assert len(listener.wire) == event["frames_sent"]
    ssrcs = {ssrc for _, ssrc in listener.wire}
    assert len(ssrcs) == 1
    first, second = wire_spurts([t for t, _ in listener.wire])
    for spurt in (first, second):
        rate = (len(spurt) - 1) / (spurt[-1] - spurt[0])
        assert 47 <= rate <= 53, rate
        assert np.percentile(np.diff(spurt), 99) < 0.035
    assert 0.95 <= second[0] - first[-1] <= 1.1

    # voice-recv: attributed to alice through SPEAKING's ssrc, contiguous sequence numbers, timestamps that jump
    # over the pause, decodable audio of the right length. Its jitter buffer holds back the newest packet until
    # the next arrives, so the very last one may still be inside it.
    await until(lambda: len(listener.heard) >= event["frames_sent"] - 1)
    heard = listener.of(ALICE_USER_ID)
    assert len(heard) == len(listener.heard) and heard[0].ssrc in ssrcs
    assert listener.vc._get_id_from_ssrc(heard[0].ssrc) == ALICE_USER_ID
    assert [h.sequence for h in heard] == list(range(len(heard)))
    steps = np.diff([h.timestamp for h in heard])
    assert sorted(set(steps.tolist()))[0] == 960 and int((steps > 960).sum()) == 1
    assert steps.max() == pytest.approx(960 * 51, abs=960 * 3)  # 1 s pause + the frame itself
    split = 1 + int(np.argmax(steps))
    assert decoded_seconds(heard[:split]) == pytest.approx(1.0, rel=0.05)
    assert decoded_seconds(heard) == pytest.approx(2.0, rel=0.05)
    assert all(1 in h.extensions for h in heard)  # RFC 6464 audio level, as Discord's packets carry
    assert all(h.e2ee for h in heard)  # every frame was DAVE-encrypted by alice's own session


async def test_corrupt_frames_fail_to_decode_and_later_ones_decode(sandbox: Sandbox, client: discord.Client) -> None:
    listener = await listen(client)
    await sandbox.join_voice("bob", "Lounge")
    sandbox.corrupt_next_frames("bob", 3)
    pcm = (np.sin(np.arange(48_000 // 2) / 48_000 * 2 * np.pi * 300) * 12_000).astype("<i2").repeat(2).tobytes()
    event = await sandbox.speak("bob", pcm)  # raw 48 kHz stereo s16le: 0.5 s, 25 frames
    assert event["frames_sent"] == 25 and event["corrupted"] == 3 and event["spurts"] == 1
    await until(lambda: len(listener.heard) >= 24)
    decoder = discord.opus.Decoder()
    outcomes = []
    for packet in listener.of(BOB_USER_ID):
        try:
            decoder.decode(packet.opus, fec=False)
        except discord.opus.OpusError:
            outcomes.append("bad")
        else:
            outcomes.append("ok")
    assert outcomes == ["bad"] * 3 + ["ok"] * (len(outcomes) - 3) and len(outcomes) >= 24

    event = await sandbox.speak("bob", pcm)  # nothing pending any more
    assert event["corrupted"] == 0


async def test_two_members_at_once_are_told_apart(sandbox: Sandbox, client: discord.Client, tmp_path: Path) -> None:
    listener = await listen(client)
    await sandbox.join_voice("alice")
    await sandbox.join_voice("bob")
    a = write_wav(tmp_path / "a.wav", tone(0.6, 440))
    b = write_wav(tmp_path / "b.wav", tone(0.4, 880))
    ea, eb = await asyncio.gather(sandbox.speak("alice", a), sandbox.speak("bob", b))
    assert (ea["frames_sent"], eb["frames_sent"]) == (30, 20)
    await until(lambda: len(listener.of(ALICE_USER_ID)) >= 29 and len(listener.of(BOB_USER_ID)) >= 19)
    assert {h.ssrc for h in listener.of(ALICE_USER_ID)}.isdisjoint({h.ssrc for h in listener.of(BOB_USER_ID)})
    assert None not in {h.user_id for h in listener.heard}


async def test_pacing_holds_while_the_event_loop_is_blocked(sandbox: Sandbox, client: discord.Client) -> None:
    """Packets are paced by a thread, so a bot that stalls its loop still receives audio as Discord sends it."""
    listener = await listen(client)
    await sandbox.join_voice("alice")
    pcm = (np.sin(np.arange(48_000) / 48_000 * 2 * np.pi * 500) * 12_000).astype("<i2").repeat(2).tobytes()
    speech = asyncio.create_task(sandbox.speak("alice", pcm))
    await asyncio.sleep(0.2)
    stalled_from = time.monotonic()
    time.sleep(0.5)  # noqa: ASYNC251 - deliberately a stalled event loop, as a misbehaving bot would cause
    stalled_until = time.monotonic()
    event = await speech
    await until(lambda: len(listener.wire) >= event["frames_sent"])
    during_stall = [t for t, _ in listener.wire if stalled_from <= t <= stalled_until]
    # Paced by the event loop, nothing would arrive while it is stalled; paced by a thread, packets keep coming
    # (about 25 in 0.5 s; a loaded machine may delay the receiving thread, so only some are required).
    assert event["frames_sent"] == 50 and len(during_stall) >= 5


async def test_speak_refusals(sandbox: Sandbox, client: discord.Client, tmp_path: Path) -> None:
    pcm = bytes(3840)
    with pytest.raises(SandboxError, match="alice is not in a voice channel"):
        await sandbox.speak("alice", pcm)
    await sandbox.join_voice("alice", "Lounge")
    with pytest.raises(SandboxError, match="Assistant is not in Lounge"):
        await sandbox.speak("alice", pcm)
    await listen(client)
    with pytest.raises(SandboxError, match="multiple of 4 bytes"):
        await sandbox.speak("alice", b"\x00" * 6)
    with pytest.raises(SandboxError, match="cannot read audio file"):
        await sandbox.speak("alice", tmp_path / "missing.wav")
    with pytest.raises(SandboxError, match="lacks the Speak permission in Quiet"):
        await sandbox.speak("bob", pcm, channel="Quiet")  # channel=: joins first
    assert sandbox.voice_states["bob"] == "Quiet"
    with pytest.raises(SandboxError, match="positive number"):
        sandbox.corrupt_next_frames("alice", 0)
    event = await sandbox.speak("alice", bytes(3840 * 10))  # all silence: nothing is sent
    assert (event["frames_sent"], event["spurts"]) == (0, 0)


async def test_deafened_bot_hears_nothing(sandbox: Sandbox, client: discord.Client) -> None:
    channel = client.get_channel(LOUNGE_CHANNEL_ID)
    vc = await channel.connect(cls=voice_recv.VoiceRecvClient, self_deaf=True, timeout=5)
    listener = Listener(vc)
    await sandbox.join_voice("alice")
    pcm = (np.full(48_000 // 5 * 2, 8000, dtype="<i2")).tobytes()
    event = await sandbox.speak("alice", pcm)
    assert event["frames_sent"] == 0 and event["frames_dropped"] == 10
    assert listener.wire == []


async def test_stop_ends_a_speech_in_flight(sandbox: Sandbox, tmp_path: Path) -> None:
    load_opus()
    client = discord.Client(
        intents=discord.Intents.default(), connector=sandbox.client_connector(), guild_ready_timeout=0.05
    )
    task = asyncio.create_task(client.start(sandbox.bot_token))
    try:
        await asyncio.wait_for(client.wait_until_ready(), 10)
        await listen(client)
        await sandbox.join_voice("alice")
        speech = asyncio.create_task(sandbox.speak("alice", write_wav(tmp_path / "long.wav", tone(5.0))))
        await until(lambda: any(t.name.startswith("sandbox-speaker") for t in threading.enumerate()))
        await sandbox.stop()
        with pytest.raises(SandboxError, match="stopped while alice was speaking"):
            await speech
        assert not any(t.name.startswith("sandbox-speaker") for t in threading.enumerate())
    finally:
        await client.close()
        await task


async def test_playground_speak_line(sandbox: Sandbox, client: discord.Client, tmp_path: Path) -> None:
    await listen(client)
    wav = write_wav(tmp_path / "hi.wav", tone(0.3), silence(0.5), tone(0.2))
    out = io.StringIO()
    lines = ["speak " + str(wav), "join voice", f"speak {wav}", "speak"]
    rc = await run_playground(sandbox, lines=lines, json_mode=True, out=out, settle_s=0.05, max_wait_s=5)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    usage = [e["message"] for e in events if e["event"] == "usage_error"]
    assert usage[0] == "alice is not in a voice channel; join one first" and usage[1] == "speak needs some text"
    [speech] = [e for e in events if e["event"] == "member_speech"]
    assert speech["member"] == "alice" and speech["spurts"] == 2 and speech["frames_sent"] == 25
    assert rc == 1
    out = io.StringIO()
    await run_playground(sandbox, lines=[f"speak {wav}"], json_mode=False, out=out, settle_s=0.05, max_wait_s=5)
    # librosa's resampler may add a sample, which the framing pads to one more 20 ms frame
    assert re.search(r"\[voice Lounge\] alice said 1\.0[02] s: 2 spurts, 25 frames sent\n", out.getvalue())
