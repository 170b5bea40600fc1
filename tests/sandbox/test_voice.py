"""The sandbox's voice server, driven by a bare discord.py client (not our cogs) and by raw sockets.

The real discord.py VoiceClient connects over wss:// (trusting the sandbox CA through ``connector=``), runs IP
discovery over UDP, joins the channel's DAVE (MLS) group, encrypts Opus end to end and with
``aead_xchacha20_poly1305_rtpsize``; the sandbox decrypts (with a simulated member's own DAVE session), decodes and
measures it.
"""

from __future__ import annotations

import asyncio
import ctypes.util
import io
import json
import socket
import struct
from pathlib import Path
from typing import Any

import aiohttp
import davey
import discord
import nacl.secret
import numpy as np
import pytest
import soundfile
from discord.voice_state import VoiceConnectionState

from bot.opus import load_opus
from sandbox import (
    ADMIN_USER_ID,
    ALICE_USER_ID,
    BOB_USER_ID,
    GUILD_ID,
    LOUNGE_CHANNEL_ID,
    PRIVATE_CHANNEL_ID,
    QUIET_CHANNEL_ID,
    Sandbox,
    SandboxError,
    run_playground,
)
from sandbox.voice.audio import OPUS_SILENCE, VoiceRecorder
from sandbox.voice.mls import read_commit
from sandbox.voice.udp import RtpError, RtpPacket, discovery_response, open_rtp, seal_rtp
from tests.support.bot_harness import running_client

pytestmark = pytest.mark.voice  # paced in real time: run alone (tests/support/lanes.py)

SINE_AMPLITUDE = 0.5  # of full scale: RMS 0.354


def sine_pcm(seconds: float, freq: float = 440.0) -> bytes:
    """A sine, 48 kHz stereo s16le: 3840 bytes per 20 ms frame."""
    t = np.arange(round(48_000 * seconds)) / 48_000
    mono = (np.sin(2 * np.pi * freq * t) * SINE_AMPLITUDE * 32767).astype(np.int16)
    return np.repeat(mono, 2).tobytes()


class RecordingVoiceClient(discord.VoiceClient):
    """discord.py's VoiceClient, keeping every JSON message its voice websocket received (via the hook)."""

    def __init__(self, client: discord.Client, channel: Any) -> None:
        self.voice_messages: list[dict[str, Any]] = []  # before super(): it builds the connection state
        super().__init__(client, channel)

    def create_connection_state(self) -> VoiceConnectionState:
        async def hook(ws: Any, msg: dict[str, Any]) -> None:
            self.voice_messages.append(msg)

        return VoiceConnectionState(self, hook=hook)


async def connect(client: discord.Client, channel_id: int = LOUNGE_CHANNEL_ID) -> RecordingVoiceClient:
    channel = client.get_channel(channel_id)
    assert isinstance(channel, discord.VoiceChannel)
    vc = await channel.connect(cls=RecordingVoiceClient, timeout=5)
    assert isinstance(vc, RecordingVoiceClient)
    return vc


async def play(vc: discord.VoiceClient, *pcms: bytes) -> None:
    """Play each PCM as its own source, the next started from the previous one's ``after`` (as a queue does)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    sources = [discord.PCMAudio(io.BytesIO(pcm)) for pcm in pcms]

    def after(error: Exception | None) -> None:
        if error is not None or not sources:
            loop.call_soon_threadsafe(done.set_result, error)
        else:
            vc.play(sources.pop(0), after=after)

    vc.play(sources.pop(0), after=after)
    assert await asyncio.wait_for(done, 10) is None


async def wait_spurts(sandbox: Sandbox, count: int, member: str = "Assistant", timeout: float = 5) -> list[dict]:
    """The spurts of ``member`` once there are ``count`` (voice_audio events since the start)."""
    seen = 0

    def counted(event: dict) -> bool:
        nonlocal seen
        seen += event["event"] == "voice_audio" and event["member"] == member
        return seen >= count

    await sandbox.wait_for(counted, timeout, since=0)
    return sandbox.voice_spurts(member)


async def until(predicate: Any, timeout: float = 5) -> None:
    """Poll discord.py's client-side state, which has no event to await."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


