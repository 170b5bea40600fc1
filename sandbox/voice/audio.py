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
scale, frames, the 99th percentile of arrival gaps, first and last arrival) are defined in docs/sandbox.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import discord.opus
import numpy as np

from bot.opus import load_opus

_log = logging.getLogger(__name__)

OPUS_SILENCE = b"\xf8\xff\xfe"
SAMPLE_RATE = 48_000
CHANNELS = 2
SPURT_GAP_S = 0.2
SPEAKING_OFF_GRACE_S = 0.06  # three frames' time: a frame still arriving means SPEAKING 0 was for an earlier spurt
GAP_BIN_MS = 0.1  # resolution of the gap histograms
MAX_SPURTS_PER_MEMBER = 1000


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
    samples: int = 0
    square_sum: float = 0.0  # of samples scaled to -1..1, both channels
    gaps: GapHistogram = field(default_factory=GapHistogram)
    first_arrival: float | None = None
    last_arrival: float | None = None

    def add(self, pcm: np.ndarray, arrival: float, *, continues: bool) -> None:
        """Count one decoded frame (int16 interleaved stereo) that arrived at ``arrival`` (loop seconds);
        ``continues``: it follows a frame of the same spurt, so the gap since that one counts."""
        if continues and self.last_arrival is not None:
            self.gaps.add((arrival - self.last_arrival) * 1000)
        self.frames += 1
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
        self.channel: str | None = None
        self.silence_frames = 0
        self._gap_timer: asyncio.TimerHandle | None = None
        self._off_timer: asyncio.TimerHandle | None = None

    def feed(self, opus: bytes, arrival: float) -> None:
        """One Opus frame that arrived at ``arrival`` (loop seconds). Decoding a 20 ms frame takes tens of
        microseconds, so it runs right here on the loop."""
        if opus == OPUS_SILENCE:
            self.silence_frames += 1
            self._close_spurt()
            return
        pcm = np.frombuffer(self._decoder.decode(opus, fec=False), dtype=np.int16)
        continues = self.spurt is not None
        if self.spurt is None:
            self.spurt = AudioTally()
            self.channel = self._channel_of()
        self.spurt.add(pcm, arrival, continues=continues)
        self._recorder.totals(self.member).add(pcm, arrival, continues=continues)
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
        if spurt is not None and spurt.frames:
            self._recorder.spurt_closed(self.member, self.channel, spurt)

    def close(self) -> None:
        """End the open spurt (publishing it) and cancel the timers."""
        if self._off_timer is not None:
            self._off_timer.cancel()
            self._off_timer = None
        self._close_spurt()


class VoiceRecorder:
    """Per-sender streams, the spurts they produced (bounded per member) and per-member running totals.

    ``publish(event)`` receives each ``voice_audio`` dict (it adds ``t_ms``); ``t_ms(loop_seconds)`` converts an
    arrival time to the sandbox's milliseconds. Opus is loaded lazily by the first stream (raises
    bot.opus.OpusUnavailable when there is no libopus).
    """

    def __init__(self, publish: Callable[[dict[str, Any]], Any], t_ms: Callable[[float], int]) -> None:
        self._publish = publish
        self._t_ms = t_ms
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

    def close(self) -> None:
        for ssrc in list(self._streams):
            self.end_stream(ssrc)

    def totals(self, member: str) -> AudioTally:
        return self._totals.setdefault(member, AudioTally())

    def spurt_closed(self, member: str, channel: str | None, spurt: AudioTally) -> None:
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
        }
        self._spurts.setdefault(member, deque(maxlen=MAX_SPURTS_PER_MEMBER)).append(event)
        self._spurt_count[member] += 1
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
