"""Noise for spoken test sets: a member's speech as a real microphone would carry it, with background hiss."""

from __future__ import annotations

import numpy as np


def mix_noise(samples: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """``samples`` (mono float32 in [-1, 1], any sample rate) plus white Gaussian noise at ``snr_db`` decibels below
    the speech's power (20 dB: a quiet room; 10 dB: a noisy one). Same ``seed``, same noise. Returns float32 in
    [-1, 1], same shape. Raises ValueError for silent input (no power to measure the ratio against)."""
    speech = np.asarray(samples, dtype=np.float32)
    power = float(np.mean(np.square(speech[np.abs(speech) > 1e-4]))) if np.any(np.abs(speech) > 1e-4) else 0.0
    if power == 0.0:
        raise ValueError("cannot mix noise at a signal-to-noise ratio into silence")
    noise = np.random.default_rng(seed).normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), speech.shape)
    return np.clip(speech + noise, -1.0, 1.0).astype(np.float32)