# --------------------------------------------------------------------------------------------- opus, RTP


def test_load_opus_finds_a_libopus_and_is_idempotent() -> None:
    path = load_opus()
    assert load_opus() == path and discord.opus.is_loaded()
    if ctypes.util.find_library("opus") is None:  # no system libopus here: PyAV's bundled copy
        assert "av.libs" in path and "libopus" in path


def test_rtp_round_trip_and_tampering() -> None:
    key = bytes(range(32))
    packet = RtpPacket(sequence=7, timestamp=960 * 7, ssrc=1234, payload=b"\xfc opus frame")
    sealed = seal_rtp(packet, key, counter=42)
    assert sealed[:2] == b"\x80\x78" and sealed[-4:] == struct.pack(">I", 42)
    assert open_rtp(sealed, key) == packet
    with pytest.raises(RtpError, match="does not decrypt"):
        open_rtp(sealed[:3] + b"\x09" + sealed[4:], key)  # header is authenticated (AAD)
    with pytest.raises(RtpError, match="does not decrypt"):
        open_rtp(sealed, bytes(32))
    with pytest.raises(RtpError, match="too short"):
        open_rtp(sealed[:20], key)


def test_rtp_with_csrc_and_header_extension() -> None:
    """rtpsize: CSRCs and the 4-byte extension header are clear AAD; the extension body is encrypted."""
    key = bytes(32)
    header = struct.pack(">BBHII", 0x91, 0x78, 1, 960, 99) + struct.pack(">I", 5)  # X bit, 1 CSRC
    ext_header = b"\xbe\xde\x00\x01"  # one 32-bit word of extension body
    nonce = struct.pack(">I", 3) + bytes(20)
    body = nacl.secret.Aead(key).encrypt(b"EXT!" + b"opus", header + ext_header, nonce).ciphertext
    assert open_rtp(header + ext_header + body + nonce[:4], key) == RtpPacket(1, 960, 99, b"opus")


async def test_spurts_end_on_silence_speaking_off_and_gap() -> None:
    load_opus()
    encoder = discord.opus.Encoder()
    frame = encoder.encode(sine_pcm(0.02), encoder.SAMPLES_PER_FRAME)
    loop = asyncio.get_running_loop()
    published: list[dict] = []
    recorder = VoiceRecorder(published.append, lambda at: int(at * 1000))
    stream = recorder.stream(1, "bob", lambda: "Lounge")

    async def talk(frames: int) -> None:
        for _ in range(frames):
            stream.feed(frame, loop.time())
            await asyncio.sleep(0.02)

    await talk(3)
    stream.feed(OPUS_SILENCE, loop.time())  # silence: ends the spurt at once
    assert [s["frames"] for s in published] == [3]
    await talk(3)
    stream.speaking(0)  # SPEAKING 0 that overtook frames still coming: the spurt goes on
    await talk(5)
    assert len(published) == 1
    stream.speaking(0)
    await asyncio.sleep(0.1)  # ...and ends once nothing follows it
    assert [s["frames"] for s in published] == [3, 8]
    await talk(2)
    await asyncio.sleep(0.25)  # 200 ms without packets
    assert [s["frames"] for s in published] == [3, 8, 2]
    assert published[1]["member"] == "bob" and published[1]["channel"] == "Lounge"
    assert 0.3 < published[1]["rms"] < 0.4 and published[1]["seconds"] == pytest.approx(0.16)
    assert recorder.summary("bob")["frames"] == 13 and recorder.summary("bob")["silence_frames"] == 1
    recorder.close()


# --------------------------------------------------------------------------------------------- raw sockets


async def test_ip_discovery_over_udp(sandbox: Sandbox) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        request = struct.pack(">HHI", 1, 70, 4321) + bytes(66)
        await loop.sock_sendto(sock, request, ("127.0.0.1", sandbox.voice.udp.port))
        response = await asyncio.wait_for(loop.sock_recv(sock, 100), 2)
        assert response == discovery_response(4321, "127.0.0.1", sock.getsockname()[1])
    assert len(response) == 74 and response[8:18] == b"127.0.0.1\x00"


