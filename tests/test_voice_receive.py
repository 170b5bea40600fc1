"""Tests of the voice receive path (bot/voice_receive.py), without a network.

Packets are voice_recv's own ``RTPPacket`` (parsed from a real RTP header) wrapped in its ``VoiceData``, as its
packet router hands them to a sink, carrying real Opus frames from ``discord.opus.Encoder``. DAVE frames come from
a real pair of ``davey.DaveSession``s: the MLS group is built offline with the sandbox voice gateway's own external
sender (``sandbox.voice.mls``), which signs the Add proposal as Discord's voice server does. Stand-ins are limited to
what the sink reads from discord objects: a member (``id``, ``bot``) and a voice client (``_connection`` with the
DAVE state, ``_get_id_from_ssrc``).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import davey
import discord.opus
import numpy as np
import pytest
from discord.ext import voice_recv
from discord.ext.voice_recv.rtp import RTPPacket

from bot.opus import load_opus
from bot.voice_receive import OPUS_SILENCE, VoiceReceiver
from sandbox.voice.mls import ExternalSender, group_id_of, vl
from services.voice.endpointing import Endpointer, Utterance
from tests.support.pcm import FRAME_BYTES, FRAME_S, Clock, drain, settle, tone_pcm

BOT_ID = 42
ALICE = 1001
BOB = 1002
CHANNEL_ID = 777


@pytest.fixture(autouse=True, scope="module")
def _opus() -> None:
    load_opus()


# -- audio and packets ----------------------------------------------------------------------------------------------



def opus_frames(n_frames: int, **kwargs: Any) -> list[bytes]:
    """Real Opus frames (one encoder stream, like one member's client)."""
    encoder = discord.opus.Encoder()
    return [encoder.encode(pcm, 960) for pcm in tone_pcm(n_frames, **kwargs)]


class Stream:
    """One member's RTP stream: successive packets with increasing sequence numbers and timestamps."""

    def __init__(self, ssrc: int, member: Any | None) -> None:
        self.ssrc = ssrc
        self.member = member
        self.seq = 0

    def data(self, payload: bytes, *, padding: int = 0, member: Any = "default") -> voice_recv.VoiceData:
        first = 0x80 | (0x20 if padding else 0)  # RTP v2, P bit when padded
        header = struct.pack(">BBHII", first, 0x78, self.seq, self.seq * 960, self.ssrc)
        self.seq += 1
        packet = RTPPacket(header + b"\x00" * 8)  # body bytes are transport ciphertext; voice_recv replaces them
        # What voice_recv's transport decryptor leaves: the payload, plus RTP padding when the P bit is set
        packet.decrypted_data = payload + (bytes(padding - 1) + bytes([padding]) if padding else b"")
        return voice_recv.VoiceData(packet, self.member if member == "default" else member)


def member(user_id: int, *, bot: bool = False) -> SimpleNamespace:
    """Stand-in for discord.Member: the sink reads only ``id`` and ``bot``."""
    return SimpleNamespace(id=user_id, bot=bot)


class FakeVoiceClient:
    """Stand-in for VoiceRecvClient: its connection state's DAVE fields and the SSRC -> user id map."""

    def __init__(self, dave_session: Any = None, dave_protocol_version: int = 0) -> None:
        self._connection = SimpleNamespace(dave_session=dave_session, dave_protocol_version=dave_protocol_version)
        self._ssrc_to_id: dict[int, int] = {}

    def _get_id_from_ssrc(self, ssrc: int) -> int | None:
        return self._ssrc_to_id.get(ssrc)




def make_receiver(
    *, vc: FakeVoiceClient | None = None, is_ignored: Any = (), **kwargs: Any
) -> tuple[VoiceReceiver, asyncio.Queue[Utterance], Clock]:
    """A receiver feeding a real Endpointer (600 ms end of speech, 200 ms pre-roll) on a test clock."""
    queue: asyncio.Queue[Utterance] = asyncio.Queue()
    clock = Clock()
    options: dict[str, Any] = {
        "endpoint_silence_ms": 600, "pre_roll_ms": 200, "min_utterance_s": 0.4, "max_utterance_s": 15.0,
        "clock": clock,
    }
    options.update(kwargs)
    endpointer = Endpointer(loop=asyncio.get_running_loop(), on_utterance=queue, **options)
    receiver = VoiceReceiver(endpointer, is_ignored=is_ignored, bot_user_id=BOT_ID)
    receiver.sink._voice_client = vc or FakeVoiceClient()  # what voice_recv's AudioReader does on listen()
    return receiver, queue, clock


def feed(receiver: VoiceReceiver, clock: Clock, stream: Stream, frames: list[bytes], **kwargs: Any) -> None:
    """Write ``frames`` to the sink at Discord's pace: one packet every 20 ms of the clock."""
    for frame in frames:
        receiver.sink.write(stream.member, stream.data(frame, **kwargs))
        clock.t += FRAME_S



# -- packets to utterances -------------------------------------------------------------------------------------


async def test_utterance_emitted_after_the_silence_gap_with_its_duration() -> None:
    receiver, queue, clock = make_receiver()
    feed(receiver, clock, Stream(1, member(ALICE)), opus_frames(50))
    last = clock.t - FRAME_S

    assert receiver.endpointer.check_endpoints(last + 0.5) == 0  # 500 ms of silence: not yet
    receiver.endpointer.check_endpoints(last + 0.6)
    await settle()

    [utterance] = drain(queue)
    assert utterance.user_id == ALICE
    assert utterance.duration_s == pytest.approx(1.0)
    assert len(utterance.pcm) == 50 * FRAME_BYTES
    assert utterance.started_at == pytest.approx(1000.0)
    assert utterance.ended_at == pytest.approx(1001.0)
    assert np.abs(np.frombuffer(utterance.pcm, "<i2")).max() > 3000  # the tone, not silence
    assert receiver.endpointer.stats.utterances == 1 and receiver.stats.passthrough == 50


async def test_silence_frames_end_speech_without_extending_it() -> None:
    receiver, queue, clock = make_receiver()
    stream = Stream(1, member(ALICE))
    feed(receiver, clock, stream, opus_frames(30))
    last_voice = clock.t - FRAME_S
    feed(receiver, clock, stream, [OPUS_SILENCE] * 5)  # what a client sends when its member stops talking
    receiver.endpointer.check_endpoints(last_voice + 0.6)
    await settle()
    [utterance] = drain(queue)
    assert utterance.duration_s == pytest.approx(0.6)
    assert receiver.stats.silence == 5





async def test_two_speakers_at_once_give_two_utterances() -> None:
    receiver, queue, clock = make_receiver()
    alice, bob = Stream(1, member(ALICE)), Stream(2, member(BOB))
    for a, b in zip(opus_frames(40, freq=300), opus_frames(25, freq=700) + [None] * 15, strict=True):
        receiver.sink.write(alice.member, alice.data(a))
        if b is not None:
            receiver.sink.write(bob.member, bob.data(b))
        clock.t += FRAME_S
    receiver.endpointer.check_endpoints(clock.t + 1)
    await settle()
    by_user = {u.user_id: u for u in drain(queue)}
    assert by_user[ALICE].duration_s == pytest.approx(0.8)
    assert by_user[BOB].duration_s == pytest.approx(0.5)


# -- who is listened to ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("is_ignored", [{BOB}, lambda user_id: user_id == BOB], ids=["set", "callable"])
async def test_bot_itself_other_bots_and_ignored_members_produce_nothing(is_ignored: Any) -> None:
    receiver, queue, clock = make_receiver(is_ignored=is_ignored)
    frames = opus_frames(30)
    for stream in (Stream(1, member(BOT_ID, bot=True)), Stream(2, member(77, bot=True)), Stream(3, member(BOB))):
        feed(receiver, clock, stream, frames)
    receiver.endpointer.check_endpoints(clock.t + 1)
    await settle()
    assert drain(queue) == []
    stats = receiver.stats
    assert stats.ignored == 90 and stats.decoded == 0 and receiver.endpointer.active_speakers == []


async def test_packets_of_a_not_yet_mapped_ssrc_are_kept_until_the_member_is_known() -> None:
    vc = FakeVoiceClient()
    receiver, queue, clock = make_receiver(vc=vc)
    stream, frames = Stream(9, None), opus_frames(30)
    feed(receiver, clock, stream, frames[:5])  # before the SPEAKING op told voice_recv whose SSRC this is
    vc._ssrc_to_id[9] = ALICE
    feed(receiver, clock, stream, frames[5:])
    receiver.endpointer.check_endpoints(clock.t + 1)
    await settle()
    [utterance] = drain(queue)
    assert utterance.user_id == ALICE
    assert utterance.duration_s == pytest.approx(0.6)  # the first 100 ms were not lost


async def test_a_never_mapped_ssrc_is_dropped_and_counted() -> None:
    receiver, queue, clock = make_receiver()
    feed(receiver, clock, Stream(9, None), opus_frames(20))  # e.g. a video SSRC
    receiver.expire_unmapped(clock.t + 1)
    receiver.endpointer.check_endpoints(clock.t + 1)
    await settle()
    assert drain(queue) == []
    assert receiver.stats.unknown_ssrc == 20 and receiver.stats.decoded == 0


# -- robustness -----------------------------------------------------------------------------------------------------


async def test_corrupted_frame_is_counted_and_skipped_while_listening_continues() -> None:
    receiver, queue, clock = make_receiver()
    frames = opus_frames(30)
    frames[10] = b"\xff\xff\xff\xff\xff"  # not Opus: libopus reports a corrupted stream
    feed(receiver, clock, Stream(1, member(ALICE)), frames)
    receiver.endpointer.check_endpoints(clock.t + 1)
    await settle()
    [utterance] = drain(queue)
    assert utterance.duration_s == pytest.approx(0.58)
    assert receiver.stats.corrupted == 1 and receiver.stats.decoded == 29


async def test_no_exception_leaves_the_sink() -> None:
    def broken(user_id: int) -> bool:
        raise RuntimeError("caller bug")

    receiver, queue, clock = make_receiver(is_ignored=broken)
    stream = Stream(1, member(ALICE))
    receiver.sink.write(stream.member, stream.data(opus_frames(1)[0]))  # must not raise into voice_recv's thread
    receiver.sink.write(None, SimpleNamespace())  # not even for something that is not a VoiceData at all
    assert receiver.stats.errors == 2


async def test_lost_packets_are_concealed_inside_an_utterance() -> None:
    receiver, queue, clock = make_receiver()
    stream, frames = Stream(1, member(ALICE)), opus_frames(30)
    feed(receiver, clock, stream, frames[:15])
    fake = voice_recv.rtp.FakePacket(1, stream.seq, stream.seq * 960)  # voice_recv's placeholder for a gap
    receiver.sink.write(stream.member, voice_recv.VoiceData(fake, stream.member))
    clock.t += FRAME_S
    feed(receiver, clock, stream, frames[15:])
    receiver.endpointer.check_endpoints(clock.t + 1)
    await settle()
    [utterance] = drain(queue)
    assert utterance.duration_s == pytest.approx(0.62)


async def test_rtp_padding_is_removed_before_decoding() -> None:
    receiver, queue, clock = make_receiver()
    frames = opus_frames(30)
    feed(receiver, clock, Stream(1, member(ALICE)), frames, padding=7)
    receiver.endpointer.check_endpoints(clock.t + 1)
    await settle()
    [utterance] = drain(queue)
    assert utterance.pcm == pcm_of(frames) and receiver.stats.corrupted == 0








# -- DAVE -----------------------------------------------------------------------------------------------------------


def dave_pair(member_id: int = ALICE) -> tuple[davey.DaveSession, davey.DaveSession]:
    """(bot's session, member's session) in one MLS group, built as Discord's voice server would have them join.

    The voice server is the group's external sender (DAVE opcode 25); it proposes adding the member's key package
    (opcode 27) as an MLS PublicMessage signed with its P-256 key; the bot commits and the member joins from the
    welcome (opcodes 28-30).
    """
    gateway = ExternalSender()
    bot = davey.DaveSession(1, BOT_ID, CHANNEL_ID)
    speaker = davey.DaveSession(1, member_id, CHANNEL_ID)
    for session in (bot, speaker):
        session.set_external_sender(gateway.package)
    proposal, _ = gateway.add(group_id_of(CHANNEL_ID), 0, speaker.get_serialized_key_package())
    commit_welcome = bot.process_proposals(davey.ProposalsOperationType.append, vl(proposal), [member_id])
    assert commit_welcome is not None and commit_welcome.welcome is not None
    bot.process_commit(commit_welcome.commit)
    speaker.process_welcome(commit_welcome.welcome)
    assert bot.ready and speaker.ready
    return bot, speaker


@pytest.fixture(scope="module")
def sessions() -> tuple[davey.DaveSession, davey.DaveSession]:
    return dave_pair()


def pcm_of(frames: list[bytes]) -> bytes:
    decoder = discord.opus.Decoder()
    return b"".join(decoder.decode(frame, fec=False) for frame in frames)


async def test_dave_frames_are_decrypted_through_the_session_when_it_is_active(sessions: Any) -> None:
    bot, speaker = sessions
    frames = opus_frames(30)
    encrypted = [speaker.encrypt_opus(frame) for frame in frames]
    assert all(e != f and e.endswith(b"\xfa\xfa") for e, f in zip(encrypted, frames, strict=True))  # DAVE trailer

    receiver, queue, clock = make_receiver(vc=FakeVoiceClient(bot, dave_protocol_version=1))
    feed(receiver, clock, Stream(1, member(ALICE)), encrypted)
    receiver.endpointer.check_endpoints(clock.t + 1)
    await settle()
    [utterance] = drain(queue)
    assert utterance.pcm == pcm_of(frames)  # exactly what the member's client encoded
    assert receiver.stats.dave_decrypted == 30 and receiver.stats.corrupted == 0


async def test_dave_frames_with_rtp_padding_are_decrypted(sessions: Any) -> None:
    bot, speaker = sessions
    frames = opus_frames(25)
    receiver, queue, clock = make_receiver(vc=FakeVoiceClient(bot, dave_protocol_version=1))
    feed(receiver, clock, Stream(1, member(ALICE)), [speaker.encrypt_opus(f) for f in frames], padding=3)
    receiver.endpointer.check_endpoints(clock.t + 1)
    await settle()
    [utterance] = drain(queue)
    assert utterance.pcm == pcm_of(frames)


async def test_encrypted_frames_are_not_the_voice_without_dave_decryption(sessions: Any) -> None:
    # What discord-ext-voice-recv 0.5.2 alone delivers under DAVE: ciphertext taken for Opus
    bot, speaker = sessions
    frames = opus_frames(30)
    receiver, queue, clock = make_receiver(vc=FakeVoiceClient(None, 0))
    feed(receiver, clock, Stream(1, member(ALICE)), [speaker.encrypt_opus(f) for f in frames])
    receiver.endpointer.flush()
    await settle()
    heard = b"".join(u.pcm for u in drain(queue))
    assert heard != pcm_of(frames)


@pytest.mark.parametrize(
    "state",
    [
        lambda bot: FakeVoiceClient(None, 0),  # call without E2EE
        lambda bot: FakeVoiceClient(bot, 0),  # downgraded: session kept, protocol version 0
        lambda bot: FakeVoiceClient(davey.DaveSession(1, BOT_ID, CHANNEL_ID), 1),  # handshake not done yet
    ],
    ids=["no-session", "downgraded", "not-ready"],
)
async def test_frames_pass_through_unchanged_when_dave_is_not_active(
    sessions: Any, state: Callable[[Any], FakeVoiceClient]
) -> None:
    bot, _ = sessions
    frames = opus_frames(30)
    receiver, queue, clock = make_receiver(vc=state(bot))
    feed(receiver, clock, Stream(1, member(ALICE)), frames)
    receiver.endpointer.check_endpoints(clock.t + 1)
    await settle()
    [utterance] = drain(queue)
    assert utterance.pcm == pcm_of(frames)
    assert receiver.stats.passthrough == 30 and receiver.stats.dave_decrypted == 0


async def test_dave_frames_before_the_session_is_ready_are_skipped_not_decoded(sessions: Any) -> None:
    _, speaker = sessions
    joining = davey.DaveSession(1, BOT_ID, CHANNEL_ID)  # the call is E2EE, the bot has not joined the group yet
    receiver, queue, clock = make_receiver(vc=FakeVoiceClient(joining, dave_protocol_version=1))
    feed(receiver, clock, Stream(1, member(ALICE)), [speaker.encrypt_opus(f) for f in opus_frames(30)])
    receiver.endpointer.flush()
    await settle()
    assert drain(queue) == []  # ciphertext decoded as Opus would have been an utterance of noise
    assert receiver.stats.corrupted == 30 and receiver.stats.decoded == 0


async def test_undecryptable_dave_frames_are_counted_and_skipped(sessions: Any) -> None:
    bot, speaker = sessions
    frames = opus_frames(30)
    encrypted = [speaker.encrypt_opus(frame) for frame in frames]
    encrypted[3] = encrypted[3][:4] + bytes([encrypted[3][4] ^ 0xFF]) + encrypted[3][5:]  # tampered: tag fails
    receiver, queue, clock = make_receiver(vc=FakeVoiceClient(bot, dave_protocol_version=1))
    feed(receiver, clock, Stream(1, member(ALICE)), encrypted)
    feed(receiver, clock, Stream(2, member(BOB)), encrypted[:5])  # BOB is not in the MLS group: no key for him
    receiver.endpointer.check_endpoints(clock.t + 1)
    await settle()
    [utterance] = drain(queue)
    assert utterance.user_id == ALICE and utterance.duration_s == pytest.approx(0.58)
    assert receiver.stats.corrupted == 1 + 5 and receiver.stats.dave_decrypted == 29
