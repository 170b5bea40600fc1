"""Endpointing: per-speaker PCM buffers cut into utterances at the end of speech.

The voice receive path (``bot/voice_receive.py``) decodes each member's Opus frames and calls ``Endpointer.feed``
with the PCM, from voice_recv's packet-router thread. This module knows nothing of Discord or Opus: it keeps, per
speaker, a pre-roll of quiet frames and the utterance being collected, ends an utterance when no voiced frame came for
``endpoint_silence_ms`` (Discord sends nothing during silence, so the end is decided by a periodic check on the event
loop, ``start()``), drops utterances shorter than ``min_utterance_s``, cuts those reaching ``max_utterance_s``, and
reports "speech started" early enough for barge-in.

Speculation (``speculate_ms``): when a member has been silent for ``speculate_ms`` (shorter than
``endpoint_silence_ms``), the utterance so far is handed to ``on_tentative`` so the caller can start transcribing and
answering it before the end of the turn is confirmed. If the member speaks again first, ``on_resumed`` says so (the
caller discards that work) and the speech continues as the same utterance; otherwise the utterance is emitted as
usual once the silence reaches ``endpoint_silence_ms``, with the same ``started_at`` and, when no audio arrived in
between, the same PCM as the tentative one. The caller may change that silence for the tentative utterance with
``end_after`` (shorter when its words are a finished sentence, longer when they trail off:
``services.voice.turn_taking``).

Threads: everything ``feed`` shares with the event loop (speaker buffers, statistics) sits behind one
``threading.RLock`` held for microseconds; finished utterances and "speech started" events reach the loop only through
``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from services.speech.audio import BYTES_PER_SECOND, FRAME_MS, rms

if TYPE_CHECKING:
    from config import Settings

_log = logging.getLogger(__name__)

UtteranceCallback = Callable[["Utterance"], Awaitable[None]]
SpeechStartCallback = Callable[[int], Awaitable[None]]
TentativeCallback = Callable[["Utterance"], None]
ResumedCallback = Callable[[int, float], None]


@dataclass(frozen=True, slots=True)
class Utterance:
    """What one member said between two silences.

    user_id: the Discord user id of the speaker.
    pcm: 48 kHz stereo s16le (192,000 bytes a second); whole decoded Opus frames, usually 20 ms (3840 bytes) each.
    started_at, ended_at: seconds on the endpointer's clock (``time.monotonic`` by default, the clock of
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
class EndpointingStats:
    """Counters since the endpointer was created (a copy is returned by ``Endpointer.stats``)."""

    utterances: int = 0
    """Utterances handed to the event loop."""
    dropped_short: int = 0
    """Utterances dropped for being shorter than ``min_utterance_s``."""
    cut_long: int = 0
    """Times an utterance reached ``max_utterance_s`` and was emitted while the member kept talking."""
    delivery_dropped: int = 0
    """Utterances or events not delivered: the caller's queue was full, or the event loop was closed."""
    tentative: int = 0
    """Tentative ends handed to ``on_tentative`` (a silence of ``speculate_ms``)."""
    resumed: int = 0
    """Tentative ends followed by more speech from the same member before ``endpoint_silence_ms``."""
    ended_by_words: dict[str, int] = field(default_factory=dict)
    """Utterances ended after the silence ``end_after`` asked for, by its reason (e.g. "complete": 3)."""


class _Speaker:
    """One member's pre-roll ring and the utterance being collected."""

    __slots__ = (
        "user_id", "preroll", "frames", "nbytes", "active", "continued", "started_at", "last_packet", "last_voice",
        "voiced_ms", "speech_reported", "tentative", "end_silence_s", "end_reason",
    )

    def __init__(self, user_id: int, preroll_frames: int, now: float) -> None:
        self.user_id = user_id
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
        self.tentative = False  # the utterance so far was handed to on_tentative and no voice came since
        self.end_silence_s: float | None = None  # the silence that ends this utterance, set by end_after
        self.end_reason = ""

    def take(self) -> bytes:
        """Return the collected PCM and empty the buffer."""
        pcm = b"".join(self.frames)
        self.frames = []
        self.nbytes = 0
        return pcm