async def test_voice_gateway_needs_tls_trust_and_a_granted_token(sandbox: Sandbox) -> None:
    url = f"wss://{sandbox.voice.gateway.endpoint}/?v=8"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.ws_connect(url)  # the system trust store does not know the sandbox CA
        async with http.ws_connect(url, ssl=sandbox.ssl_context) as ws:
            hello = await ws.receive_json()
            assert hello["op"] == 8 and hello["d"]["heartbeat_interval"] > 0
            await ws.send_json({"op": 3, "d": {"t": 99, "seq_ack": -1}})
            assert await ws.receive_json() == {"op": 6, "d": {"t": 99}}
            await ws.send_json({"op": 1, "d": {"protocol": "udp"}})
            await ws.receive()
            assert ws.close_code == 4003  # not authenticated
        async with http.ws_connect(url, ssl=sandbox.ssl_context) as ws:
            await ws.receive_json()
            identify = {"server_id": str(GUILD_ID), "user_id": "1", "session_id": "x", "token": "nope"}
            await ws.send_json({"op": 0, "d": identify})
            await ws.receive()
            assert ws.close_code == 4004


async def test_raw_voice_session_resume_and_sealed_rtp() -> None:
    """No bot, no DAVE: grant a voice session by hand, then IDENTIFY, SELECT_PROTOCOL, drop, RESUME, send RTP."""
    async with Sandbox(dave=False) as sandbox:
        await raw_session_resume_and_rtp(sandbox)


async def raw_session_resume_and_rtp(sandbox: Sandbox) -> None:
    load_opus()
    await sandbox.voice.on_bot_op4({"guild_id": str(GUILD_ID), "channel_id": str(LOUNGE_CHANNEL_ID)})
    grant = sandbox.voice._grants[sandbox.bot_user_id]
    url = f"wss://{sandbox.voice.gateway.endpoint}/?v=8"
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.setblocking(False)
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url, ssl=sandbox.ssl_context) as ws:
                await ws.receive_json()  # HELLO
                ids = {"server_id": str(GUILD_ID), "session_id": grant.session_id, "token": grant.token}
                await ws.send_json({"op": 0, "d": {**ids, "user_id": str(sandbox.bot_user_id)}})
                ready = (await ws.receive_json())["d"]
                select = {"address": "127.0.0.1", "port": udp.getsockname()[1], "mode": ready["modes"][0]}
                await ws.send_json({"op": 1, "d": {"protocol": "udp", "data": select}})
                description = (await ws.receive_json())["d"]
                assert description["dave_protocol_version"] == 0
                key = bytes(description["secret_key"])
                await sandbox.join_voice("alice")
                assert await ws.receive_json() == {"op": 11, "d": {"user_ids": [str(ALICE_USER_ID)]}, "seq": 1}
                await ws.close(code=4000)  # an abnormal close: the session stays resumable
            async with http.ws_connect(url, ssl=sandbox.ssl_context) as ws:
                await ws.receive_json()
                await ws.send_json({"op": 7, "d": {**ids, "seq_ack": 0}})
                assert (await ws.receive_json())["seq"] == 1  # replayed: not acknowledged before
                assert await ws.receive_json() == {"op": 9, "d": None}
                encoder = discord.opus.Encoder()
                for n in range(10):
                    opus = encoder.encode(sine_pcm(0.02), encoder.SAMPLES_PER_FRAME)
                    packet = RtpPacket(n, n * 960, ready["ssrc"], opus)
                    await loop.sock_sendto(udp, seal_rtp(packet, key, n), ("127.0.0.1", ready["port"]))
                    await asyncio.sleep(0.02)
                await ws.send_json({"op": 5, "d": {"speaking": 0, "delay": 0, "ssrc": ready["ssrc"]}})
                [spurt] = await wait_spurts(sandbox, 1)
    assert spurt["frames"] == 10 and spurt["seconds"] == pytest.approx(0.2)
    assert spurt["rms"] == pytest.approx(SINE_AMPLITUDE / 2**0.5, abs=0.06)
    assert spurt["e2ee"] is False


