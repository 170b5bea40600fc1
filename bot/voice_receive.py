"""Voice receive: the voice_recv sink that turns members' packets into PCM for the endpointer.

discord-ext-voice-recv (0.5.2) removes only the transport encryption of received RTP packets. Since Discord made
DAVE (end-to-end encryption, https://daveprotocol.com) mandatory in March 2026, what it hands a sink is still an
E2EE frame: decoded as Opus it gives ``OpusError: corrupted stream`` or noise. discord.py 2.7 already runs the DAVE
(MLS) handshake for the bot and keeps the session on the voice connection (``VoiceConnectionState.dave_session``,
a ``davey.DaveSession``), so this module asks the extension for raw Opus (``wants_opus() -> True``), removes the DAVE
layer itself with that session, and decodes Opus per speaker. Per frame:

- the call is E2EE (``dave_protocol_version > 0``) and the session is ready: ``dave_session.decrypt(user_id,
  MediaType.audio, frame)``; a failure (no key for that member yet, tampered or unexpected plaintext frame) is
  counted in ``stats.corrupted`` and the frame skipped;
- the call is E2EE but the session is not ready yet (joining): DAVE frames (ending with the 0xFAFA marker) are
  skipped and counted, anything else passes through;
- the call is not E2EE (or was downgraded): the frame passes through unchanged.

RTP padding, which voice_recv leaves in the payload, is removed first; Opus silence frames end speech and are not
decoded; frames of an SSRC not yet mapped to a member are held (up to the pre-roll) until it is. The decoded PCM goes
to a ``services.voice.endpointing.Endpointer``, which decides where utterances end.

Threads: ``AudioSink.write`` runs in the extension's packet-router thread. The receiver's state (decoders, held
packets, statistics) sits behind one ``threading.Lock``; the endpointer hands utterances to the event loop.

How it is used (``bot/listening.py``)::

    endpointer = Endpointer.from_settings(settings, loop=loop, on_utterance=queue, on_speech_start=barge_in)
    receiver = VoiceReceiver(endpointer, is_ignored=opted_out, bot_user_id=bot.user.id)
    endpointer.start()
    voice_client.listen(receiver.sink)   # a voice_recv.VoiceRecvClient
    ...
    voice_client.stop_listening()
    await endpointer.stop()
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Any, Protocol

import davey
import discord.opus
from discord.ext import voice_recv

from bot.opus import load_opus
from services.voice.endpointing import Endpointer

_log = logging.getLogger(__name__)

OPUS_SILENCE = b"\xf8\xff\xfe"
"""The Opus frame Discord clients send (unencrypted, even under DAVE) for the few frames after speech stops."""
DAVE_MAGIC_MARKER = b"\xfa\xfa"
"""Last two bytes of every DAVE-encrypted frame (the protocol's supplemental data trailer)."""


@dataclass(slots=True)
class ReceiveStats:
    """Counters of the receive path since the receiver was created (a copy is returned by ``VoiceReceiver.stats``)."""

    packets: int = 0
    """Packets handed to the sink by voice_recv (including silence and lost-packet placeholders)."""
    decoded: int = 0
    """Opus frames decoded to PCM (concealed lost packets included)."""
    dave_decrypted: int = 0
    """Frames whose DAVE layer was removed with the connection's DAVE session."""
    passthrough: int = 0
    """Frames decoded as they came because DAVE was not active on the connection."""
    corrupted: int = 0
    """Frames skipped because DAVE decryption or Opus decoding failed."""
    silence: int = 0
    """Opus silence frames (skipped: they end speech, they are not speech)."""
    ignored: int = 0
    """Packets of the bot itself, of other bots, or of ignored (opted-out) members: never decrypted or decoded."""
    unknown_ssrc: int = 0
    """Packets dropped because their SSRC was never mapped to a member within the pre-roll window."""
    errors: int = 0
    """Unexpected errors caught in the receive thread (logged with a traceback)."""


class DaveDecryptor(Protocol):
    """The part of ``davey.DaveSession`` the receive path uses."""

    @property
    def ready(self) -> bool: ...

    def decrypt(self, user_id: int, media_type: davey.MediaType, packet: bytes) -> bytes: ...


class VoiceReceiveSink(voice_recv.AudioSink):
    """The voice_recv sink of a ``VoiceReceiver``: asks for raw Opus and hands every packet to the receiver.

    ``write`` runs in voice_recv's packet-router thread; no exception leaves it, because one escaping would end that
    thread and with it all listening (discord-ext-voice-recv issues #43, #49).
    """

    def __init__(self, receiver: VoiceReceiver) -> None:
        super().__init__()
        self._receiver = receiver

    def wants_opus(self) -> bool:
        """True: the receiver removes DAVE itself before decoding, which voice_recv's own decoder cannot do."""
        return True

    def write(self, user: Any, data: voice_recv.VoiceData) -> None:
        """Receive one packet: ``user`` is the discord Member/User, or None while its SSRC is not mapped yet."""
        try:
            self._receiver.on_packet(user, data, self.voice_client)
        except Exception:  # last resort: the thread must survive anything, so the error is logged and counted
            ssrc = getattr(getattr(data, "packet", None), "ssrc", None)
            _log.exception("Unexpected error handling a voice packet (ssrc=%s)", ssrc)
            self._receiver.count_error()

    def cleanup(self) -> None:
        """Called by voice_recv when listening stops: forget decoders and partial audio (thread-safe)."""
        receiver = getattr(self, "_receiver", None)  # cleanup also runs from __del__, possibly half-initialised
        if receiver is not None:
            receiver.reset()


class VoiceReceiver:
    """Turns one voice channel's packets into PCM per member, fed to ``endpointer``.

    endpointer: where the PCM goes; its pre-roll bounds how long packets of an unmapped SSRC are held, its
        ``max_speakers`` how many Opus decoders are kept (least recently heard dropped first).
    is_ignored: ``(user_id) -> bool`` or a collection of user ids (e.g. opted-out members); their packets are
        dropped before decryption. The bot itself (``bot_user_id``) and, with ``ignore_bots``, other bots are too.
    Raises OpusUnavailable (from ``bot.opus``) when libopus cannot load.
    """

    def __init__(
        self,
        endpointer: Endpointer,
        *,
        is_ignored: Callable[[int], bool] | Collection[int] = (),
        bot_user_id: int | None = None,
        ignore_bots: bool = True,
    ) -> None:
        load_opus()  # every speaker gets a discord.opus.Decoder
        self.endpointer = endpointer
        self._is_ignored: Callable[[int], bool] = (
            is_ignored if callable(is_ignored) else frozenset(is_ignored).__contains__
        )
        self._bot_user_id = bot_user_id
        self._ignore_bots = ignore_bots
        self._held_frames = max(endpointer.preroll_frames, 1)
        self._lock = threading.Lock()
        self._decoders: OrderedDict[int, tuple[int, discord.opus.Decoder]] = OrderedDict()  # user -> (ssrc, decoder)
        self._pending: dict[int, deque[tuple[Any, float]]] = {}  # ssrc -> (packet, arrival), SSRC not yet mapped
        self._stats = ReceiveStats()
        self.sink = VoiceReceiveSink(self)
        """The ``voice_recv.AudioSink`` to pass to ``VoiceRecvClient.listen``."""

    @property
    def stats(self) -> ReceiveStats:
        """A snapshot of the counters (see ``ReceiveStats``)."""
        with self._lock:
            return replace(self._stats)

    def reset(self) -> None:
        """Forget every decoder, held packet and partial utterance (thread-safe)."""
        with self._lock:
            self._decoders.clear()
            self._pending.clear()
        self.endpointer.reset()

    def count_error(self) -> None:
        with self._lock:
            self._stats.errors += 1

    def expire_unmapped(self, now: float) -> None:
        """Give up on held packets of SSRCs that stayed unmapped for the end-of-speech silence (counted)."""
        with self._lock:
            self._expire_unmapped(now)

    # -- packet-router thread ---------------------------------------------------------------------------------

    def on_packet(self, user: Any, data: voice_recv.VoiceData, voice_client: Any) -> None:
        """Handle one packet from the sink; see the module docstring for what happens to it."""
        if self.endpointer.closed:
            return
        packet = data.packet
        ssrc: int = packet.ssrc
        now = self.endpointer.clock()
        user_id: int | None = user.id if user is not None else None
        if user_id is None and voice_client is not None:
            # DEP-WARN(discord-ext-voice-recv 0.5.2): private; if it goes, held packets of unmapped SSRCs are
            # never attributed and the first syllables after joining are lost (until write() gets the member).
            user_id = voice_client._get_id_from_ssrc(ssrc)
        if user_id is None:
            # voice_recv learns SSRC -> member from the SPEAKING op, which can arrive after the first packets. Without
            # the member, DAVE cannot pick a key (and nobody to attribute the audio to): hold up to the pre-roll.
            with self._lock:
                self._stats.packets += 1
                self._expire_unmapped(now)
                queue = self._pending.setdefault(ssrc, deque(maxlen=self._held_frames))
                if len(queue) == queue.maxlen:
                    self._stats.unknown_ssrc += 1
                queue.append((packet, now))
                if len(self._pending) > 2 * self.endpointer.max_speakers:  # bound: drop the oldest unknown SSRC
                    oldest = next(iter(self._pending))
                    self._stats.unknown_ssrc += len(self._pending.pop(oldest))
            return

        ignored = user_id == self._bot_user_id or (self._ignore_bots and bool(getattr(user, "bot", False)))
        ignored = ignored or self._is_ignored(user_id)  # the caller's predicate runs outside the lock
        e2ee = _dave_protocol_version(voice_client) > 0
        session = None if ignored or not e2ee else _ready_dave_session(voice_client)
        with self._lock:
            self._expire_unmapped(now)
            held = self._pending.pop(ssrc, None)
            backlog = [*held, (packet, now)] if held else [(packet, now)]
            self._stats.packets += 1
            if ignored:
                self._stats.ignored += len(backlog)
                return
            for item, arrival in backlog:
                self._handle_frame(user_id, ssrc, item, arrival, e2ee, session)

    def _expire_unmapped(self, now: float) -> None:
        for ssrc, queue in list(self._pending.items()):
            if queue and now - queue[-1][1] >= self.endpointer.silence_s:  # never mapped to anyone: give up
                self._stats.unknown_ssrc += len(queue)
                del self._pending[ssrc]

    def _handle_frame(
        self, user_id: int, ssrc: int, packet: Any, arrival: float, e2ee: bool, session: DaveDecryptor | None
    ) -> None:
        """Decrypt, decode and hand on one frame of ``user_id``. Called with the lock held."""
        payload = bytes(packet.decrypted_data or b"")  # davey takes bytes only; voice_recv may leave a bytearray
        if payload == OPUS_SILENCE:
            self._stats.silence += 1
            return
        if not payload:
            # voice_recv's placeholder for a lost packet: conceal it inside an utterance, ignore it outside one
            if not self.endpointer.is_speaking(user_id):
                return
            opus: bytes | None = None
        else:
            opus = self._remove_e2ee(user_id, _strip_rtp_padding(packet, payload), e2ee, session)
            if opus is None:
                return
        try:
            pcm = self._decoder(user_id, ssrc).decode(opus, fec=False)
        except discord.opus.OpusError as exc:
            self._stats.corrupted += 1
            _log.debug("Opus frame of user %s not decodable (%s); skipped", user_id, exc)
            return
        self._stats.decoded += 1
        self.endpointer.feed(user_id, pcm, arrival)

    def _decoder(self, user_id: int, ssrc: int) -> discord.opus.Decoder:
        """``user_id``'s Opus decoder; a new SSRC (the member reconnected) is a new stream with a fresh decoder."""
        entry = self._decoders.get(user_id)
        if entry is None or entry[0] != ssrc:
            entry = self._decoders[user_id] = (ssrc, discord.opus.Decoder())
            if len(self._decoders) > self.endpointer.max_speakers:
                self._decoders.popitem(last=False)
        self._decoders.move_to_end(user_id)
        return entry[1]

    def _remove_e2ee(
        self, user_id: int, payload: bytes, e2ee: bool, session: DaveDecryptor | None
    ) -> bytes | None:
        """The Opus frame inside ``payload``: DAVE-decrypted when the session is active, else as it is.

        e2ee: the call uses DAVE (protocol version > 0); session: the connection's session once it is ready.
        None when the frame cannot be used (counted in ``stats.corrupted``): decryption failed (a member the session
        has no key for yet, an unencrypted frame while passthrough is off, damaged data), or the frame is DAVE
        ciphertext while the session is not ready (joining): decoded as Opus it would be noise, not voice.
        """
        if session is None:
            if e2ee and payload.endswith(DAVE_MAGIC_MARKER):
                self._stats.corrupted += 1
                return None
            self._stats.passthrough += 1
            return payload
        try:
            opus = session.decrypt(user_id, davey.MediaType.audio, payload)
        except ValueError as exc:  # davey raises ValueError("Failed to decrypt: ...") for every decryption failure
            self._stats.corrupted += 1
            _log.debug("DAVE frame of user %s not decryptable (%s); skipped", user_id, exc)
            return None
        self._stats.dave_decrypted += 1
        return opus


# DEP-WARN(discord.py 2.7.1): the DAVE state is read from the private ``VoiceClient._connection`` (a
# VoiceConnectionState): ``dave_protocol_version`` is 0 while the call is not E2EE (or after a downgrade), and
# ``dave_session`` is ``ready`` once the bot has joined the MLS group. If they move, getattr's defaults make every call
# look unencrypted: DAVE frames are then counted as corrupted and nothing is heard in E2EE calls.


def _dave_protocol_version(voice_client: Any) -> int:
    """The DAVE protocol version of the voice connection: 0 when the call is not end-to-end encrypted."""
    return getattr(getattr(voice_client, "_connection", None), "dave_protocol_version", 0) or 0


def _ready_dave_session(voice_client: Any) -> DaveDecryptor | None:
    """The connection's DAVE session when it can decrypt (MLS group joined), else None."""
    session = getattr(getattr(voice_client, "_connection", None), "dave_session", None)
    return session if session is not None and session.ready else None


def _strip_rtp_padding(packet: Any, payload: bytes) -> bytes:
    """Remove RTP padding (RFC 3550 5.1) that voice_recv 0.5.2 leaves at the end of the decrypted payload.

    With the P bit set, the last byte counts the padding bytes; left in place they break the DAVE trailer (which
    must end the frame) and the Opus frame. A count larger than the payload is left alone for decryption to reject.
    """
    if getattr(packet, "padding", False) and payload:
        count = payload[-1]
        if 0 < count <= len(payload):
            return payload[:-count]
    return payload
