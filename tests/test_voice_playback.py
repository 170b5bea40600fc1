"""The streaming playback source: frames in order, silence while starved, ends when finished or cancelled."""

import threading

from bot.voice_playback import SILENCE, StreamingPCMSource
from services.speech.audio import FRAME_BYTES


def test_plays_fed_frames_then_ends_after_finish():
    source = StreamingPCMSource()
    source.feed(b"\x01\x00" * (FRAME_BYTES // 2) + b"\x02\x00" * 10)  # one frame and a partial one
    source.finish()
    first, second = source.read(), source.read()
    assert first == b"\x01\x00" * (FRAME_BYTES // 2)
    assert len(second) == FRAME_BYTES and second.startswith(b"\x02\x00" * 10) and second.endswith(b"\x00" * 100)
    assert source.read() == b""
    assert source.frames_played == 2


def test_plays_silence_while_the_next_sentence_is_synthesized():
    source = StreamingPCMSource()
    assert source.read() == SILENCE  # starved but not finished: keep the stream alive
    assert source.frames_played == 0
    feeder = threading.Timer(0.005, source.feed, args=(b"\x05" * FRAME_BYTES,))
    feeder.start()
    frames = [source.read() for _ in range(3)]
    feeder.join()
    assert b"\x05" * FRAME_BYTES in frames


def test_cancel_ends_at_the_next_read_and_drops_the_rest():
    source = StreamingPCMSource()
    source.feed(b"\x07" * FRAME_BYTES * 50)
    source.read()
    source.cancel()
    assert source.read() == b""
    assert source.frames_played == 1