async def receive_binary(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, int, bytes]:
    """The next binary message of the voice gateway: (sequence, opcode, payload)."""
    data = await ws.receive_bytes(timeout=5)
    return struct.unpack_from(">H", data)[0], data[2], data[3:]


async def test_raw_dave_handshake_then_end_to_end_encrypted_rtp(sandbox: Sandbox) -> None:
    """No bot: a raw client with its own davey session goes through DAVE version 1 with the voice gateway, byte by
    byte (ops 25-29, 23, 22), with alice (a simulated member) in the channel; its encrypted frames are measured."""
    load_opus()
    await sandbox.voice.on_bot_op4({"guild_id": str(GUILD_ID), "channel_id": str(LOUNGE_CHANNEL_ID)})
    grant = sandbox.voice._grants[sandbox.bot_user_id]
    url = f"wss://{sandbox.voice.gateway.endpoint}/?v=8"
    ids = {"server_id": str(GUILD_ID), "session_id": grant.session_id, "token": grant.token,
           "user_id": str(sandbox.bot_user_id)}  # fmt: skip
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.setblocking(False)
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url, ssl=sandbox.ssl_context) as ws:
                await ws.receive_json()
                await ws.send_json({"op": 0, "d": ids})  # no max_dave_protocol_version: DAVE is required
                await ws.receive()
                assert ws.close_code == 4017
            async with http.ws_connect(url, ssl=sandbox.ssl_context) as ws:
                await ws.receive_json()
                await ws.send_json({"op": 0, "d": {**ids, "max_dave_protocol_version": 1}})
                ready = (await ws.receive_json())["d"]
                select = {"address": "127.0.0.1", "port": udp.getsockname()[1], "mode": ready["modes"][0]}
                await ws.send_json({"op": 1, "d": {"protocol": "udp", "data": select}})
                description = (await ws.receive_json())["d"]
                assert description["dave_protocol_version"] == 1
                seq, op, package = await receive_binary(ws)  # right after op 4, sequenced like op 11
                assert (seq, op) == (1, 25)
                session = davey.DaveSession(1, sandbox.bot_user_id, LOUNGE_CHANNEL_ID)
                session.set_external_sender(package)
                await ws.send_bytes(bytes([26]) + session.get_serialized_key_package())  # a bare KeyPackage

                await sandbox.join_voice("alice")  # pending with us: we are sent her Add, and commit it
                assert (await ws.receive_json())["op"] == 11
                seq, op, proposals = await receive_binary(ws)
                assert (seq, op, proposals[0]) == (3, 27, 0)  # append
                result = session.process_proposals(davey.ProposalsOperationType.append, proposals[1:])
                assert result is not None and result.welcome is not None
                await ws.send_bytes(bytes([28]) + result.commit + result.welcome)  # no length prefix between
                seq, op, announced = await receive_binary(ws)
                transition_id = struct.unpack_from(">H", announced)[0]
                assert op == 29 and transition_id > 0 and announced[2:] == result.commit
                assert read_commit(announced[2:]).epoch == 0
                session.process_commit(announced[2:])
                await ws.send_json({"op": 23, "d": {"transition_id": transition_id}})
                assert await ws.receive_json() == {"op": 22, "d": {"transition_id": transition_id}, "seq": seq + 1}
                assert session.ready and sorted(session.get_user_ids()) == sorted(
                    [str(sandbox.bot_user_id), str(ALICE_USER_ID)]
                )
                group = sandbox.voice.dave_groups[LOUNGE_CHANNEL_ID]
                assert group.leaves == {0: sandbox.bot_user_id, 1: ALICE_USER_ID} and group.epoch == 1
                assert group.member(ALICE_USER_ID).leaf_index == 1

                encoder = discord.opus.Encoder()
                key = bytes(description["secret_key"])
                for n in range(10):
                    opus = session.encrypt_opus(encoder.encode(sine_pcm(0.02), encoder.SAMPLES_PER_FRAME))
                    packet = RtpPacket(n, n * 960, ready["ssrc"], opus)
                    await loop.sock_sendto(udp, seal_rtp(packet, key, n), ("127.0.0.1", ready["port"]))
                    await asyncio.sleep(0.02)
                await ws.send_json({"op": 5, "d": {"speaking": 0, "delay": 0, "ssrc": ready["ssrc"]}})
                [spurt] = await wait_spurts(sandbox, 1)
    assert spurt["frames"] == 10 and spurt["e2ee"] is True
    assert spurt["rms"] == pytest.approx(SINE_AMPLITUDE / 2**0.5, abs=0.06)
    assert sandbox.errors == []