class Endpointer:
    """Turns the PCM of the members of one voice channel into utterances, one speaker at a time.

    Create it on the event loop, ``start()`` it, then ``feed`` it from any thread.

    loop: the event loop the callbacks run on (the bot's loop).
    on_utterance: ``async (Utterance) -> None`` run as a task per utterance, or an ``asyncio.Queue`` that receives
        them (``put_nowait``; when full, the utterance is dropped, counted in ``stats.delivery_dropped`` and logged).
    on_speech_start: ``async (user_id) -> None`` run once per utterance when a member has spoken for
        ``speech_start_ms`` (default 300 ms), early enough to stop the bot's playback (barge-in); None to skip.
    endpoint_silence_ms: an utterance ends when no voiced frame arrived for this long.
    pre_roll_ms: audio kept from before the first voiced frame (with ``voice_threshold`` > 0), so first syllables
        survive; the receive path also holds frames of a not-yet-identified speaker this long.
    min_utterance_s: shorter utterances are dropped (coughs, clicks); the tail of a cut utterance is always kept.
    max_utterance_s: an utterance reaching this length is emitted and the speech continues as a new utterance.
    speech_start_ms: voiced audio in an utterance before ``on_speech_start`` fires.
    voice_threshold: RMS (0..1 of full scale) a frame needs to count as voice; 0 (default) counts every frame, since
        Discord clients already gate what they send with their own voice detection.
    max_speakers: speakers tracked at once; beyond it the least recently heard one is forgotten (bounded memory).
    idle_forget_s: a speaker not heard for this long is forgotten.
    check_interval_s: period of the end-of-utterance check on the loop.
    speculate_ms: a silence this long hands the utterance so far to ``on_tentative``; 0 (default) never does.
    on_tentative: ``(Utterance) -> None``, called on the loop with the utterance so far (not removed from the
        buffer) once per silence of ``speculate_ms``, if it is at least ``min_utterance_s`` long (or continues a cut
        one).
    on_resumed: ``(user_id, started_at) -> None``, called on the loop when the member speaks again after a tentative
        end of the utterance that started at ``started_at`` (the audio keeps collecting in the same utterance).
    clock: monotonic seconds; injectable for tests.
    Raises ValueError for out-of-range arguments.
    """

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        on_utterance: UtteranceCallback | asyncio.Queue[Utterance],
        on_speech_start: SpeechStartCallback | None = None,
        endpoint_silence_ms: int = 600,
        pre_roll_ms: int = 200,
        min_utterance_s: float = 0.4,
        max_utterance_s: float = 15.0,
        speech_start_ms: int = 300,
        voice_threshold: float = 0.0,
        max_speakers: int = 100,
        idle_forget_s: float = 60.0,
        check_interval_s: float = 0.05,
        speculate_ms: int = 0,
        on_tentative: TentativeCallback | None = None,
        on_resumed: ResumedCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if endpoint_silence_ms <= 0 or pre_roll_ms < 0 or speech_start_ms < 0:
            raise ValueError("endpoint_silence_ms must be > 0, pre_roll_ms and speech_start_ms >= 0")
        if not 0 <= min_utterance_s < max_utterance_s:
            raise ValueError(f"need 0 <= min_utterance_s < max_utterance_s, got {min_utterance_s}, {max_utterance_s}")
        if max_speakers < 1 or idle_forget_s <= 0 or check_interval_s <= 0 or not 0 <= voice_threshold < 1:
            raise ValueError("max_speakers >= 1, idle_forget_s > 0, check_interval_s > 0, 0 <= voice_threshold < 1")
        if not 0 <= speculate_ms < endpoint_silence_ms:
            raise ValueError(f"need 0 <= speculate_ms < endpoint_silence_ms, got {speculate_ms}, {endpoint_silence_ms}")
        self._loop = loop
        self._on_utterance = on_utterance
        self._on_speech_start = on_speech_start
        self._on_tentative = on_tentative
        self._on_resumed = on_resumed
        self.speculate_s = speculate_ms / 1000
        """Silence before a tentative end, seconds; 0: no tentative ends."""
        self.silence_s = endpoint_silence_ms / 1000
        """End-of-speech silence, seconds."""
        self.preroll_frames = pre_roll_ms // FRAME_MS
        """Pre-roll, in 20 ms frames."""
        self._preroll_s = pre_roll_ms / 1000
        self._min_s = min_utterance_s
        self._max_bytes = int(max_utterance_s * BYTES_PER_SECOND)
        self._speech_start_ms = speech_start_ms
        self._threshold = voice_threshold
        self.max_speakers = max_speakers
        self._idle_forget_s = idle_forget_s
        self._check_interval_s = check_interval_s
        self.clock = clock

        # guards everything below, shared with the receive thread; re-entrant so _post/_count work under it
        self._lock = threading.RLock()
        self._speakers: dict[int, _Speaker] = {}
        self._stats = EndpointingStats()
        self._closed = False

        self._task: asyncio.Task[None] | None = None
        self._callbacks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Endpointer:
        """An endpointer with ENDPOINT_SILENCE_MS, ENDPOINT_SPECULATE_MS, ENDPOINT_CHECK_MS, PRE_ROLL_MS,
        MIN_UTTERANCE_S and MAX_UTTERANCE_S from ``settings``.

        kwargs: the other ``__init__`` arguments (``loop`` and ``on_utterance`` are required).
        """
        return cls(
            endpoint_silence_ms=settings.ENDPOINT_SILENCE_MS,
            speculate_ms=settings.ENDPOINT_SPECULATE_MS,
            check_interval_s=settings.ENDPOINT_CHECK_MS / 1000,
            pre_roll_ms=settings.PRE_ROLL_MS,
            min_utterance_s=settings.MIN_UTTERANCE_S,
            max_utterance_s=settings.MAX_UTTERANCE_S,
            **kwargs,
        )

    # -- lifecycle (event loop) ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the end-of-utterance check task. Call on the endpointer's loop; a second call does nothing."""
        if self._task is None or self._task.done():
            self._closed = False
            self._task = self._loop.create_task(self._check_loop(), name="endpointer-check")

    async def stop(self) -> None:
        """Stop: no more utterances or events; partial audio is discarded (call ``flush()`` first to keep it).

        Cancels the check task and the ``on_utterance``/``on_speech_start`` tasks still running, and waits for them.
        PCM fed afterwards is ignored.
        """
        self._closed = True
        tasks = [t for t in (self._task, *self._callbacks) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self.reset()

    @property
    def closed(self) -> bool:
        """True once ``stop()`` was called (until the next ``start()``)."""
        return self._closed

    def flush(self) -> int:
        """Emit every utterance in progress now (those shorter than ``min_utterance_s`` are dropped).

        Returns how many were handed to the loop.
        """
        return self.check_endpoints(force=True)

    @property
    def stats(self) -> EndpointingStats:
        """A snapshot of the counters (see ``EndpointingStats``)."""
        with self._lock:
            return replace(self._stats, ended_by_words=dict(self._stats.ended_by_words))

    @property
    def active_speakers(self) -> list[int]:
        """User ids of the members with an utterance in progress."""
        with self._lock:
            return [user_id for user_id, speaker in self._speakers.items() if speaker.active]

    def is_speaking(self, user_id: int) -> bool:
        """True while ``user_id`` has an utterance in progress (any thread)."""
        with self._lock:
            speaker = self._speakers.get(user_id)
            return speaker is not None and speaker.active

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self._check_interval_s)
            self.check_endpoints()

    def check_endpoints(self, now: float | None = None, *, force: bool = False) -> int:
        """End the utterances whose speaker has been silent for ``endpoint_silence_ms``, hand tentative ends (a silence
        of ``speculate_ms``) to ``on_tentative``, and forget idle speakers.

        Run periodically by ``start()``; callable directly (tests, ``flush``). now: the clock's time (default: now).
        force: end every utterance in progress regardless of silence. Returns how many utterances were emitted.
        """
        now = self.clock() if now is None else now
        finished: list[Utterance] = []
        tentative: list[Utterance] = []
        with self._lock:
            for speaker in self._speakers.values():
                if not speaker.active:
                    continue
                silence = now - speaker.last_voice
                if force or silence >= (speaker.end_silence_s or self.silence_s):
                    utterance = self._finish(speaker, cut=False)
                    if utterance is not None:
                        finished.append(utterance)
                elif self.speculate_s and silence >= self.speculate_s and not speaker.tentative:
                    duration_s = speaker.nbytes / BYTES_PER_SECOND
                    if duration_s >= self._min_s or speaker.continued:
                        speaker.tentative = True
                        self._stats.tentative += 1
                        tentative.append(Utterance(speaker.user_id, b"".join(speaker.frames), speaker.started_at,
                                                   speaker.last_packet + FRAME_MS / 1000, duration_s))
            idle = [
                uid for uid, s in self._speakers.items() if not s.active and now - s.last_packet >= self._idle_forget_s
            ]
            for user_id in idle:
                del self._speakers[user_id]
        for utterance in tentative:
            self._post(self._deliver_tentative, utterance)
        for utterance in finished:
            self._post(self._deliver_utterance, utterance)
        return len(finished)

    # -- PCM in (any thread) ----------------------------------------------------------------------------------------

    def feed(self, user_id: int, pcm: bytes, arrival: float) -> None:
        """Add one frame of ``user_id``'s audio: ``pcm`` 48 kHz stereo s16le, ``arrival`` on ``clock``'s time.

        Emits the utterance (to the loop) when it reaches ``max_utterance_s``. Thread-safe; ignored after ``stop()``.
        """
        if self._closed or not pcm:
            return
        with self._lock:
            self._buffer(self._speaker(user_id, arrival), pcm, arrival)

    def reset(self) -> None:
        """Forget every speaker and its partial audio (thread-safe)."""
        with self._lock:
            self._speakers.clear()

    def end_after(self, user_id: int, started_at: float, silence_ms: int, reason: str) -> bool:
        """End the utterance of ``user_id`` that started at ``started_at`` after ``silence_ms`` of silence instead of
        ``endpoint_silence_ms``, if it is still at its tentative end (no voice since); at once if that silence has
        passed. reason: counted in ``stats.ended_by_words`` when the utterance ends so. Returns whether it applied;
        the next voiced frame cancels it. Any thread."""
        with self._lock:
            speaker = self._speakers.get(user_id)
            if speaker is None or not speaker.tentative or speaker.started_at != started_at:
                return False
            speaker.end_silence_s, speaker.end_reason = silence_ms / 1000, reason
        self.check_endpoints()
        return True

    def _speaker(self, user_id: int, now: float) -> _Speaker:
        """The state of ``user_id``, created (evicting the least recently heard beyond ``max_speakers``) if new."""
        speaker = self._speakers.get(user_id)
        if speaker is None:
            if len(self._speakers) >= self.max_speakers:
                oldest = min(self._speakers.values(), key=lambda s: s.last_packet)
                del self._speakers[oldest.user_id]
            speaker = self._speakers[user_id] = _Speaker(user_id, self.preroll_frames, now)
        return speaker

    def _buffer(self, speaker: _Speaker, pcm: bytes, arrival: float) -> None:
        """Add one frame to ``speaker``'s utterance (or pre-roll); emit it when it reaches the maximum. Lock held."""
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
            speaker.end_silence_s = None
            if speaker.tentative:
                speaker.tentative = False
                self._stats.resumed += 1
                self._post(self._deliver_resumed, (speaker.user_id, speaker.started_at))
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
        speaker.tentative = False
        if speaker.end_silence_s is not None and not cut:
            self._stats.ended_by_words[speaker.end_reason] = self._stats.ended_by_words.get(speaker.end_reason, 0) + 1
        speaker.end_silence_s = None
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

    def _deliver_tentative(self, utterance: Utterance) -> None:
        """On the loop: hand the utterance so far to ``on_tentative``."""
        if not self._closed and self._on_tentative is not None:
            self._on_tentative(utterance)

    def _deliver_resumed(self, key: tuple[int, float]) -> None:
        """On the loop: tell ``on_resumed`` that the member speaks again."""
        if not self._closed and self._on_resumed is not None:
            self._on_resumed(*key)

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = self._loop.create_task(_logged(coro, name), name=f"endpointer-{name}")
        self._callbacks.add(task)
        task.add_done_callback(self._callbacks.discard)


async def _logged(coro: Awaitable[None], name: str) -> None:
    """Await a caller's callback; its failure is logged, not propagated (one bad turn must not stop listening)."""
    try:
        await coro
    except Exception:
        _log.exception("Endpointer callback %s failed", name)
