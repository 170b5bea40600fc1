"""What the sandbox voice server heard: Opus frames decoded and measured per sender, cut into talk spurts.

A *talk spurt* is a run of speech frames from one sender (one SSRC). It starts at the first speech frame and
ends at whichever comes first:

- a silence frame (Opus ``F8 FF FE``), which discord.py sends five of whenever a source ends, is stopped or is
  paused, so consecutive sources (each queued request is its own source) give separate spurts;
- the sender's SPEAKING 0, when no frame has arrived since it (``SPEAKING_OFF_GRACE_S`` later): SPEAKING goes
  over the websocket and may overtake the last frames of a spurt, or arrive after the next spurt began;
- ``SPURT_GAP_S`` (200 ms) without any packet.

Silence frames are counted (``silence_frames``) but are not speech: no seconds, no RMS, no gaps.

Each closed spurt becomes a ``voice_audio`` event: its fields (seconds of decoded audio, RMS as a fraction of full
scale, frames, the 99th percentile of arrival gaps, first and last arrival, whether every frame was end-to-end
encrypted) are defined in docs/sandbox.md. With a ``record_dir``, each spurt's decoded audio is also written there
as a 16-bit 48 kHz stereo WAV file (in a worker thread), and the event, published once the file is written, names it
in ``file``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord.opus
import numpy as np
import soundfile

from bot.opus import load_opus

_log = logging.getLogger(__name__)

OPUS_SILENCE = b"\xf8\xff\xfe"
SAMPLE_RATE = 48_000
CHANNELS = 2
SPURT_GAP_S = 0.2
SPEAKING_OFF_GRACE_S = 0.06  # three frames' time: a frame still arriving means SPEAKING 0 was for an earlier spurt
GAP_BIN_MS = 0.1  # resolution of the gap histograms
MAX_SPURTS_PER_MEMBER = 1000
MAX_RECORDED_S = 600.0  # a recorded spurt keeps at most its first 10 minutes (110 MB of PCM in memory)


class GapHistogram:
    """Inter-frame arrival gaps in 0.1 ms bins: constant memory however long a sender talks."""

    def __init__(self) -> None:
        self._bins: Counter[int] = Counter()
        self.count = 0

    def add(self, gap_ms: float) -> None:
        self._bins[round(gap_ms / GAP_BIN_MS)] += 1
        self.count += 1

    def percentile(self, q: float) -> float:
        """The ``q`` (0..100) percentile in ms, 0.0 when empty; nearest-rank on the binned values."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for key in sorted(self._bins):
            seen += self._bins[key]
            if seen >= rank:
                return round(key * GAP_BIN_MS, 1)
        return round(max(self._bins) * GAP_BIN_MS, 1)


@dataclass
class AudioTally:
    """Speech frames summed up: frames, decoded samples (per channel), sum of squared samples, gaps, times."""

    frames: int = 0
    e2ee_frames: int = 0  # frames that came DAVE-encrypted
    samples: int = 0
    square_sum: float = 0.0  # of samples scaled to -1..1, both channels
    gaps: GapHistogram = field(default_factory=GapHistogram)
    first_arrival: float | None = None
    last_arrival: float | None = None

    def add(self, pcm: np.ndarray, arrival: float, *, continues: bool, e2ee: bool = False) -> None:
        """Count one decoded frame (int16 interleaved stereo) that arrived at ``arrival`` (loop seconds);
        ``continues``: it follows a frame of the same spurt, so the gap since that one counts; ``e2ee``: it came
        DAVE-encrypted."""
        if continues and self.last_arrival is not None:
            self.gaps.add((arrival - self.last_arrival) * 1000)
        self.frames += 1
        self.e2ee_frames += e2ee
        self.samples += len(pcm) // CHANNELS
        scaled = pcm.astype(np.float64) / 32768.0
        self.square_sum += float(np.dot(scaled, scaled))
        if self.first_arrival is None:
            self.first_arrival = arrival
        self.last_arrival = arrival

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    @property
    def rms(self) -> float:
        values = self.samples * CHANNELS
        return math.sqrt(self.square_sum / values) if values else 0.0