# --------------------------------------------------------------------------------------------- discord.py


async def test_bot_connects_and_a_sine_is_measured(sandbox: Sandbox, client: discord.Client) -> None:
    vc = await connect(client)
    assert vc.is_connected() and sandbox.voice_states == {"Assistant": "Lounge"}
    assert vc.mode == "aead_xchacha20_poly1305_rtpsize"
    state = vc._connection
    assert (state.ip, state.port) == ("127.0.0.1", state.socket.getsockname()[1])  # from our IP discovery
    ops = [m["op"] for m in vc.voice_messages]
    assert ops[:3] == [8, 2, 4]  # HELLO, READY, SESSION_DESCRIPTION
    description = next(m["d"] for m in vc.voice_messages if m["op"] == 4)
    assert description["dave_protocol_version"] == 1 and len(description["secret_key"]) == 32
    assert not state.dave_session.ready  # alone in the channel: no MLS group, nobody to encrypt for

    await play(vc, sine_pcm(1.0))
    [spurt] = await wait_spurts(sandbox, 1)
    assert spurt["member"] == "Assistant" and spurt["channel"] == "Lounge"
    assert spurt["seconds"] == pytest.approx(1.0, rel=0.05)
    assert spurt["frames"] == 50
    assert spurt["rms"] == pytest.approx(SINE_AMPLITUDE / 2**0.5, abs=0.05)
    # discord.py sends its 2nd frame 40 ms after the 1st (its pacing counts one frame twice), then every 20 ms.
    assert 19 <= spurt["gap_p99_ms"] <= 60
    assert spurt["end_t_ms"] - spurt["start_t_ms"] == pytest.approx(1000, abs=100)
    assert spurt["e2ee"] is False
    await until(lambda: sandbox.voice_totals()["silence_frames"] == 5)  # discord.py ends a source with 5 of them
    totals = sandbox.voice_totals()
    assert totals["frames"] == 50 and totals["spurts"] == 1
    assert sandbox.voice.bad_packets == 0 and not sandbox.errors
    joined = [e for e in sandbox.events() if e["event"] == "voice_state"]
    assert [(e["member"], e["channel"]) for e in joined] == [("Assistant", "Lounge")]


async def dave_ready(sandbox: Sandbox, vc: discord.VoiceClient, *members: int) -> Any:
    """The channel's DAVE group once the client's session is ready and the bot and ``members`` are in it (as of an
    executed transition)."""
    group = sandbox.voice.dave_groups[vc.channel.id]
    wanted = {sandbox.bot_user_id, *members}

    def ready() -> bool:
        session = vc._connection.dave_session
        return session is not None and session.ready and wanted <= group.executed

    await until(ready)
    return group


