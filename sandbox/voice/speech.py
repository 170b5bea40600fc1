"""What a simulated member says, prepared as Discord would relay it: talk spurts of Opus frames, silence unsent.

Discord clients transmit only while the member's voice activity (or push-to-talk) is on, so a listener receives
*talk spurts*: runs of 20 ms Opus packets separated by stretches with no packets at all. ``plan_speech`` turns
48 kHz stereo s16le PCM into such a plan:

- each 20 ms frame is *voiced* when its RMS (both channels, fraction of full scale) is at least ``SILENCE_RMS``
  (0.00316, i.e. -50 dBFS: well above the -60..-70 dBFS floor of a quiet microphone or synthesised silence, well
  below speech at -30..-10 dBFS);
- a spurt starts at a voiced frame and runs until more than ``MAX_PAUSE_FRAMES`` (5 frames = 100 ms) unvoiced
  frames follow in a row; shorter pauses (between words) are sent as they are, like a client's VAD hangover;
- unvoiced frames before the first and after the last voiced frame of a spurt are not sent.

Everything here is CPU work (soundfile, librosa, Opus): run it in a thread, never on the event loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import discord.opus
import numpy as np
import soundfile

from bot.opus import load_opus
from services.speech.audio import BYTES_PER_SECOND, FRAME_BYTES, FRAME_SAMPLES, pad_to_frames, to_discord_pcm

SILENCE_RMS = 10 ** (-50 / 20)  # -50 dBFS: frames quieter than this are silence (see the module docstring)
MAX_PAUSE_FRAMES = 5  # a pause longer than this (100 ms) ends a talk spurt; the pause itself is not sent
MAX_SPEECH_S = 600.0  # the longest audio one speak call takes (10 minutes, 115 MB of PCM)


class SpeechError(ValueError):
    """Audio that cannot be spoken: unreadable file, odd PCM length, too long; the message says which."""


@dataclass(frozen=True)
class PlannedFrame:
    """One 20 ms frame to send: ``index`` counts frames from the start of the audio (so index * 20 ms is when it
    is due), ``opus`` is the encoded frame and ``level`` its audio level in -dBov (0 loudest .. 127 silent)."""

    index: int
    opus: bytes
    level: int


@dataclass(frozen=True)
class SpeechPlan:
    """Frames to send (only voiced spurts, in order), the audio's whole length (s) and the number of spurts."""

    frames: tuple[PlannedFrame, ...]
    seconds: float
    spurts: int


def read_speech(source: str | Path | bytes) -> bytes:
    """Audio to speak as 48 kHz stereo s16le PCM, padded with silence to whole 20 ms frames (3840 bytes).

    source: a path (``~`` expanded) to an audio file soundfile can read (WAV, FLAC, OGG; any rate and channel
    count, resampled with librosa), or ``bytes`` that already are 48 kHz stereo s16le PCM (a multiple of 4 bytes).
    Raises SpeechError for a file that cannot be read, PCM of the wrong length, or more than MAX_SPEECH_S.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) % 4:
            raise SpeechError(f"raw PCM must be 48 kHz stereo s16le (a multiple of 4 bytes), got {len(source)} bytes")
        _check_length(len(source) / BYTES_PER_SECOND)
        return pad_to_frames(bytes(source))
    path = Path(source).expanduser()
    try:
        _check_length(soundfile.info(str(path)).duration)
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        raise SpeechError(f"cannot read audio file {str(source)!r}: {exc}") from None
    return to_discord_pcm(samples, rate)


def _check_length(seconds: float) -> None:
    if seconds > MAX_SPEECH_S:
        raise SpeechError(f"audio is {seconds:.1f} s long; a member speaks at most {MAX_SPEECH_S:g} s at a time")


def frame_rms(pcm: bytes) -> np.ndarray:
    """RMS of each 20 ms frame of ``pcm`` (48 kHz stereo s16le, whole frames) as a fraction of full scale:
    shape (frames,), float64 in 0..1."""
    frames = np.frombuffer(pcm, dtype="<i2").reshape(-1, FRAME_SAMPLES * 2).astype(np.float64) / 32768.0
    return np.sqrt(np.mean(frames * frames, axis=1)) if len(frames) else np.zeros(0)


def split_spurts(levels: np.ndarray) -> list[range]:
    """Talk spurts as ranges of frame indexes, from per-frame RMS ``levels`` (see the module docstring):
    each range starts and ends on a voiced frame and holds no pause longer than MAX_PAUSE_FRAMES."""
    voiced = np.flatnonzero(levels >= SILENCE_RMS)
    spurts: list[range] = []
    if not len(voiced):
        return spurts
    start = prev = int(voiced[0])
    for index in voiced[1:].tolist():
        if index - prev - 1 > MAX_PAUSE_FRAMES:
            spurts.append(range(start, prev + 1))
            start = index
        prev = index
    spurts.append(range(start, prev + 1))
    return spurts


def audio_level(rms: float) -> int:
    """RFC 6464 audio level of a frame: its level in -dBov, 0 (full scale) .. 127 (silence)."""
    if rms <= 0:
        return 127
    return min(127, max(0, round(-20 * math.log10(rms))))


def plan_speech(pcm: bytes) -> SpeechPlan:
    """Split ``pcm`` (48 kHz stereo s16le, whole 20 ms frames) into talk spurts and Opus-encode their frames.

    One encoder runs over all sent frames in order, as a client's does. Raises bot.opus.OpusUnavailable
    without libopus.
    """
    load_opus()
    levels = frame_rms(pcm)
    spurts = split_spurts(levels)
    encoder = discord.opus.Encoder()
    frames: list[PlannedFrame] = []
    view = memoryview(pcm)
    for spurt in spurts:
        for index in spurt:
            chunk = bytes(view[index * FRAME_BYTES : (index + 1) * FRAME_BYTES])
            opus = encoder.encode(chunk, FRAME_SAMPLES)
            frames.append(PlannedFrame(index, opus, audio_level(float(levels[index]))))
    return SpeechPlan(tuple(frames), len(pcm) / BYTES_PER_SECOND, len(spurts))


def corrupt_opus(payload: bytes) -> bytes:
    """A payload no Opus decoder accepts, of the same length: the TOC byte keeps its configuration but says
    "code 3" (an arbitrary number of frames) and the frame-count byte says 0 frames, which RFC 6716 3.2.5
    forbids, so decoding fails (discord.opus.Decoder raises OpusError) however the rest reads."""
    if not payload:
        return b"\x03\x00"
    return bytes([payload[0] | 0x03, 0x00]) + payload[2:]
