"""PCM and timing helpers for the voice receive and endpointing tests (48 kHz stereo s16le, 20 ms frames)."""

from __future__ import annotations

import asyncio

import numpy as np

FRAME_S = 0.02
FRAME_BYTES = 3840  # 20 ms of 48 kHz stereo s16le


def tone_pcm(n_frames: int, freq: float = 440.0, amplitude: float = 0.3) -> list[bytes]:
    """``n_frames`` 20 ms frames of a sine, 48 kHz stereo s16le."""
    t = np.arange(n_frames * 960) / 48_000
    mono = amplitude * np.sin(2 * np.pi * freq * t)
    pcm = (np.repeat(mono[:, None], 2, axis=1) * 32767).astype("<i2").tobytes()
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


class Clock:
    """A monotonic clock the test moves by hand (``t``, seconds)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def settle() -> None:
    """Let callbacks scheduled with call_soon_threadsafe (and the tasks they start) run."""
    for _ in range(5):
        await asyncio.sleep(0)


def drain(queue: asyncio.Queue) -> list:
    """Everything waiting in ``queue`` now, oldest first."""
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