async def test_dave_group_follows_members_joining_and_leaving(sandbox: Sandbox, client: discord.Client) -> None:
    await sandbox.join_voice("alice")
    await sandbox.join_voice("bob")  # alice and bob make the channel's group before the bot comes
    vc = await connect(client)
    group = await dave_ready(sandbox, vc, ALICE_USER_ID, BOB_USER_ID)
    session = vc._connection.dave_session
    assert group.epoch == session.epoch == 2  # 1: alice + bob; 2: + the bot, welcomed (op 30) by alice's commit
    assert sorted(map(int, session.get_user_ids())) == sorted([sandbox.bot_user_id, ALICE_USER_ID, BOB_USER_ID])
    for leaf, user in group.leaves.items():  # the gateway's view of the tree is the members' own
        assert user == sandbox.bot_user_id or group.member(user).leaf_index == leaf
    await play(vc, sine_pcm(0.4))
    [spurt] = await wait_spurts(sandbox, 1)
    assert spurt["e2ee"] is True and spurt["rms"] == pytest.approx(SINE_AMPLITUDE / 2**0.5, abs=0.05)

    await sandbox.join_voice("admin")  # the bot is sent the Add, and its commit (op 28) is the one announced
    await dave_ready(sandbox, vc, ALICE_USER_ID, BOB_USER_ID, ADMIN_USER_ID)
    await sandbox.leave_voice("bob")
    # bob is out of the executed group as soon as he leaves; the client's session has him until it processes the
    # commit that removes him (epoch 4)
    await until(lambda: group.epoch == 4 and BOB_USER_ID not in group.executed and session.epoch == 4)
    await dave_ready(sandbox, vc, ALICE_USER_ID, ADMIN_USER_ID)
    assert sorted(map(int, session.get_user_ids())) == sorted([sandbox.bot_user_id, ALICE_USER_ID, ADMIN_USER_ID])
    await play(vc, sine_pcm(0.4))
    second = (await wait_spurts(sandbox, 2))[1]
    assert second["e2ee"] is True and second["frames"] == 20
    executed = [m["d"]["transition_id"] for m in vc.voice_messages if m["op"] == 22]
    assert len(executed) == 3 and len(set(executed)) == 3  # the bot's join, admin's, bob's departure

    await sandbox.leave_voice("alice")
    await sandbox.leave_voice("admin")  # the bot alone: its group is reset (op 24 epoch 1, op 21 transition 0)
    await until(lambda: any(m["op"] == 21 for m in vc.voice_messages))
    ops = [(m["op"], m["d"]) for m in vc.voice_messages if m["op"] in (21, 24)]
    assert ops == [(24, {"protocol_version": 1, "epoch": 1}), (21, {"protocol_version": 1, "transition_id": 0})]
    await until(lambda: not session.ready)
    await play(vc, sine_pcm(0.2))  # alone, nobody to encrypt for: sent as it is, and that is no error
    third = (await wait_spurts(sandbox, 3))[2]
    assert third["e2ee"] is False and sandbox.errors == []


async def test_unencrypted_frames_from_the_bot_are_an_error_event(sandbox: Sandbox, client: discord.Client) -> None:
    await sandbox.join_voice("alice")
    vc = await connect(client)
    await dave_ready(sandbox, vc, ALICE_USER_ID)
    vc._connection.dave_protocol_version = 0  # a client that stopped encrypting although the call is E2EE
    await play(vc, sine_pcm(0.5))
    error = await sandbox.wait_for(lambda e: e["event"] == "error", timeout=5, since=0)
    assert error["route"] == "voice UDP"
    assert error["message"] == (
        "Assistant's audio in Lounge cannot be played by its members: it is not end-to-end encrypted while DAVE is on"
    )
    await until(lambda: sandbox.voice_totals()["silence_frames"] == 5)  # silence passes (DAVE's one exception)
    assert sandbox.voice.unencrypted_frames == 25 and sandbox.voice_spurts() == []  # nobody could hear them
    assert len(sandbox.errors) == 1  # one error per run of such frames, not one per frame


async def test_each_spurt_is_recorded_as_a_wav_file_named_in_its_event(tmp_path: Path) -> None:
    async with Sandbox(record_dir=tmp_path / "recordings") as sandbox, running_client(sandbox) as client:
        await sandbox.join_voice("alice")
        vc = await connect(client)
        await dave_ready(sandbox, vc, ALICE_USER_ID)
        await play(vc, sine_pcm(0.4), sine_pcm(0.6, freq=880))
        first, second = await wait_spurts(sandbox, 2)
    for spurt, seconds in ((first, 0.4), (second, 0.6)):
        path = Path(spurt["file"])
        assert path.parent == tmp_path / "recordings" and spurt["e2ee"] is True
        info = soundfile.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (48_000, 2, "PCM_16")
        assert info.frames / 48_000 == pytest.approx(spurt["seconds"]) == pytest.approx(seconds, rel=0.05)
        samples, _ = soundfile.read(str(path), dtype="float64")
        assert np.sqrt(np.mean(samples**2)) == pytest.approx(spurt["rms"], abs=0.01)  # the audio the bot sent
    assert Path(first["file"]).name < Path(second["file"]).name  # numbered in order
    with pytest.raises(SandboxError, match="cannot record into"):
        Sandbox(record_dir=Path(first["file"]) / "inside-a-file")


