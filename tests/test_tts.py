"""Speech synthesis: services/tts.py with the tiny Piper voice (tests/fixtures/piper) and the real espeak-ng."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import piper
import piper.download_voices
import pytest

from config import load_settings
from services.audio import FRAME_BYTES, FRAME_MS, rms
from services.speech_text import split_sentences
from services.tts import (
    EspeakSynthesizer,
    FallbackSynthesizer,
    PiperSynthesizer,
    SpeechAudio,
    SpeechSynthesisError,
    VoiceModelMissing,
    create_synthesizer,
)
from tests.fixtures import make_tiny_piper_voice as tiny
from tests.support.loop_lag import LoopLagProbe

VOICES = Path(__file__).parent / "fixtures" / "piper"
TINY = tiny.VOICE_NAME
DOWNLOADABLE = "en_US-tiny-test"  # piper.download_voices only fetches <language>-<name>-<quality> names
FRAME_S = FRAME_MS / 1000
REFUSED_URL = "http://127.0.0.1:9/{lang_code}-{voice_name}-{voice_quality}{extension}"  # discard port: refused


def expected_tiny_seconds(text: str) -> float:
    """What the tiny voice outputs for ``text``: 256 samples at 22,050 Hz per phoneme id, every sentence."""
    voice = piper.PiperVoice.load(VOICES / f"{TINY}.onnx")
    ids = sum(len(voice.phonemes_to_ids(phonemes)) for phonemes in voice.phonemize(text))
    return ids * tiny.SAMPLES_PER_ID / tiny.SAMPLE_RATE


def assert_speech(audio: SpeechAudio) -> None:
    assert len(audio.pcm) % FRAME_BYTES == 0 and audio.pcm
    assert rms(audio.pcm) > 0.05, "speech should not be silent"
    assert audio.synth_seconds > 0


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Voice downloads go to a loopback port that refuses connections (never to the network)."""
    monkeypatch.setattr(piper.download_voices, "URL_FORMAT", REFUSED_URL)


@pytest.fixture
def voice_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A loopback HTTP server standing in for the Piper voice repository; yields the folder it serves."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/{{lang_code}}-{{voice_name}}-{{voice_quality}}{{extension}}"
    monkeypatch.setattr(piper.download_voices, "URL_FORMAT", url)
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- the tiny voice fixture --------------------------------------------------------------------------------------


def test_tiny_voice_files_are_small_and_match_their_script() -> None:
    model, config = VOICES / f"{TINY}.onnx", VOICES / f"{TINY}.onnx.json"
    assert model.stat().st_size < 8_000 and config.stat().st_size < 8_000
    assert model.read_bytes() == tiny.build_model().SerializeToString()
    assert json.loads(config.read_text(encoding="utf-8")) == json.loads(json.dumps(tiny.build_config()))


def test_tiny_voice_has_pipers_signature_and_loads_with_piper() -> None:
    voice = piper.PiperVoice.load(VOICES / f"{TINY}.onnx")
    inputs = {i.name: (i.type, i.shape) for i in voice.session.get_inputs()}
    assert inputs == {
        "input": ("tensor(int64)", [1, "phonemes"]),
        "input_lengths": ("tensor(int64)", [1]),
        "scales": ("tensor(float)", [3]),
    }
    [output] = voice.session.get_outputs()
    assert (output.name, output.type, output.shape) == ("output", "tensor(float)", [1, 1, "time"])
    ids = [1, 0, 20, 0, 18, 0, 2]
    audio = voice.phoneme_ids_to_audio(ids)
    assert audio.shape == (len(ids) * tiny.SAMPLES_PER_ID,)
    assert np.abs(audio).max() == pytest.approx(tiny.AMPLITUDE, rel=0.01)


# --- Piper ---------------------------------------------------------------------------------------------------------


async def test_piper_speaks_what_the_model_outputs() -> None:
    synth = PiperSynthesizer(TINY, VOICES)
    text = "Hello **world**. This is a test of the tiny voice!"
    audio = await synth.synthesize(text)
    assert audio.text == "Hello world. This is a test of the tiny voice!"
    assert_speech(audio)
    expected = expected_tiny_seconds(audio.text)
    assert expected <= audio.duration_s < expected + FRAME_S
    samples, rate = synth.synthesize_raw(audio.text)
    assert rate == tiny.SAMPLE_RATE and samples.dtype == np.float32
    assert len(samples) == round(expected * rate)


async def test_piper_streams_one_piece_per_sentence() -> None:
    synth = PiperSynthesizer(str(VOICES / f"{TINY}.onnx"), Path("unused"))  # a path, not a name
    text = "First sentence here. Second one, a bit longer than the first! Third?"
    pieces = [audio async for audio in synth.stream(text)]
    assert [piece.text for piece in pieces] == split_sentences(text)
    for piece in pieces:
        assert_speech(piece)
        expected = expected_tiny_seconds(piece.text)
        assert expected <= piece.duration_s < expected + FRAME_S


