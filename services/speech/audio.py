"""Resampling and framing between synthesised or received audio and Discord's voice format.

Discord voice carries Opus at 48 kHz, stereo, in 20 ms frames; discord.py's ``AudioSource.read`` must return
exactly one such frame of 16-bit little-endian PCM (``discord.opus.Encoder.FRAME_SIZE`` = 3840 bytes). Everything
here is CPU work on NumPy arrays (librosa resampling takes milliseconds to seconds): call it from a thread, never on
the event loop.
"""

from __future__ import annotations

from collections.abc import Iterator

import librosa
import numpy as np

SAMPLE_RATE = 48_000
"""Discord voice sample rate, Hz (Opus at 48 kHz; discord.opus.Encoder.SAMPLING_RATE)."""
CHANNELS = 2
"""Discord voice channels (stereo; discord.opus.Encoder.CHANNELS)."""
FRAME_MS = 20
"""Length of one Opus frame, ms (discord.opus.Encoder.FRAME_LENGTH)."""
SAMPLE_WIDTH = 2
"""Bytes per sample: signed 16-bit little-endian (s16le)."""
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
"""Samples per channel in one frame: 960."""
FRAME_BYTES = FRAME_SAMPLES * CHANNELS * SAMPLE_WIDTH
"""Bytes in one 20 ms frame of 48 kHz stereo s16le: 3840 (discord.opus.Encoder.FRAME_SIZE)."""
BYTES_PER_SECOND = SAMPLE_RATE * CHANNELS * SAMPLE_WIDTH

STT_SAMPLE_RATE = 16_000
"""Sample rate speech recognisers expect (Whisper, PocketSphinx), Hz."""

_INT16_SCALE = 32768.0  # int16 full scale: -32768..32767 maps to [-1, 1)


def to_discord_pcm(samples: np.ndarray, sample_rate: int) -> bytes:
    """Convert audio to Discord's PCM: 48 kHz stereo s16le, a whole number of 20 ms frames.

    samples: shape (n,) for mono or (n, channels) interleaved by row; float (any float dtype) in [-1, 1] or int16.
        One channel is copied to both sides; more than two are averaged to mono first.
    sample_rate: rate of ``samples`` in Hz (> 0).
    Returns bytes whose length is a multiple of FRAME_BYTES (3840): the resampled audio is never cut, its last frame
    is completed with silence. Values outside [-1, 1] are clipped, not wrapped. Empty input gives b"".
    Raises ValueError for a non-positive sample rate, a shape with more than two dimensions, or an unsupported dtype.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    audio = _as_float(samples)
    if audio.ndim == 1:
        audio = audio[:, np.newaxis]
    elif audio.ndim != 2:
        raise ValueError(f"samples must have shape (n,) or (n, channels), got {samples.shape}")
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        return b""
    if audio.shape[1] > CHANNELS:
        audio = audio.mean(axis=1, keepdims=True)
    if sample_rate != SAMPLE_RATE:
        # soxr_hq (librosa's default) keeps ceil(n * 48000 / rate) samples: the duration is preserved.
        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=SAMPLE_RATE, axis=0)
    if audio.shape[1] == 1:
        audio = np.repeat(audio, CHANNELS, axis=1)
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    return pad_to_frames(pcm.tobytes())


def pad_to_frames(pcm: bytes) -> bytes:
    """Complete ``pcm`` (48 kHz stereo s16le) with silence up to a multiple of FRAME_BYTES; never shortens it."""
    remainder = len(pcm) % FRAME_BYTES
    return pcm if remainder == 0 else pcm + bytes(FRAME_BYTES - remainder)


def iter_frames(pcm: bytes) -> Iterator[bytes]:
    """Yield ``pcm`` (48 kHz stereo s16le) as FRAME_BYTES-long (3840 bytes, 20 ms) frames.

    The last frame is padded with zero bytes (silence) when ``len(pcm)`` is not a multiple of FRAME_BYTES;
    empty input yields nothing.
    """
    view = memoryview(pcm)
    for start in range(0, len(pcm), FRAME_BYTES):
        frame = bytes(view[start : start + FRAME_BYTES])
        yield frame if len(frame) == FRAME_BYTES else frame + bytes(FRAME_BYTES - len(frame))


def pcm_duration_s(pcm: bytes) -> float:
    """Duration in seconds of ``pcm``, 48 kHz stereo s16le (192,000 bytes a second)."""
    return len(pcm) / BYTES_PER_SECOND


def to_mono_16k(pcm: bytes) -> np.ndarray:
    """Convert Discord PCM (48 kHz stereo s16le) to what speech recognisers take: 16 kHz mono float32.

    Returns shape (ceil(frames / 3),), values in [-1, 1]; empty input gives an empty array.
    Raises ValueError when ``len(pcm)`` is not a multiple of 4 bytes (one stereo s16le sample).
    """
    if len(pcm) % (CHANNELS * SAMPLE_WIDTH):
        raise ValueError(f"48 kHz stereo s16le PCM must be a multiple of 4 bytes, got {len(pcm)}")
    if not pcm:
        return np.zeros(0, dtype=np.float32)
    stereo = np.frombuffer(pcm, dtype="<i2").reshape(-1, CHANNELS).astype(np.float32) / _INT16_SCALE
    mono = stereo.mean(axis=1)
    return librosa.resample(mono, orig_sr=SAMPLE_RATE, target_sr=STT_SAMPLE_RATE).astype(np.float32, copy=False)


def rms(pcm: bytes) -> float:
    """Root-mean-square level of s16le PCM (any rate or channel count), relative to full scale: 0.0 to 1.0.

    0.0 for empty input; a trailing odd byte is ignored.
    """
    usable = len(pcm) - len(pcm) % SAMPLE_WIDTH
    if usable == 0:
        return 0.0
    samples = np.frombuffer(pcm[:usable], dtype="<i2").astype(np.float64) / _INT16_SCALE
    return float(np.sqrt(np.mean(samples * samples)))


def _as_float(samples: np.ndarray) -> np.ndarray:
    """float32 view of ``samples`` in [-1, 1]: int16 is scaled by 1/32768, floats are kept as they are."""
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / _INT16_SCALE
    if np.issubdtype(samples.dtype, np.floating):
        return samples.astype(np.float32, copy=False)
    raise ValueError(f"samples must be float in [-1, 1] or int16, got dtype {samples.dtype}")