async def test_consecutive_sources_give_spurts_in_order(sandbox: Sandbox, client: discord.Client) -> None:
    vc = await connect(client)
    await play(vc, sine_pcm(0.4), sine_pcm(0.8))
    first, second = await wait_spurts(sandbox, 2)
    assert first["seconds"] == pytest.approx(0.4, rel=0.05) and second["seconds"] == pytest.approx(0.8, rel=0.05)
    assert second["start_t_ms"] >= first["end_t_ms"]
    assert sandbox.voice_totals()["seconds"] == pytest.approx(1.2, rel=0.05)


async def test_stop_ends_the_frames(sandbox: Sandbox, client: discord.Client) -> None:
    vc = await connect(client)
    vc.play(discord.PCMAudio(io.BytesIO(sine_pcm(3.0))))
    await asyncio.sleep(0.5)
    stopped_at = sandbox.t_ms()
    vc.stop()
    [spurt] = await wait_spurts(sandbox, 1)
    assert spurt["end_t_ms"] - stopped_at <= 60  # the last frame was on its way when stop() ran
    assert spurt["seconds"] == pytest.approx(0.5, abs=0.1)


async def test_disconnect_leaves_no_voice_state(sandbox: Sandbox, client: discord.Client) -> None:
    vc = await connect(client)
    await vc.disconnect()
    assert sandbox.voice_states == {} and not vc.is_connected()
    assert client.get_guild(GUILD_ID).voice_client is None
    assert sandbox.voice.gateway.sessions == {}
    assert [e["channel"] for e in sandbox.events() if e["event"] == "voice_state"] == ["Lounge", None]
    await connect(client)  # and it can come back
    assert sandbox.voice_states == {"Assistant": "Lounge"}


async def test_external_disconnect_closes_the_client_connection(sandbox: Sandbox, client: discord.Client) -> None:
    await sandbox.join_voice("alice")
    vc = await connect(client)
    vc.play(discord.PCMAudio(io.BytesIO(sine_pcm(3.0))))
    await asyncio.sleep(0.2)
    await sandbox.disconnect_bot_voice()
    g = client.get_guild(GUILD_ID)
    await until(lambda: g.voice_client is None)
    assert not vc.is_connected() and not vc.is_playing()
    assert g.me.voice is None or g.me.voice.channel is None
    assert sandbox.voice_states == {"alice": "Lounge"} and sandbox.voice.gateway.sessions == {}
    [spurt] = await wait_spurts(sandbox, 1)
    assert 0.1 < spurt["seconds"] < 0.5
    with pytest.raises(SandboxError, match="not in a voice channel"):
        await sandbox.disconnect_bot_voice()


async def test_external_move_reconnects_and_quiet_drops_audio(sandbox: Sandbox, client: discord.Client) -> None:
    vc = await connect(client)
    first_session = next(iter(sandbox.voice.gateway.sessions.values()))
    await sandbox.move_bot_voice("Quiet")
    await until(lambda: vc.channel.id == QUIET_CHANNEL_ID and vc.is_connected() and sandbox.voice.gateway.sessions)
    assert sandbox.voice_states == {"Assistant": "Quiet"}
    assert first_session.ssrc not in sandbox.voice.gateway.sessions  # a new voice session after the 4014 close
    await until(lambda: all(s.ready for s in sandbox.voice.gateway.sessions.values()))
    await play(vc, sine_pcm(0.2))
    await asyncio.sleep(0.1)
    assert sandbox.voice_spurts() == [] and sandbox.voice.muted_frames >= 10  # no SPEAK in Quiet
    with pytest.raises(SandboxError, match="lacks the Connect permission in Private"):
        await sandbox.move_bot_voice("Private")