async def test_closing_a_stream_early_drops_the_rest() -> None:
    stream = PiperSynthesizer(TINY, VOICES).stream("One. Two. Three. Four.")
    first = await anext(stream)
    await stream.aclose()  # e.g. /stop while the second sentence is being synthesised
    assert first.text == "One."
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_nothing_to_say_gives_empty_audio_without_loading() -> None:
    synth = PiperSynthesizer("en_US-absent-medium", Path("nowhere"))
    assert await synth.synthesize("  ** **  ") == SpeechAudio(b"", "", 0.0)
    assert [audio async for audio in synth.stream("\n\n")] == []
    assert not synth.loaded


def test_load_is_idempotent_and_thread_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real_load = piper.PiperVoice.load

    def counting_load(model_path: Path, *args: object, **kwargs: object) -> piper.PiperVoice:
        calls.append(model_path)
        return real_load(model_path, *args, **kwargs)

    monkeypatch.setattr(piper.PiperVoice, "load", staticmethod(counting_load))
    synth = PiperSynthesizer(TINY, VOICES)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: synth.load(), range(16)))
    synth.load()
    assert len(calls) == 1 and synth.loaded and synth.sample_rate == tiny.SAMPLE_RATE


def test_missing_voice_offline_names_the_download_command(offline: None, tmp_path: Path) -> None:
    synth = PiperSynthesizer("en_US-lessac-medium", tmp_path / "models")
    with pytest.raises(VoiceModelMissing) as caught:
        synth.load()
    command = f"python -m piper.download_voices en_US-lessac-medium --data-dir {tmp_path / 'models'}"
    assert caught.value.command == command
    assert command in caught.value.user_message
    assert not synth.loaded
    assert [path.name for path in (tmp_path / "models").iterdir()] == []  # no partial files left behind


def test_missing_voice_file_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(VoiceModelMissing, match="does not exist"):
        PiperSynthesizer(str(tmp_path / "en_US-mine-medium.onnx"), tmp_path).load()


def test_bad_voice_name_is_reported(offline: None, tmp_path: Path) -> None:
    with pytest.raises(VoiceModelMissing, match="did not match pattern"):
        PiperSynthesizer("lessac", tmp_path).load()


def test_missing_voice_is_downloaded_into_models_dir(voice_server: Path, tmp_path: Path) -> None:
    for suffix in (".onnx", ".onnx.json"):  # served under a downloadable <language>-<name>-<quality> name
        shutil.copy(VOICES / f"{TINY}{suffix}", voice_server / f"{DOWNLOADABLE}{suffix}")
    models = tmp_path / "models"
    synth = PiperSynthesizer(DOWNLOADABLE, models)
    synth.load()
    assert sorted(path.name for path in models.iterdir()) == [f"{DOWNLOADABLE}.onnx", f"{DOWNLOADABLE}.onnx.json"]
    samples, _ = synth.synthesize_raw("Downloaded.")
    assert np.abs(samples).max() > 0.5


def test_a_half_finished_download_leaves_nothing(voice_server: Path, tmp_path: Path) -> None:
    shutil.copy(VOICES / f"{TINY}.onnx", voice_server / f"{DOWNLOADABLE}.onnx")  # the config is missing: HTTP 404
    models = tmp_path / "models"
    with pytest.raises(VoiceModelMissing, match="404"):
        PiperSynthesizer(DOWNLOADABLE, models).load()
    assert list(models.iterdir()) == []


def test_broken_voice_file_is_a_synthesis_error(tmp_path: Path) -> None:
    (tmp_path / f"{TINY}.onnx").write_bytes(b"not a model")
    shutil.copy(VOICES / f"{TINY}.onnx.json", tmp_path)
    with pytest.raises(SpeechSynthesisError, match="could not be loaded") as caught:
        PiperSynthesizer(TINY, tmp_path).load()
    assert not isinstance(caught.value, VoiceModelMissing)


# --- espeak-ng -----------------------------------------------------------------------------------------------------


async def test_espeak_speaks_longer_for_longer_text() -> None:
    synth = EspeakSynthesizer("en-us")
    short = await synth.synthesize("Hello there.")
    long = await synth.synthesize("Hello there. This sentence is a good deal longer than the first one, by far.")
    assert_speech(short)
    assert_speech(long)
    assert 0.4 < short.duration_s < 3.0
    assert long.duration_s > 2.5 * short.duration_s
    assert synth.sample_rate == 22_050


