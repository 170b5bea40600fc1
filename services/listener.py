"""Voice receive: a DAVE-aware Opus sink, per-speaker buffers and end-of-speech detection.

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
decoded; frames of an SSRC not yet mapped to a member are held (up to the pre-roll) until it is.

Like ``bot/opus.py``, this service has to import discord: its sink *is* a voice_recv ``AudioSink``. It never touches
Discord's network itself; the cog owns the voice client.

Threads: ``AudioSink.write`` runs in the extension's packet-router thread. Everything that thread shares with the
event loop (speaker buffers, statistics) sits behind one ``threading.RLock`` held for microseconds; finished utterances
and "speech started" events reach the loop only through ``loop.call_soon_threadsafe``. Silence produces no packets
on Discord, so the end of an utterance is decided by a periodic check task on the loop (``start()``), not by the
thread.

How a cog uses it::

    from discord.ext import voice_recv

    vc = await channel.connect(cls=voice_recv.VoiceRecvClient, self_deaf=False)
    queue: asyncio.Queue[Utterance] = asyncio.Queue(maxsize=settings.STT_QUEUE_MAX)
    listener = Listener.from_settings(
        settings, loop=asyncio.get_running_loop(), on_utterance=queue,
        on_speech_start=barge_in,  # async (user_id) -> None, e.g. stop the bot's playback
        is_ignored=opted_out_user_ids, bot_user_id=bot.user.id,
    )
    listener.start()
    vc.listen(listener.sink)
    ...
    vc.stop_listening()
    await listener.stop()
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import davey
import discord.opus
from discord.ext import voice_recv

from bot.opus import load_opus
from services.audio import BYTES_PER_SECOND, FRAME_MS, rms

if TYPE_CHECKING:
    from config import Settings

_log = logging.getLogger(__name__)

OPUS_SILENCE = b"\xf8\xff\xfe"
"""The Opus frame Discord clients send (unencrypted, even under DAVE) for the few frames after speech stops."""
DAVE_MAGIC_MARKER = b"\xfa\xfa"
"""Last two bytes of every DAVE-encrypted frame (the protocol's supplemental data trailer)."""

UtteranceCallback = Callable[["Utterance"], Awaitable[None]]
SpeechStartCallback = Callable[[int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Utterance:
    """What one member said between two silences.

    user_id: the Discord user id of the speaker.
    pcm: 48 kHz stereo s16le (192,000 bytes a second); whole decoded Opus frames, usually 20 ms (3840 bytes) each.
    started_at, ended_at: seconds on the listener's clock (``time.monotonic`` by default, the clock of
        ``loop.time()``): arrival of the first frame (earlier by the pre-roll kept) and end of the last frame.
    duration_s: length of ``pcm`` in seconds; this is the audio's own length, not ``ended_at - started_at``
        (packets arrive with jitter, and lost packets are not in ``pcm`` unless concealed).
    """

    user_id: int
    pcm: bytes
    started_at: float
    ended_at: float
    duration_s: float


@dataclass(slots=True)
class ListenerStats:
    """Counters of the receive path since the listener was created (a copy is returned by ``Listener.stats``)."""

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
    utterances: int = 0
    """Utterances handed to the event loop."""
    dropped_short: int = 0
    """Utterances dropped for being shorter than ``min_utterance_s``."""
    cut_long: int = 0
    """Times an utterance reached ``max_utterance_s`` and was emitted while the member kept talking."""
    delivery_dropped: int = 0
    """Utterances or events not delivered: the caller's queue was full, or the event loop was closed."""
    errors: int = 0
    """Unexpected errors caught in the receive thread (logged with a traceback)."""


class DaveDecryptor(Protocol):
    """The part of ``davey.DaveSession`` the receive path uses."""

    @property
    def ready(self) -> bool: ...

    def decrypt(self, user_id: int, media_type: davey.MediaType, packet: bytes) -> bytes: ...


class _Speaker:
    """Receive state of one member: their Opus decoder, the pre-roll ring and the utterance being collected."""

    __slots__ = (
        "user_id", "ssrc", "decoder", "preroll", "frames", "nbytes", "active", "continued",
        "started_at", "last_packet", "last_voice", "voiced_ms", "speech_reported",
    )

    def __init__(self, user_id: int, ssrc: int, preroll_frames: int, now: float) -> None:
        self.user_id = user_id
        self.ssrc = ssrc
        self.decoder = discord.opus.Decoder()
        self.preroll: deque[tuple[bytes, float]] = deque(maxlen=preroll_frames)  # (pcm, arrival), unvoiced
        self.frames: list[bytes] = []
        self.nbytes = 0
        self.active = False
        self.continued = False  # the utterance continues one that was cut at max_utterance_s
        self.started_at = now
        self.last_packet = now
        self.last_voice = now
        self.voiced_ms = 0.0
        self.speech_reported = False

    def take(self) -> bytes:
        """Return the collected PCM and empty the buffer."""
        pcm = b"".join(self.frames)
        self.frames = []
        self.nbytes = 0
        return pcm


class ListenerSink(voice_recv.AudioSink):
    """The voice_recv sink of a ``Listener``: asks for raw Opus and hands every packet to the listener.

    ``write`` runs in voice_recv's packet-router thread; no exception leaves it, because one escaping would end that
    thread and with it all listening (discord-ext-voice-recv issues #43, #49).
    """

    def __init__(self, listener: Listener) -> None:
        super().__init__()
        self._listener = listener

    def wants_opus(self) -> bool:
        """True: the listener removes DAVE itself before decoding, which voice_recv's own decoder cannot do."""
        return True

    def write(self, user: Any, data: voice_recv.VoiceData) -> None:
        """Receive one packet: ``user`` is the discord Member/User, or None while its SSRC is not mapped yet."""
        try:
            self._listener._on_packet(user, data, self.voice_client)
        except Exception:  # last resort: the thread must survive anything, so the error is logged and counted
            ssrc = getattr(getattr(data, "packet", None), "ssrc", None)
            _log.exception("Unexpected error handling a voice packet (ssrc=%s)", ssrc)
            self._listener._count("errors")

    def cleanup(self) -> None:
        """Called by voice_recv when listening stops: forget decoders and partial audio (thread-safe)."""
        listener = getattr(self, "_listener", None)  # cleanup also runs from __del__, possibly half-initialised
        if listener is not None:
            listener._reset()


class Listener:
    """Turns the voice of the members of one voice channel into utterances, one speaker at a time.

    Create it on the event loop, ``start()`` it, then ``vc.listen(listener.sink)`` on a ``VoiceRecvClient``.

    loop: the event loop the callbacks run on (the bot's loop).
    on_utterance: ``async (Utterance) -> None`` run as a task per utterance, or an ``asyncio.Queue`` that receives
        them (``put_nowait``; when full, the utterance is dropped, counted in ``stats.delivery_dropped`` and logged).
    on_speech_start: ``async (user_id) -> None`` run once per utterance when a member has spoken for
        ``speech_start_ms`` (default 300 ms) - early enough to stop the bot's playback (barge-in); None to skip.
    is_ignored: ``(user_id) -> bool`` or a collection of user ids (e.g. opted-out members); their packets are
        dropped before decryption. The bot itself (``bot_user_id``) and, with ``ignore_bots``, other bots are too.
    endpoint_silence_ms: an utterance ends when no voiced packet arrived for this long (Discord sends nothing
        during silence).
    pre_roll_ms: audio kept from before the first voiced frame (with ``voice_threshold`` > 0), and how long frames
        of a not-yet-identified SSRC are held until voice_recv maps it to a member (so first syllables survive).
    min_utterance_s: shorter utterances are dropped (coughs, clicks); the tail of a cut utterance is always kept.
    max_utterance_s: an utterance reaching this length is emitted and the speech continues as a new utterance.
    bot_user_id: the bot's own user id (never listened to).
    speech_start_ms: voiced audio in an utterance before ``on_speech_start`` fires.
    voice_threshold: RMS (0..1 of full scale) a decoded frame needs to count as voice; 0 (default) counts every
        non-silence packet, since Discord clients already gate what they send with their own voice detection.
    max_speakers: speakers tracked at once; beyond it the least recently heard one is forgotten (bounded memory).
    idle_forget_s: a speaker not heard for this long is forgotten, decoder included.
    check_interval_s: period of the end-of-utterance check on the loop.
    clock: monotonic seconds; injectable for tests.
    Raises ValueError for out-of-range arguments and OpusUnavailable (from ``bot.opus``) when libopus cannot load.
    """

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        on_utterance: UtteranceCallback | asyncio.Queue[Utterance],
        on_speech_start: SpeechStartCallback | None = None,
        is_ignored: Callable[[int], bool] | Collection[int] = (),
        endpoint_silence_ms: int = 600,
        pre_roll_ms: int = 200,
        min_utterance_s: float = 0.4,
        max_utterance_s: float = 15.0,
        bot_user_id: int | None = None,
        ignore_bots: bool = True,
        speech_start_ms: int = 300,
        voice_threshold: float = 0.0,
        max_speakers: int = 100,
        idle_forget_s: float = 60.0,
        check_interval_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if endpoint_silence_ms <= 0 or pre_roll_ms < 0 or speech_start_ms < 0:
            raise ValueError("endpoint_silence_ms must be > 0, pre_roll_ms and speech_start_ms >= 0")
        if not 0 <= min_utterance_s < max_utterance_s:
            raise ValueError(f"need 0 <= min_utterance_s < max_utterance_s, got {min_utterance_s}, {max_utterance_s}")
        if max_speakers < 1 or idle_forget_s <= 0 or check_interval_s <= 0 or not 0 <= voice_threshold < 1:
            raise ValueError("max_speakers >= 1, idle_forget_s > 0, check_interval_s > 0, 0 <= voice_threshold < 1")
        load_opus()  # every speaker gets a discord.opus.Decoder
        self._loop = loop
        self._on_utterance = on_utterance
        self._on_speech_start = on_speech_start
        self._is_ignored: Callable[[int], bool] = (
            is_ignored if callable(is_ignored) else frozenset(is_ignored).__contains__
        )
        self._silence_s = endpoint_silence_ms / 1000
        self._preroll_frames = pre_roll_ms // FRAME_MS
        self._preroll_s = pre_roll_ms / 1000
        self._min_s = min_utterance_s
        self._max_bytes = int(max_utterance_s * BYTES_PER_SECOND)
        self._bot_user_id = bot_user_id
        self._ignore_bots = ignore_bots
        self._speech_start_ms = speech_start_ms
        self._threshold = voice_threshold
        self._max_speakers = max_speakers
        self._idle_forget_s = idle_forget_s
        self._check_interval_s = check_interval_s
        self._clock = clock

        # guards everything below, shared with the packet-router thread; re-entrant so _post/_count work under it
        self._lock = threading.RLock()
        self._speakers: dict[int, _Speaker] = {}
        self._pending: dict[int, deque[tuple[Any, float]]] = {}  # ssrc -> (packet, arrival), SSRC not yet mapped
        self._stats = ListenerStats()
        self._closed = False

        self._task: asyncio.Task[None] | None = None
        self._callbacks: set[asyncio.Task[None]] = set()
        self.sink = ListenerSink(self)
        """The ``voice_recv.AudioSink`` to pass to ``VoiceRecvClient.listen``."""

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Listener:
        """A listener with ENDPOINT_SILENCE_MS, PRE_ROLL_MS, MIN_UTTERANCE_S and MAX_UTTERANCE_S from ``settings``.

        kwargs: the other ``__init__`` arguments (``loop`` and ``on_utterance`` are required).
        """
        return cls(
            endpoint_silence_ms=settings.ENDPOINT_SILENCE_MS,
            pre_roll_ms=settings.PRE_ROLL_MS,
            min_utterance_s=settings.MIN_UTTERANCE_S,
            max_utterance_s=settings.MAX_UTTERANCE_S,
            **kwargs,
        )

    # -- lifecycle (event loop) ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the end-of-utterance check task. Call on the listener's loop; a second call does nothing."""
        if self._task is None or self._task.done():
            self._closed = False
            self._task = self._loop.create_task(self._check_loop(), name="listener-endpoints")

    async def stop(self) -> None:
        """Stop: no more utterances or events; partial audio is discarded (call ``flush()`` first to keep it).

        Cancels the check task and the ``on_utterance``/``on_speech_start`` tasks still running, and waits for them.
        Stop voice_recv first (``vc.stop_listening()``); packets written afterwards are ignored.
        """
        self._closed = True
        tasks = [t for t in (self._task, *self._callbacks) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._reset()

    def flush(self) -> int:
        """Emit every utterance in progress now (those shorter than ``min_utterance_s`` are dropped).

        Returns how many were handed to the loop.
        """
        return self.check_endpoints(force=True)

    @property
    def stats(self) -> ListenerStats:
        """A snapshot of the counters (see ``ListenerStats``)."""
        with self._lock:
            return replace(self._stats)

    @property
    def active_speakers(self) -> list[int]:
        """User ids of the members with an utterance in progress."""
        with self._lock:
            return [user_id for user_id, speaker in self._speakers.items() if speaker.active]

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self._check_interval_s)
            self.check_endpoints()

    def check_endpoints(self, now: float | None = None, *, force: bool = False) -> int:
        """End the utterances whose speaker has been silent for ``endpoint_silence_ms``, and forget idle state.

        Run periodically by ``start()``; callable directly (tests, ``flush``). now: the clock's time (default: now).
        force: end every utterance in progress regardless of silence. Returns how many utterances were emitted.
        """
        now = self._clock() if now is None else now
        finished: list[Utterance] = []
        with self._lock:
            for speaker in self._speakers.values():
                if speaker.active and (force or now - speaker.last_voice >= self._silence_s):
                    utterance = self._finish(speaker, cut=False)
                    if utterance is not None:
                        finished.append(utterance)
            idle = [
                uid for uid, s in self._speakers.items() if not s.active and now - s.last_packet >= self._idle_forget_s
            ]
            for user_id in idle:
                del self._speakers[user_id]
            for ssrc, queue in list(self._pending.items()):
                if queue and now - queue[-1][1] >= self._silence_s:  # never mapped to anyone: give up
                    self._stats.unknown_ssrc += len(queue)
                    del self._pending[ssrc]
        for utterance in finished:
            self._post(self._deliver_utterance, utterance)
        return len(finished)

    # -- receive path (voice_recv's packet-router thread) ---------------------------------------------------------

    def _on_packet(self, user: Any, data: voice_recv.VoiceData, voice_client: Any) -> None:
        """Handle one packet from ``ListenerSink.write``; see the class docstring for what happens to it."""
        if self._closed:
            return
        packet = data.packet
        ssrc: int = packet.ssrc
        now = self._clock()
        user_id: int | None = user.id if user is not None else None
        if user_id is None and voice_client is not None:
            user_id = voice_client._get_id_from_ssrc(ssrc)
        if user_id is None:
            # voice_recv learns SSRC -> member from the SPEAKING op, which can arrive after the first packets. Without
            # the member, DAVE cannot pick a key (and nobody to attribute the audio to): hold up to the pre-roll.
            with self._lock:
                self._stats.packets += 1
                queue = self._pending.setdefault(ssrc, deque(maxlen=max(self._preroll_frames, 1)))
                if len(queue) == queue.maxlen:
                    self._stats.unknown_ssrc += 1
                queue.append((packet, now))
                if len(self._pending) > 2 * self._max_speakers:  # bound: drop the oldest unknown SSRC
                    oldest = next(iter(self._pending))
                    self._stats.unknown_ssrc += len(self._pending.pop(oldest))
            return

        ignored = user_id == self._bot_user_id or (self._ignore_bots and bool(getattr(user, "bot", False)))
        ignored = ignored or self._is_ignored(user_id)  # the caller's predicate runs outside the lock
        e2ee = _dave_protocol_version(voice_client) > 0
        session = None if ignored or not e2ee else _ready_dave_session(voice_client)
        with self._lock:
            held = self._pending.pop(ssrc, None)
            backlog = [*held, (packet, now)] if held else [(packet, now)]
            self._stats.packets += 1
            if ignored:
                self._stats.ignored += len(backlog)
                return
            for item, arrival in backlog:
                self._handle_frame(user_id, ssrc, item, arrival, e2ee, session)

    def _handle_frame(
        self, user_id: int, ssrc: int, packet: Any, arrival: float, e2ee: bool, session: DaveDecryptor | None
    ) -> None:
        """Decrypt, decode and buffer one frame of ``user_id``. Called with the lock held."""
        payload = bytes(packet.decrypted_data or b"")  # davey takes bytes only; voice_recv may leave a bytearray
        if payload == OPUS_SILENCE:
            self._stats.silence += 1
            return
        speaker = self._speaker(user_id, ssrc, arrival)
        if not payload:
            # voice_recv's placeholder for a lost packet: conceal it inside an utterance, ignore it outside one
            if not speaker.active:
                return
            opus: bytes | None = None
        else:
            opus = self._remove_e2ee(user_id, _strip_rtp_padding(packet, payload), e2ee, session)
            if opus is None:
                return
        try:
            pcm = speaker.decoder.decode(opus, fec=False)
        except discord.opus.OpusError as exc:
            self._stats.corrupted += 1
            _log.debug("Opus frame of user %s not decodable (%s); skipped", user_id, exc)
            return
        self._stats.decoded += 1
        if pcm:
            self._buffer(speaker, pcm, arrival)

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

    def _speaker(self, user_id: int, ssrc: int, now: float) -> _Speaker:
        """The state of ``user_id``, created (evicting the least recently heard beyond ``max_speakers``) if new."""
        speaker = self._speakers.get(user_id)
        if speaker is None:
            if len(self._speakers) >= self._max_speakers:
                oldest = min(self._speakers.values(), key=lambda s: s.last_packet)
                del self._speakers[oldest.user_id]
            speaker = self._speakers[user_id] = _Speaker(user_id, ssrc, self._preroll_frames, now)
        elif speaker.ssrc != ssrc:
            speaker.ssrc = ssrc  # a new SSRC is a new Opus stream (the member reconnected): fresh decoder state
            speaker.decoder = discord.opus.Decoder()
        return speaker

    def _buffer(self, speaker: _Speaker, pcm: bytes, arrival: float) -> None:
        """Add one decoded frame to ``speaker``'s utterance (or pre-roll); emit it when it reaches the maximum."""
        speaker.last_packet = arrival
        voiced = self._threshold <= 0 or rms(pcm) >= self._threshold
        if not speaker.active:
            if not voiced:
                speaker.preroll.append((pcm, arrival))
                return
            # pre-roll: the unvoiced frames just before, if recent (an old gap in between is not "before")
            kept = [frame for frame, at in speaker.preroll if arrival - at <= self._preroll_s]
            speaker.preroll.clear()
            speaker.frames = kept
            speaker.nbytes = sum(map(len, kept))
            speaker.active = True
            speaker.continued = False
            speaker.voiced_ms = 0.0
            speaker.speech_reported = False
            speaker.started_at = arrival - speaker.nbytes / BYTES_PER_SECOND
        speaker.frames.append(pcm)
        speaker.nbytes += len(pcm)
        if voiced:
            speaker.last_voice = arrival
            speaker.voiced_ms += len(pcm) * 1000 / BYTES_PER_SECOND
            if not speaker.speech_reported and speaker.voiced_ms >= self._speech_start_ms:
                speaker.speech_reported = True
                if self._on_speech_start is not None:
                    self._post(self._deliver_speech_start, speaker.user_id)
        if speaker.nbytes >= self._max_bytes:
            utterance = self._finish(speaker, cut=True)
            if utterance is not None:
                self._post(self._deliver_utterance, utterance)

    def _finish(self, speaker: _Speaker, *, cut: bool) -> Utterance | None:
        """End ``speaker``'s utterance (lock held). cut: the member is still talking; the rest continues after it.

        Returns the utterance to emit, or None when it is shorter than ``min_utterance_s`` (counted, dropped).
        """
        pcm = speaker.take()
        started_at = speaker.started_at
        duration_s = len(pcm) / BYTES_PER_SECOND
        ended_at = speaker.last_packet + FRAME_MS / 1000
        continued = speaker.continued
        if cut:
            self._stats.cut_long += 1
            speaker.started_at = ended_at
            speaker.continued = True
        else:
            speaker.active = False
            speaker.continued = False
        if duration_s < self._min_s and not continued:
            self._stats.dropped_short += 1
            return None
        self._stats.utterances += 1
        return Utterance(speaker.user_id, pcm, started_at, ended_at, duration_s)

    def _reset(self) -> None:
        """Forget every speaker, decoder and held packet (thread-safe)."""
        with self._lock:
            self._speakers.clear()
            self._pending.clear()

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self._stats, name, getattr(self._stats, name) + 1)

    # -- hand-over to the event loop ------------------------------------------------------------------------------

    def _post(self, callback: Callable[[Any], None], arg: Any) -> None:
        """Schedule ``callback(arg)`` on the loop from any thread; never raises (a closed loop is counted)."""
        try:
            self._loop.call_soon_threadsafe(callback, arg)
        except RuntimeError:  # the loop is closed: the bot is shutting down
            self._count("delivery_dropped")

    def _deliver_utterance(self, utterance: Utterance) -> None:
        """On the loop: hand ``utterance`` to the caller's queue or callback."""
        if self._closed:
            return
        target = self._on_utterance
        if isinstance(target, asyncio.Queue):
            try:
                target.put_nowait(utterance)
            except asyncio.QueueFull:
                self._count("delivery_dropped")
                _log.warning("Utterance of user %s (%.1f s) dropped: the queue is full", utterance.user_id,
                             utterance.duration_s)
            return
        self._spawn(target(utterance), f"utterance-{utterance.user_id}")

    def _deliver_speech_start(self, user_id: int) -> None:
        """On the loop: run ``on_speech_start(user_id)``."""
        if not self._closed and self._on_speech_start is not None:
            self._spawn(self._on_speech_start(user_id), f"speech-start-{user_id}")

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = self._loop.create_task(_logged(coro, name), name=f"listener-{name}")
        self._callbacks.add(task)
        task.add_done_callback(self._callbacks.discard)


async def _logged(coro: Awaitable[None], name: str) -> None:
    """Await a caller's callback; its failure is logged, not propagated (one bad turn must not stop listening)."""
    try:
        await coro
    except Exception:
        _log.exception("Listener callback %s failed", name)


# discord.py 2.7 keeps the DAVE state on ``VoiceClient._connection`` (a VoiceConnectionState): ``dave_protocol_version``
# is 0 while the call is not E2EE (or after a downgrade), and ``dave_session`` is ``ready`` once the bot has joined
# the MLS group. getattr defaults: a discord.py without DAVE has neither attribute, and then nothing is E2EE.


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
