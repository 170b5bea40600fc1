"""Speech to text: faster-whisper on a tiny random-weight model, PocketSphinx on speech and noise, the fallback.

The Whisper model is built offline by tests/fixtures/make_tiny_whisper.py (CTranslate2 spec API, random weights):
it cannot hear, but it runs the real ``WhisperModel`` load and ``transcribe`` path, and its segments have known
statistics (no_speech_prob ~0.06, avg_logprob ~-4.5), so the gate can be tested both ways.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from config import Settings
from services.audio import STT_SAMPLE_RATE, to_discord_pcm, to_mono_16k
from services.stt import (
    FallbackTranscriber,
    FasterWhisperTranscriber,
    PocketsphinxTranscriber,
    SpeechModelMissing,
    SpeechRecognitionError,
    Transcript,
    create_transcriber,
)
from services.tts import EspeakSynthesizer
from tests.fixtures.make_tiny_whisper import Size, make_model

TINY = Size(dim=32, layers=1, heads=2)
ALSA_DIR = Path(__file__).resolve().parents[2] / "shared" / "speech" / "alsa"
ACCEPT_ALL = {"max_no_speech_prob": 1.0, "min_avg_logprob": -10.0}


def speak(text: str, words_per_minute: int = 175) -> np.ndarray:
    """``text`` read by espeak-ng, as the bot would receive it: Discord PCM turned into 16 kHz mono float32."""
    samples, rate = EspeakSynthesizer("en-us", words_per_minute=words_per_minute).synthesize_raw(text)
    return to_mono_16k(to_discord_pcm(samples, rate))


def read_alsa(path: Path) -> np.ndarray:
    """A 48 kHz mono s16 recording, through Discord's format (48 kHz stereo s16le) to 16 kHz mono float32."""
    samples, rate = sf.read(path, dtype="int16", always_2d=True)
    return to_mono_16k(to_discord_pcm(samples, rate))


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sub-MB random-weight Whisper model folder (built in ~0.1 s)."""
    return make_model(tmp_path_factory.mktemp("whisper") / "tiny-random", TINY)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return speak("Hello, what time is it?")


@pytest.fixture(scope="module")
def pocketsphinx() -> Iterator[PocketsphinxTranscriber]:
    """One PocketSphinx worker process for the module (starting one takes ~0.5 s)."""
    transcriber = PocketsphinxTranscriber()
    transcriber.load()
    yield transcriber
    transcriber.close()


def whisper(model: Path, tmp_path: Path, **kwargs: float) -> FasterWhisperTranscriber:
    return FasterWhisperTranscriber(str(model), tmp_path, "int8", **kwargs)  # type: ignore[arg-type]


# --- the random-weight model -------------------------------------------------------------------------------------


def test_tiny_model_is_small_and_rebuilt_identically(tiny_whisper: Path, tmp_path: Path) -> None:
    again = make_model(tmp_path / "again", TINY)
    names = sorted(f.name for f in tiny_whisper.iterdir())
    assert names == ["config.json", "model.bin", "preprocessor_config.json", "tokenizer.json", "vocabulary.json"]
    assert sum((tiny_whisper / name).stat().st_size for name in names) < 1_000_000
    for name in names:
        assert (tiny_whisper / name).read_bytes() == (again / name).read_bytes(), name


# --- faster-whisper ----------------------------------------------------------------------------------------------


async def test_whisper_transcribes_through_faster_whisper(
    tiny_whisper: Path, speech: np.ndarray, tmp_path: Path
) -> None:
    transcriber = whisper(tiny_whisper, tmp_path, **ACCEPT_ALL)
    transcript = await transcriber.transcribe(speech)

    assert isinstance(transcript, Transcript)
    assert transcript.text and transcript.text == transcript.text.strip()  # random words, but words
    assert transcript.language == "en"  # an English-only model (vocabulary < 51,865) is told the language
    assert transcript.audio_s == pytest.approx(speech.size / STT_SAMPLE_RATE)
    assert 0 < transcript.transcribe_s < 10
    assert transcript.engine == "whisper:tiny-random"
    # The same text as faster-whisper's own segments with the transcriber's options: nothing else in between.
    segments, _ = transcriber.whisper.transcribe(
        speech, language="en", beam_size=transcriber.beam_size, **transcriber.decode_options
    )
    assert transcript.text == "".join(s.text for s in segments).strip()


def test_tiny_model_segments_have_the_statistics_the_gate_tests_rely_on(
    tiny_whisper: Path, speech: np.ndarray, tmp_path: Path
) -> None:
    transcriber = whisper(tiny_whisper, tmp_path, **ACCEPT_ALL)
    transcriber.load()
    segments, _ = transcriber.whisper.transcribe(speech, language="en", beam_size=5, **transcriber.decode_options)
    segments = list(segments)
    assert segments
    for segment in segments:
        assert 0.01 < segment.no_speech_prob < 0.6
        assert -10 < segment.avg_logprob < -2
        assert segment.compression_ratio < 2.4


@pytest.mark.parametrize(
    ("thresholds", "kept"),
    [
        ({"max_no_speech_prob": 1.0, "min_avg_logprob": -10.0}, True),
        ({"max_no_speech_prob": 0.01, "min_avg_logprob": -10.0}, False),  # "probably silence" segments dropped
        ({"max_no_speech_prob": 1.0, "min_avg_logprob": -2.0}, False),  # unsure guesses dropped
        ({"max_no_speech_prob": 1.0, "min_avg_logprob": -10.0, "max_compression_ratio": 0.1}, False),  # loops
        ({}, False),  # the defaults (0.6, -1.0): a model that cannot hear is as unsure as Whisper on noise
    ],
)
def test_whisper_gate(
    tiny_whisper: Path, speech: np.ndarray, tmp_path: Path, thresholds: dict[str, float], kept: bool
) -> None:
    text = whisper(tiny_whisper, tmp_path, **thresholds).transcribe_raw(speech)
    assert bool(text) is kept


def test_whisper_silence_is_cut_by_vad(tiny_whisper: Path, tmp_path: Path) -> None:
    # Even with a gate that keeps everything, Silero VAD leaves nothing for Whisper to hallucinate on.
    assert whisper(tiny_whisper, tmp_path, **ACCEPT_ALL).transcribe_raw(np.zeros(2 * STT_SAMPLE_RATE, np.float32)) == ""


async def test_empty_audio_needs_no_model(tmp_path: Path) -> None:
    transcriber = FasterWhisperTranscriber(str(tmp_path / "absent"), tmp_path)
    transcript = await transcriber.transcribe(np.zeros(0, np.float32))
    assert transcript.text == "" and transcript.audio_s == 0.0
    assert not transcriber.loaded


def test_samples_must_be_mono_float(tiny_whisper: Path, tmp_path: Path) -> None:
    transcriber = whisper(tiny_whisper, tmp_path)
    with pytest.raises(ValueError, match="shape"):
        transcriber.transcribe_raw(np.zeros((100, 2), np.float32))
    with pytest.raises(ValueError, match="float"):
        transcriber.transcribe_raw(np.zeros(100, np.int16))


def test_missing_model_offline_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    # The download is really attempted, with huggingface_hub in offline mode: no request leaves the machine.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    transcriber = FasterWhisperTranscriber("base.en", tmp_path / "models")
    with pytest.raises(SpeechModelMissing) as caught:
        transcriber.load()
    message = caught.value.user_message
    assert "`base.en`" in message and "download failed" in message
    assert f"download_model('base.en', cache_dir='{tmp_path / 'models'}')" in message
    assert "WHISPER_MODEL" in message
    assert not transcriber.loaded


def test_missing_model_without_download(tmp_path: Path) -> None:
    with pytest.raises(SpeechModelMissing, match=r"not in .*download it with"):
        FasterWhisperTranscriber("tiny.en", tmp_path, allow_download=False).load()


def test_model_folder_without_model(tmp_path: Path) -> None:
    with pytest.raises(SpeechModelMissing, match="model.bin does not exist"):
        FasterWhisperTranscriber(str(tmp_path / "nowhere"), tmp_path).load()


def test_broken_model_file(tiny_whisper: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in tiny_whisper.iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    (broken / "model.bin").write_bytes(b"not a model")
    with pytest.raises(SpeechRecognitionError, match="could not be loaded"):
        FasterWhisperTranscriber(str(broken), tmp_path).load()


# --- PocketSphinx ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words_per_minute", "expected"),
    [
        ("rear right", 150, {"right"}),
        ("what is the weather like today", 120, {"weather", "whether"}),  # homophones: both heard the word
    ],
)
async def test_pocketsphinx_on_synthesized_speech(
    pocketsphinx: PocketsphinxTranscriber, text: str, words_per_minute: int, expected: set[str]
) -> None:
    # espeak-ng's formant voice is hard for PocketSphinx's acoustic model (trained on human speech): it gets some
    # words of a phrase, not all ("front left" comes back as "you"), so the test asks for one word it does get.
    transcript = await pocketsphinx.transcribe(speak(text, words_per_minute))
    assert expected & set(transcript.text.split()), transcript.text
    assert transcript.language == "en" and transcript.engine == "pocketsphinx:en-us"


def _noises() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    n = 2 * STT_SAMPLE_RATE
    t = np.arange(n) / STT_SAMPLE_RATE
    clicks = np.zeros(n)
    for start in rng.integers(0, n - 400, 20):
        clicks[start : start + 400] += rng.standard_normal(400) * np.exp(-np.arange(400) / 60) * 0.5
    brown = np.cumsum(rng.standard_normal(n))
    return {
        "silence": np.zeros(n),
        "faint hiss": rng.standard_normal(n) * 0.003,
        "white noise": rng.standard_normal(n) * 0.1,
        "loud white noise": rng.standard_normal(n) * 0.3,
        "rumble": (brown - brown.mean()) / np.abs(brown - brown.mean()).max() * 0.5,
        "keyboard clicks": clicks,
        "noise bursts": rng.standard_normal(n) * 0.2 * (np.sin(2 * np.pi * 3 * t) > 0.5),
    }


@pytest.mark.parametrize("name", sorted(_noises()))
def test_pocketsphinx_noise_gives_nothing(pocketsphinx: PocketsphinxTranscriber, name: str) -> None:
    assert pocketsphinx.transcribe_raw(_noises()[name].astype(np.float32)) == ""


@pytest.mark.skipif(not ALSA_DIR.is_dir(), reason=f"no recordings at {ALSA_DIR}")
def test_pocketsphinx_on_alsa_recordings(pocketsphinx: PocketsphinxTranscriber) -> None:
    speech_files = sorted(p for p in ALSA_DIR.glob("*.wav") if p.stem != "Noise")
    heard: dict[str, str] = {p.stem: pocketsphinx.transcribe_raw(read_alsa(p)) for p in speech_files}
    # A hit: the transcript has one of the words of the channel name ("Rear_Left" -> rear or left).
    hits = [name for name, text in heard.items() if set(name.lower().split("_")) & set(text.split())]
    print(f"\nPocketSphinx on {ALSA_DIR}: {len(hits)}/{len(heard)} channel names heard: {heard}")
    assert len(speech_files) >= 8
    assert len(hits) >= 0.75 * len(heard), heard
    assert pocketsphinx.transcribe_raw(read_alsa(ALSA_DIR / "Noise.wav")) == ""


async def test_pocketsphinx_restarts_after_its_process_dies() -> None:
    transcriber = PocketsphinxTranscriber()
    try:
        transcriber.load()
        pool = transcriber._pool
        assert pool is not None
        for process in list(pool._processes.values()):  # the worker, as a crash would leave it
            process.kill()
            process.join()
        with pytest.raises(SpeechRecognitionError, match="restart"):
            await transcriber.transcribe(speak("rear right", 150))
        assert "right" in (await transcriber.transcribe(speak("rear right", 150))).text
    finally:
        transcriber.close()


# --- the event loop ------------------------------------------------------------------------------------------------


async def test_transcription_runs_off_the_event_loop(
    tiny_whisper: Path, pocketsphinx: PocketsphinxTranscriber, tmp_path: Path
) -> None:
    # ~6 s of speech: PocketSphinx decodes it for ~1 s holding the GIL, which from a thread would freeze the loop.
    audio = np.concatenate([speak("Please tell me what the weather will be like in Paris tomorrow.")] * 2)
    engines = [pocketsphinx, whisper(tiny_whisper, tmp_path, **ACCEPT_ALL)]
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - before - 0.005)

    probe = asyncio.create_task(ticker())
    try:
        transcripts = await asyncio.gather(*(engine.transcribe(audio) for engine in engines))
    finally:
        probe.cancel()
    assert transcripts[0].transcribe_s > 0.1  # heavy enough to have been noticed on the loop
    assert len(lags) > 20
    assert max(lags) < 0.15, f"event loop stalled {max(lags) * 1000:.0f} ms"


# --- choice of engine --------------------------------------------------------------------------------------------


def test_create_transcriber_pocketsphinx() -> None:
    transcriber = create_transcriber(Settings(STT_ENGINE="pocketsphinx"))
    assert isinstance(transcriber, PocketsphinxTranscriber)
    assert not transcriber.loaded  # cheap: nothing loaded yet


def test_create_transcriber_whisper(tiny_whisper: Path, speech: np.ndarray) -> None:
    settings = Settings(STT_ENGINE="whisper", WHISPER_MODEL=str(tiny_whisper), STT_MAX_NO_SPEECH_PROB=1.0,
                        STT_MIN_AVG_LOGPROB=-10)  # fmt: skip
    transcriber = create_transcriber(settings)
    assert isinstance(transcriber, FallbackTranscriber) and transcriber.active is None
    assert isinstance(transcriber.preferred, FasterWhisperTranscriber)
    assert transcriber.preferred.compute_type == settings.WHISPER_COMPUTE_TYPE
    transcriber.load()
    assert transcriber.active is transcriber.preferred
    assert transcriber.transcribe_raw(speech)
    assert transcriber.name == "whisper:tiny-random"


async def test_create_transcriber_falls_back_to_pocketsphinx(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(STT_ENGINE="whisper", WHISPER_MODEL="base.en", MODELS_DIR=tmp_path)
    transcriber = create_transcriber(settings)
    assert isinstance(transcriber, FallbackTranscriber)
    assert isinstance(transcriber.preferred, FasterWhisperTranscriber)
    transcriber.preferred.allow_download = False  # offline, whatever the network of the machine running the tests
    try:
        with caplog.at_level(logging.WARNING, logger="services.stt"):
            transcript = await transcriber.transcribe(speak("rear right", 150))
        assert transcriber.active is transcriber.fallback
        assert transcript.engine == "pocketsphinx:en-us" and "right" in transcript.text
        warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
        assert "Transcribing with pocketsphinx:en-us instead of whisper:base.en" in warning.getMessage()
        assert "download_model('base.en'" in warning.getMessage()
    finally:
        transcriber.close()
