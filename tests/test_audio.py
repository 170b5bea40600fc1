"""Resampling and framing for Discord: services/speech/audio.py."""

from __future__ import annotations

import numpy as np
import pytest

from services.speech.audio import (
    BYTES_PER_SECOND,
    CHANNELS,
    FRAME_BYTES,
    FRAME_MS,
    SAMPLE_RATE,
    iter_frames,
    pcm_duration_s,
    rms,
    to_discord_pcm,
    to_mono_16k,
)

FRAME_S = FRAME_MS / 1000


def tone(seconds: float, rate: int, hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def as_stereo(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").reshape(-1, CHANNELS)


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def test_constants_describe_20ms_frames_of_48khz_stereo_s16le() -> None:
    assert (SAMPLE_RATE, CHANNELS, FRAME_MS, FRAME_BYTES) == (48_000, 2, 20, 3840)
    assert FRAME_BYTES == SAMPLE_RATE * FRAME_MS // 1000 * CHANNELS * 2
    assert BYTES_PER_SECOND == 192_000


@pytest.mark.parametrize("rate", [16_000, 22_050, 24_000, 44_100, 48_000])
@pytest.mark.parametrize("seconds", [0.013, 0.5, 1.37])
def test_resampling_keeps_duration_within_one_frame(rate: int, seconds: float) -> None:
    pcm = to_discord_pcm(tone(seconds, rate), rate)
    assert len(pcm) % FRAME_BYTES == 0
    assert seconds <= pcm_duration_s(pcm) < seconds + FRAME_S + 1e-9


def test_mono_is_copied_to_both_channels_at_the_same_pitch() -> None:
    stereo = as_stereo(to_discord_pcm(tone(1.0, 22_050, hz=440.0), 22_050))
    assert np.array_equal(stereo[:, 0], stereo[:, 1])
    assert abs(peak_hz(stereo[:, 0].astype(np.float32), SAMPLE_RATE) - 440.0) < 2.0
    assert np.abs(stereo).max() == pytest.approx(0.5 * 32767, rel=0.02)


def test_stereo_input_keeps_its_channels() -> None:
    left, right = tone(0.5, 24_000, hz=300.0), np.zeros(12_000, dtype=np.float32)
    stereo = as_stereo(to_discord_pcm(np.stack([left, right], axis=1), 24_000))
    assert np.abs(stereo[:, 0]).max() > 10_000
    assert np.abs(stereo[:, 1]).max() < 50  # resampling leaks nothing audible into the silent side


def test_int16_input_is_scaled_not_reinterpreted() -> None:
    samples = (tone(0.2, SAMPLE_RATE, amplitude=0.25) * 32768).astype(np.int16)
    stereo = as_stereo(to_discord_pcm(samples, SAMPLE_RATE))
    assert np.abs(stereo[: len(samples), 0] - samples).max() <= 1


def test_out_of_range_samples_are_clipped_and_the_audio_is_not_cut() -> None:
    loud = np.full(SAMPLE_RATE // 10 + 7, 3.0, dtype=np.float32)  # 100 ms + 7 samples, far above full scale
    pcm = to_discord_pcm(loud, SAMPLE_RATE)
    stereo = as_stereo(pcm)
    assert stereo[: len(loud)].min() == 32767  # clipped, not wrapped to negative
    assert len(pcm) == 6 * FRAME_BYTES  # the 7 extra samples start a sixth frame
    assert not stereo[len(loud) :].any()  # completed with silence


def test_more_than_two_channels_are_mixed_down() -> None:
    quad = np.stack([tone(0.1, SAMPLE_RATE)] * 4, axis=1)
    stereo = as_stereo(to_discord_pcm(quad, SAMPLE_RATE))
    assert np.array_equal(stereo[:, 0], stereo[:, 1])
    assert np.abs(stereo).max() > 10_000


def test_empty_input_gives_no_pcm() -> None:
    assert to_discord_pcm(np.zeros(0, dtype=np.float32), 22_050) == b""
    assert list(iter_frames(b"")) == []


@pytest.mark.parametrize(
    ("samples", "rate"),
    [
        (np.zeros((2, 2, 2), dtype=np.float32), 22_050),
        (np.zeros(10, dtype=np.int32), 22_050),
        (np.zeros(10, dtype=np.float32), 0),
    ],
)
def test_bad_input_is_refused(samples: np.ndarray, rate: int) -> None:
    with pytest.raises(ValueError):
        to_discord_pcm(samples, rate)


def test_iter_frames_yields_3840_byte_frames_and_pads_the_last() -> None:
    pcm = bytes(range(256)) * 40  # 10,240 bytes: two frames and 2,560 bytes
    frames = list(iter_frames(pcm))
    assert [len(frame) for frame in frames] == [FRAME_BYTES] * 3
    assert b"".join(frames)[: len(pcm)] == pcm
    assert frames[-1][len(pcm) - 2 * FRAME_BYTES :] == bytes(3 * FRAME_BYTES - len(pcm))


def test_pcm_duration() -> None:
    assert pcm_duration_s(bytes(BYTES_PER_SECOND)) == 1.0
    assert pcm_duration_s(bytes(FRAME_BYTES)) == pytest.approx(FRAME_S)


def test_to_mono_16k_for_speech_recognition() -> None:
    pcm = to_discord_pcm(tone(1.0, SAMPLE_RATE, hz=500.0), SAMPLE_RATE)
    mono = to_mono_16k(pcm)
    assert mono.dtype == np.float32 and mono.ndim == 1
    assert len(mono) == 16_000
    assert abs(peak_hz(mono, 16_000) - 500.0) < 2.0
    assert np.abs(mono).max() == pytest.approx(0.5, rel=0.05)
    assert len(to_mono_16k(b"")) == 0
    with pytest.raises(ValueError):
        to_mono_16k(b"\x00" * 6)


def test_rms_is_relative_to_full_scale() -> None:
    assert rms(b"") == 0.0
    assert rms(bytes(FRAME_BYTES)) == 0.0
    assert rms(to_discord_pcm(tone(1.0, SAMPLE_RATE, amplitude=0.5), SAMPLE_RATE)) == pytest.approx(0.5 / 2**0.5, 0.01)
    assert rms(np.full(100, -32768, dtype="<i2").tobytes()) == 1.0
