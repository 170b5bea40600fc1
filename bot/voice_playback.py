"""Playback of synthesized speech: an AudioSource fed sentence by sentence from another thread.

discord.py's player thread calls ``read()`` every 20 ms. Synthesis runs elsewhere and pushes 20 ms frames
as each sentence is ready, so playback starts with the first sentence instead of after the whole text.
If the next sentence is not ready in time, the source plays silence rather than stalling the player
(a late ``read()`` makes discord.py send the frames that follow in a burst to catch up).
"""

from __future__ import annotations

import queue
import threading

import discord

from services.speech.audio import FRAME_BYTES, iter_frames

SILENCE = b"\x00" * FRAME_BYTES
READ_WAIT_S = 0.012  # how long read() waits for a frame before playing silence (frames are 20 ms apart)


class StreamingPCMSource(discord.AudioSource):
    """A PCM source (48 kHz stereo s16le, 3840-byte frames) fed by ``feed`` and ended by ``finish``.

    Thread-safe: ``feed``/``finish``/``cancel`` may be called from any thread while the player reads.
    ``frames_played`` counts the frames of speech (not silence) handed to the player.
    """

    def __init__(self) -> None:
        self._frames: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._finished = threading.Event()
        self._cancelled = threading.Event()
        self.frames_played = 0

    def feed(self, pcm: bytes) -> None:
        """Queue ``pcm`` (48 kHz stereo s16le; a partial last frame is zero-padded) for playback."""
        for frame in iter_frames(pcm):
            self._frames.put(frame)

    def finish(self) -> None:
        """No more audio will be fed: playback ends once the queued frames are played."""
        self._finished.set()

    def cancel(self) -> None:
        """Stop at the next read, dropping what is queued."""
        self._cancelled.set()
        self._finished.set()

    def empty_and_finished(self) -> bool:
        """True when nothing is queued and nothing more will come."""
        return self._finished.is_set() and self._frames.empty()

    def read(self) -> bytes:
        if self._cancelled.is_set():
            return b""
        try:
            frame = self._frames.get(timeout=READ_WAIT_S)
        except queue.Empty:
            return b"" if self.empty_and_finished() else SILENCE
        self.frames_played += 1
        return frame

    def is_opus(self) -> bool:
        return False