class SenderStream:
    """One SSRC's audio: its Opus decoder, open spurt and timers. Used on the event loop only."""

    def __init__(self, recorder: VoiceRecorder, member: str, channel_of: Callable[[], str | None]) -> None:
        self._recorder = recorder
        self.member = member
        self._channel_of = channel_of
        self._decoder = discord.opus.Decoder()
        self.spurt: AudioTally | None = None
        self._pcm: list[bytes] = []  # the open spurt's decoded audio, when recording
        self.channel: str | None = None
        self.silence_frames = 0
        self.dave_problem_reported = False  # an error event was published for the current run of unplayable frames
        self._gap_timer: asyncio.TimerHandle | None = None
        self._off_timer: asyncio.TimerHandle | None = None

    def feed(self, opus: bytes, arrival: float, *, e2ee: bool = False) -> None:
        """One Opus frame that arrived at ``arrival`` (loop seconds); ``e2ee``: it came DAVE-encrypted. Decoding a
        20 ms frame takes tens of microseconds, so it runs right here on the loop."""
        if opus == OPUS_SILENCE:
            self.silence_frames += 1
            self._close_spurt()
            return
        decoded = self._decoder.decode(opus, fec=False)
        pcm = np.frombuffer(decoded, dtype=np.int16)
        continues = self.spurt is not None
        if self.spurt is None:
            self.spurt = AudioTally()
            self.channel = self._channel_of()
        self.spurt.add(pcm, arrival, continues=continues, e2ee=e2ee)
        self._recorder.totals(self.member).add(pcm, arrival, continues=continues, e2ee=e2ee)
        if self._recorder.recording and self.spurt.seconds <= MAX_RECORDED_S:
            self._pcm.append(decoded)
        if self._gap_timer is not None:
            self._gap_timer.cancel()
        loop = asyncio.get_running_loop()
        self._gap_timer = loop.call_at(arrival + SPURT_GAP_S, self._close_spurt)

    def speaking(self, flags: int) -> None:
        """The sender's SPEAKING flags (0: stopped); see the module docstring for how 0 ends a spurt."""
        if flags or self.spurt is None:
            return
        loop = asyncio.get_running_loop()
        said_at = loop.time()
        if self._off_timer is not None:
            self._off_timer.cancel()
        self._off_timer = loop.call_later(SPEAKING_OFF_GRACE_S, self._maybe_close_after_off, said_at)

    def _maybe_close_after_off(self, said_at: float) -> None:
        self._off_timer = None
        if self.spurt is not None and (self.spurt.last_arrival or 0.0) <= said_at:
            self._close_spurt()

    def _close_spurt(self) -> None:
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None
        spurt, self.spurt = self.spurt, None
        pcm, self._pcm = b"".join(self._pcm), []
        if spurt is not None and spurt.frames:
            self._recorder.spurt_closed(self.member, self.channel, spurt, pcm)

    def close(self) -> None:
        """End the open spurt (publishing it) and cancel the timers."""
        if self._off_timer is not None:
            self._off_timer.cancel()
            self._off_timer = None
        self._close_spurt()


