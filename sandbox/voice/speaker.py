"""Simulated members' outgoing voice: one RTP stream per member, sent to the bot as Discord relays it.

A ``MemberStream`` is a member's SSRC while they stay in voice, with its RTP sequence (+1 per packet sent), RTP
timestamp (+960 per 20 ms of audio, pauses included, so it follows the member's clock as RTP requires) and nonce
counter. Sequence and timestamp start at 0 (real clients start at random values; 0 keeps runs reproducible).

Each packet is built as Discord relays a member's audio to the bot:

1. the Opus frame goes through the stream's ``frame_encryptor``: DAVE's end-to-end encryption with the member's
   own ``davey.DaveSession`` (``MemberDave.encrypt``) when DAVE is on; the identity at protocol version 0. While the
   member has no media key yet it gives None and the frame is not sent (counted as dropped);
2. when the member has pending corruptions (``SpeakerHub.corrupt_next``), that payload is replaced by one no Opus
   decoder accepts (``speech.corrupt_opus``), as a damaged frame or a failed DAVE decryption would be;
3. the packet gets an RFC 8285 header extension with the frame's audio level (RFC 6464, extension id 1, voice
   activity bit set), which Discord's packets carry and discord-ext-voice-recv parses;
4. it is sealed with the bot session's key (``aead_xchacha20_poly1305_rtpsize``) and sent from the voice server's
   UDP socket to the address the bot announced.

``SpeechSender`` is a thread that sends one ``SpeechPlan`` with each frame due at ``start_at + index * 20 ms``
(``time.monotonic``, the asyncio loop's clock): deadlines are absolute, so waiting errors never accumulate, and a
busy event loop (the bot's own, in tests) cannot delay "Discord". Where a packet goes is read, per packet, from the
stream's ``target``, which the loop replaces (one reference assignment) when voice sessions or states change;
``None`` means nobody receives it (the bot left, is deafened, or the member moved away) and the frame is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .speech import SpeechPlan, corrupt_opus
from .udp import RtpPacket, seal_rtp

_log = logging.getLogger(__name__)

FRAME_S = 0.02
SAMPLES_PER_FRAME = 960  # RTP timestamp units (48 kHz) per 20 ms frame
AUDIO_LEVEL_EXTENSION_ID = 1  # RFC 6464 ssrc-audio-level; voice-recv knows it as ExtensionID.audio_power
VOICE_ACTIVITY = 0x80  # RFC 6464: the V bit of the audio level byte

FrameEncryptor = Callable[[bytes], bytes | None]
"""Opus frame -> media payload (DAVE frame encryption, or the identity), None to not send it; runs in the sending
thread."""


def no_frame_encryption(opus: bytes) -> bytes:
    """DAVE protocol version 0: the media payload is the Opus frame itself."""
    return opus


def audio_level_extension(level: int) -> bytes:
    """The 4-byte body of a one-byte-header extension holding one audio level element (``level``: 0..127
    -dBov, voice activity set), padded to a 32-bit word."""
    header = (AUDIO_LEVEL_EXTENSION_ID << 4) | 0  # id, then length - 1 (one byte of data)
    return struct.pack(">BBxx", header, VOICE_ACTIVITY | (level & 0x7F))


@dataclass(frozen=True)
class SendTarget:
    """Where a member's packets go now: the bot's ready voice session (its SSRC, UDP address and 32-byte key)."""

    session_ssrc: int
    addr: tuple[str, int]
    key: bytes


class MemberStream:
    """One member's outgoing RTP stream: an SSRC for as long as the member stays in voice.

    ``target`` is written by the event loop and read by the sending thread (a single reference, so the thread
    sees the old or the new target, never a mix). The counters are used by one sending thread at a time
    (``SandboxVoice`` allows one speech per member), so they need no lock.
    """

    def __init__(self, member_id: int, ssrc: int, epoch: float) -> None:
        self.member_id = member_id
        self.ssrc = ssrc
        self.epoch = epoch  # time.monotonic() when the SSRC was assigned: RTP timestamp 0
        self.target: SendTarget | None = None
        self.frame_encryptor: FrameEncryptor = no_frame_encryption
        self._sequence = 0
        self._counter = 0
        self._next_tick = 0  # the first frame tick (20 ms units since epoch) a new speech may use

    def reserve_ticks(self, start_at: float, frames: int) -> int:
        """The RTP frame tick of a speech starting at ``start_at`` (monotonic s) and lasting ``frames`` frames:
        ticks follow the clock since ``epoch`` and never go back."""
        first = max(self._next_tick, round((start_at - self.epoch) / FRAME_S))
        self._next_tick = first + frames
        return first

    def seal(self, payload: bytes, level: int, tick: int, target: SendTarget, *, corrupt: bool) -> bytes:
        """The datagram for one media payload (``frame_encryptor``'s output) due at frame ``tick``; advances
        sequence and nonce counter."""
        if corrupt:
            payload = corrupt_opus(payload)
        packet = RtpPacket(self._sequence, (tick * SAMPLES_PER_FRAME) & 0xFFFFFFFF, self.ssrc, payload)
        data = seal_rtp(packet, target.key, self._counter, extension=audio_level_extension(level))
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._counter = (self._counter + 1) & 0xFFFFFFFF
        return data


@dataclass
class SpeechResult:
    """What one speech sent: packets sent, frames dropped (no target), corrupted packets, and whether ``stop``
    ended it before its last frame."""

    frames_sent: int = 0
    frames_dropped: int = 0
    corrupted: int = 0
    stopped: bool = False


class SpeechSender(threading.Thread):
    """Sends one plan's frames on time (see the module docstring) and reports a SpeechResult to ``on_done``.

    ``send(data, addr)`` must be thread-safe (``UdpEndpoint.send``); ``take_corruption()`` says whether the next
    packet is to be corrupted (and counts it off); ``on_done`` runs in this thread once, at the end.
    """

    def __init__(
        self,
        plan: SpeechPlan,
        stream: MemberStream,
        *,
        start_at: float,
        first_tick: int,
        send: Callable[[bytes, tuple[str, int]], None],
        take_corruption: Callable[[], bool],
        on_done: Callable[[SpeechResult], None],
    ) -> None:
        super().__init__(name=f"sandbox-speaker:{stream.ssrc}", daemon=True)
        self._plan = plan
        self._stream = stream
        self._start_at = start_at
        self._first_tick = first_tick
        self._send = send
        self._take_corruption = take_corruption
        self._on_done = on_done
        self._stopping = threading.Event()
        self.result = SpeechResult()

    def stop(self) -> None:
        """Ask the thread to end before its next frame (thread-safe; it ends within one frame's wait)."""
        self._stopping.set()

    def run(self) -> None:
        result = self.result
        try:
            for frame in self._plan.frames:
                delay = self._start_at + frame.index * FRAME_S - time.monotonic()
                stopping = self._stopping.wait(delay) if delay > 0 else self._stopping.is_set()
                if stopping:  # late frames (delay <= 0) go out at once: the schedule, not the last send, sets time
                    result.stopped = True
                    break
                target = self._stream.target
                if target is None:
                    result.frames_dropped += 1
                    continue
                payload = self._stream.frame_encryptor(frame.opus)
                if payload is None:  # the member's client has no key to encrypt it with
                    result.frames_dropped += 1
                    continue
                corrupt = self._take_corruption()
                tick = self._first_tick + frame.index
                self._send(self._stream.seal(payload, frame.level, tick, target, corrupt=corrupt), target.addr)
                result.frames_sent += 1
                result.corrupted += corrupt
        finally:
            self._on_done(result)


class SpeakerHub:
    """The loop's side of simulated speakers: streams by member id, speeches in flight, which voice sessions were
    told which SSRC (SPEAKING), and pending corruptions. Used on the event loop only, except ``_take_corruption``
    (called by sending threads, under a lock)."""

    def __init__(self, send: Callable[[bytes, tuple[str, int]], None], allocate_ssrc: Callable[[], int]) -> None:
        self._send = send
        self._allocate_ssrc = allocate_ssrc
        self.streams: dict[int, MemberStream] = {}
        self._speeches: dict[int, SpeechSender] = {}
        self.announced: set[tuple[int, int]] = set()  # (bot session SSRC, member SSRC)
        self._corrupt: dict[int, int] = {}  # member id -> frames still to corrupt
        self._corrupt_lock = threading.Lock()

    def stream(self, member_id: int) -> MemberStream:
        """The member's stream, created (with a new SSRC) on first use after joining voice."""
        stream = self.streams.get(member_id)
        if stream is None:
            stream = self.streams[member_id] = MemberStream(member_id, self._allocate_ssrc(), time.monotonic())
        return stream

    def speaking(self, member_id: int) -> bool:
        return member_id in self._speeches

    def retire(self, member_id: int) -> None:
        """The member left voice: their SSRC ends (frames still in flight are dropped); a rejoin gets a new one."""
        stream = self.streams.pop(member_id, None)
        if stream is not None:
            stream.target = None
            self.announced = {pair for pair in self.announced if pair[1] != stream.ssrc}

    def session_ended(self, session_ssrc: int) -> None:
        """A bot voice session is gone: nothing goes to it any more."""
        for stream in self.streams.values():
            if stream.target is not None and stream.target.session_ssrc == session_ssrc:
                stream.target = None
        self.announced = {pair for pair in self.announced if pair[0] != session_ssrc}

    def corrupt_next(self, member_id: int, frames: int) -> None:
        """Corrupt the payload of the member's next ``frames`` packets sent (added to any still pending)."""
        with self._corrupt_lock:
            self._corrupt[member_id] = self._corrupt.get(member_id, 0) + frames

    def _take_corruption(self, member_id: int) -> bool:
        with self._corrupt_lock:
            left = self._corrupt.get(member_id, 0)
            if left:
                self._corrupt[member_id] = left - 1
            return left > 0

    async def speak(self, stream: MemberStream, plan: SpeechPlan, start_at: float) -> SpeechResult:
        """Send ``plan`` on ``stream`` from ``start_at`` (loop seconds) in a SpeechSender thread; returns when the
        last frame is sent, or when ``stop`` ended it (``stopped``). Cancelling the caller stops the thread."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[SpeechResult] = loop.create_future()

        def finished(result: SpeechResult) -> None:  # in the sending thread
            try:
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(result))
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                _log.debug("speech of SSRC %s ended after the event loop closed", stream.ssrc)

        frames = round(plan.seconds / FRAME_S)
        sender = SpeechSender(
            plan, stream, start_at=start_at, first_tick=stream.reserve_ticks(start_at, frames), send=self._send,
            take_corruption=lambda: self._take_corruption(stream.member_id), on_done=finished,
        )  # fmt: skip
        self._speeches[stream.member_id] = sender
        sender.start()
        try:
            return await done
        finally:
            sender.stop()
            if sender.is_alive():
                await asyncio.to_thread(sender.join)
            self._speeches.pop(stream.member_id, None)

    async def stop(self) -> None:
        """Stop every speech in flight and wait for the threads (in a worker thread); safe to call twice."""
        senders = list(self._speeches.values())
        for sender in senders:
            sender.stop()
        for sender in senders:
            await asyncio.to_thread(sender.join)