async def test_espeak_streams_one_piece_per_sentence() -> None:
    text = "One sentence. And another one!"
    pieces = [audio async for audio in EspeakSynthesizer().stream(text)]
    assert [piece.text for piece in pieces] == ["One sentence.", "And another one!"]
    for piece in pieces:
        assert_speech(piece)


async def test_espeak_is_consistent_under_concurrency_and_beside_piper() -> None:
    # espeak-ng is one global state behind a lock; Piper's phonemizer links a separate copy of it.
    espeak, piper_voice = EspeakSynthesizer("en-us"), PiperSynthesizer(TINY, VOICES)
    texts = ["Alpha beta gamma.", "A different and rather longer sentence to say.", "Short."]
    alone = [(await espeak.synthesize(text)).duration_s for text in texts]
    mixed = await asyncio.gather(*(espeak.synthesize(text) for text in texts * 3), piper_voice.synthesize("Mixed."))
    # espeak-ng's output varies by a few samples from call to call, so compare durations, not bytes: each text
    # got its own audio, none was cut or mixed with another.
    assert [audio.duration_s for audio in mixed[:-1]] == pytest.approx(alone * 3, abs=0.05)
    assert [audio.text for audio in mixed[:-1]] == texts * 3
    assert_speech(mixed[-1])


def test_unknown_espeak_voice_is_reported() -> None:
    with pytest.raises(SpeechSynthesisError, match="ESPEAK_VOICE"):
        EspeakSynthesizer("xx-nonexistent").load()


# --- engine choice -------------------------------------------------------------------------------------------------


def test_create_synthesizer_loads_nothing_until_asked() -> None:
    synth = create_synthesizer(load_settings(TTS_ENGINE="piper", PIPER_VOICE="en_US-absent-medium"))
    assert isinstance(synth, FallbackSynthesizer) and not synth.loaded and synth.active is None
    assert not synth.preferred.loaded and not synth.fallback.loaded


def test_create_synthesizer_uses_piper_when_the_voice_loads() -> None:
    synth = create_synthesizer(load_settings(TTS_ENGINE="piper", PIPER_VOICE=str(VOICES / f"{TINY}.onnx")))
    synth.load()
    assert isinstance(synth, FallbackSynthesizer) and isinstance(synth.active, PiperSynthesizer)
    assert synth.name == f"piper:{TINY}" and synth.sample_rate == tiny.SAMPLE_RATE


async def test_create_synthesizer_falls_back_to_espeak_with_a_warning(
    offline: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(TTS_ENGINE="piper", PIPER_VOICE="en_US-lessac-medium", MODELS_DIR=tmp_path)
    synth = create_synthesizer(settings)
    with caplog.at_level(logging.WARNING, logger="services.tts"):
        audio = await synth.synthesize("Still speaking.")  # loads, in a thread
        await synth.synthesize("Again.")  # decided once: no second attempt, no second warning
    assert isinstance(synth, FallbackSynthesizer) and isinstance(synth.active, EspeakSynthesizer)
    assert synth.name == "espeak:en-us" and synth.sample_rate == 22_050
    assert_speech(audio)
    [warning] = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert "espeak" in warning.getMessage()
    assert f"python -m piper.download_voices en_US-lessac-medium --data-dir {tmp_path}" in warning.getMessage()


def test_create_synthesizer_falls_back_from_a_broken_voice(tmp_path: Path) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    shutil.copy(VOICES / f"{TINY}.onnx.json", tmp_path / "broken.onnx.json")
    synth = create_synthesizer(load_settings(TTS_ENGINE="piper", PIPER_VOICE=str(tmp_path / "broken.onnx")))
    synth.load()
    assert isinstance(synth, FallbackSynthesizer) and isinstance(synth.active, EspeakSynthesizer)


def test_create_synthesizer_espeak_engine() -> None:
    synth = create_synthesizer(load_settings(TTS_ENGINE="espeak", ESPEAK_VOICE="en"))
    assert isinstance(synth, EspeakSynthesizer) and synth.voice == "en"
    synth.load()
    assert synth.sample_rate == 22_050


# --- the event loop ------------------------------------------------------------------------------------------------


async def test_synthesis_does_not_block_the_event_loop() -> None:
    text = " ".join(f"This is sentence number {n} of a long answer, read aloud to the channel." for n in range(12))
    probe = LoopLagProbe()
    probe.start()
    try:
        espeak_audio = await EspeakSynthesizer().synthesize(text)
        piper_pieces = [audio async for audio in PiperSynthesizer(TINY, VOICES).stream(text)]
    finally:
        lag = probe.stop()
    assert espeak_audio.duration_s > 20 and len(piper_pieces) == 12
    assert lag["ticks"] > 5
    assert lag["max"] < 250, f"event loop blocked for {lag['max']} ms"