class VoiceRecorder:
    """Per-sender streams, the spurts they produced (bounded per member) and per-member running totals.

    ``publish(event)`` receives each ``voice_audio`` dict (it adds ``t_ms``); ``t_ms(loop_seconds)`` converts an
    arrival time to the sandbox's milliseconds. ``record_dir``: a folder (which must exist) where each spurt is also
    written as a WAV file, ``NNNN-member-STARTms.wav``. Opus is loaded lazily by the first stream (raises
    bot.opus.OpusUnavailable when there is no libopus).
    """

    def __init__(
        self, publish: Callable[[dict[str, Any]], Any], t_ms: Callable[[float], int], *, record_dir: Path | None = None
    ) -> None:
        self._publish = publish
        self._t_ms = t_ms
        self._record_dir = record_dir
        self._recorded = 0
        self._writing: asyncio.Task[None] | None = None  # the newest write; each waits for the one before
        self._streams: dict[int, SenderStream] = {}
        self._spurts: dict[str, deque[dict[str, Any]]] = {}
        self._totals: dict[str, AudioTally] = {}
        self._silence: Counter[str] = Counter()
        self._spurt_count: Counter[str] = Counter()

    def stream(self, ssrc: int, member: str, channel_of: Callable[[], str | None]) -> SenderStream:
        """The stream of ``ssrc``, created for ``member`` on first use."""
        stream = self._streams.get(ssrc)
        if stream is None:
            load_opus()
            stream = self._streams[ssrc] = SenderStream(self, member, channel_of)
        return stream

    def existing(self, ssrc: int) -> SenderStream | None:
        """The stream of ``ssrc`` if it has sent audio, else None."""
        return self._streams.get(ssrc)

    def end_stream(self, ssrc: int) -> None:
        """The sender is gone (left, disconnected): close its open spurt and forget the stream."""
        stream = self._streams.pop(ssrc, None)
        if stream is not None:
            stream.close()
            self._silence[stream.member] += stream.silence_frames

    @property
    def recording(self) -> bool:
        return self._record_dir is not None

    def close(self) -> None:
        """End every stream (their open spurts are published, or written then published: see ``flush``)."""
        for ssrc in list(self._streams):
            self.end_stream(ssrc)

    async def flush(self) -> None:
        """Wait until every recorded spurt is written and its event published."""
        while self._writing is not None and not self._writing.done():
            await asyncio.shield(self._writing)

    def totals(self, member: str) -> AudioTally:
        return self._totals.setdefault(member, AudioTally())

    def spurt_closed(self, member: str, channel: str | None, spurt: AudioTally, pcm: bytes = b"") -> None:
        """Publish the ``voice_audio`` event of a closed spurt; when recording, after ``pcm`` (its decoded audio,
        48 kHz stereo s16le) is written to a WAV file, named in the event's ``file``."""
        assert spurt.first_arrival is not None and spurt.last_arrival is not None
        event = {
            "event": "voice_audio",
            "member": member,
            "channel": channel,
            "seconds": round(spurt.seconds, 3),
            "rms": round(spurt.rms, 4),
            "frames": spurt.frames,
            "gap_p99_ms": spurt.gaps.percentile(99),
            "start_t_ms": self._t_ms(spurt.first_arrival),
            "end_t_ms": self._t_ms(spurt.last_arrival),
            "e2ee": spurt.e2ee_frames == spurt.frames,
        }
        self._spurt_count[member] += 1
        if self._record_dir is None:
            self._done(member, event)
            return
        self._recorded += 1
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", member)
        path = self._record_dir / f"{self._recorded:04d}-{name}-{event['start_t_ms']}ms.wav"
        self._writing = asyncio.ensure_future(self._write(self._writing, path, pcm, member, event))

    async def _write(
        self, previous: asyncio.Task[None] | None, path: Path, pcm: bytes, member: str, event: dict[str, Any]
    ) -> None:
        """Write one spurt's WAV file in a thread, then publish its event (after the previous spurt's)."""
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        samples = np.frombuffer(pcm, dtype="<i2").reshape(-1, CHANNELS)
        try:
            await asyncio.to_thread(soundfile.write, str(path), samples, SAMPLE_RATE, subtype="PCM_16")
            event["file"] = str(path)
        except (OSError, RuntimeError) as exc:  # soundfile.LibsndfileError is a RuntimeError
            _log.error("could not write the recording %s: %s", path, exc)
            event["file"] = None
        self._done(member, event)

    def _done(self, member: str, event: dict[str, Any]) -> None:
        self._spurts.setdefault(member, deque(maxlen=MAX_SPURTS_PER_MEMBER)).append(event)
        self._publish(event)

    def spurts(self, member: str) -> list[dict[str, Any]]:
        return list(self._spurts.get(member, ()))

    def summary(self, member: str) -> dict[str, Any]:
        """Cumulative figures for ``member``, the open spurt included: seconds, frames, rms (0..1),
        gap_p99_ms (gaps within spurts), spurts (closed ones) and silence_frames."""
        tally = self._totals.get(member, AudioTally())
        silence = self._silence[member] + sum(s.silence_frames for s in self._streams.values() if s.member == member)
        return {
            "seconds": round(tally.seconds, 3),
            "frames": tally.frames,
            "rms": round(tally.rms, 4),
            "gap_p99_ms": tally.gaps.percentile(99),
            "spurts": self._spurt_count[member],
            "silence_frames": silence,
        }