async def test_private_refuses_the_bot_but_members_can_be_placed(sandbox: Sandbox, client: discord.Client) -> None:
    private = client.get_channel(PRIVATE_CHANNEL_ID)
    assert not private.permissions_for(private.guild.me).connect
    assert not client.get_channel(QUIET_CHANNEL_ID).permissions_for(private.guild.me).speak
    with pytest.raises(asyncio.TimeoutError):
        await private.connect(timeout=0.5)
    assert "Assistant" not in sandbox.voice_states
    assert [e["code"] for e in sandbox.errors] == [50013] and "Connect in Private" in sandbox.errors[0]["message"]
    await sandbox.join_voice("bob", "Private")
    assert sandbox.voice_states == {"bob": "Private"}
    with pytest.raises(SandboxError, match="not a voice channel"):
        await sandbox.join_voice("bob", "general")


async def test_members_voice_states_reach_the_bot(sandbox: Sandbox) -> None:
    await sandbox.join_voice("alice", "Lounge")  # before the bot connects: in GUILD_CREATE
    async with running_client(sandbox) as client:
        g = client.get_guild(GUILD_ID)
        assert g.get_member(ALICE_USER_ID).voice.channel.id == LOUNGE_CHANNEL_ID
        updates: list[tuple[str, str | None]] = []
        client.event(_recorder(updates))  # registered under its name, on_voice_state_update
        vc = await connect(client)
        assert {m.name for m in vc.channel.members} == {"alice", "Assistant"}
        await until(lambda: any(m["op"] == 11 for m in vc.voice_messages))
        await sandbox.join_voice("bob", "Lounge")
        await sandbox.leave_voice("alice")
        await until(lambda: sum(m["op"] in (11, 13) for m in vc.voice_messages) >= 3)
        voice_ops = [(m["op"], m["d"], "seq" in m) for m in vc.voice_messages if m["op"] in (11, 13)]
        assert voice_ops == [
            (11, {"user_ids": [str(ALICE_USER_ID)]}, True),
            (11, {"user_ids": [str(BOB_USER_ID)]}, True),
            (13, {"user_id": str(ALICE_USER_ID)}, True),
        ]
        await until(lambda: ("alice", None) in updates)
        assert ("bob", "Lounge") in updates
        alice = g.get_member(ALICE_USER_ID)  # without the members intent, leaving voice drops her from the cache
        assert alice is None or alice.voice is None
        assert sandbox.voice_states == {"Assistant": "Lounge", "bob": "Lounge"}
    assert sandbox.voice_states == {"bob": "Lounge"}  # close() disconnects the voice client


def _recorder(updates: list[tuple[str, str | None]]) -> Any:
    async def on_voice_state_update(member: discord.Member, before: Any, after: Any) -> None:
        updates.append((member.name, after.channel.name if after.channel else None))

    return on_voice_state_update


async def test_playground_voice_lines(sandbox: Sandbox, client: discord.Client) -> None:
    out = io.StringIO()
    lines = ["join voice", "as bob", "join voice Quiet", "join voice nowhere", "as alice", "leave voice"]
    rc = await run_playground(sandbox, lines=lines, json_mode=True, out=out, settle_s=0.05, max_wait_s=5)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    states = [(e["member"], e["channel"]) for e in events if e["event"] == "voice_state"]
    assert states == [("alice", "Lounge"), ("bob", "Quiet"), ("alice", None)]
    assert [e for e in events if e["event"] == "usage_error"][0]["message"].startswith("no channel named 'nowhere'")
    assert rc == 1
    vc = await connect(client, QUIET_CHANNEL_ID)
    await sandbox.move_bot_voice("Lounge")
    await until(lambda: vc.channel.id == LOUNGE_CHANNEL_ID and vc.is_connected() and sandbox.voice.gateway.sessions)
    await until(lambda: all(s.ready for s in sandbox.voice.gateway.sessions.values()))
    out = io.StringIO()
    script = ["join voice", "wait 0.8"]
    printer = asyncio.create_task(
        run_playground(sandbox, lines=script, json_mode=False, out=out, settle_s=0.05, max_wait_s=5)
    )
    await play(vc, sine_pcm(0.3))
    await printer
    text = out.getvalue()
    assert "[voice Lounge] alice joined" in text
    assert "[voice Lounge] Assistant spoke 0.30 s (rms 0.35, 15 frames, gap p99" in text
