"""Speech synthesis: text in, Discord-ready PCM out, sentence by sentence.

Two engines behind one ``Synthesizer`` interface:

- ``PiperSynthesizer``: Piper (VITS voices exported to ONNX, run by onnxruntime on the CPU), the natural-sounding
  default. A voice is a ``NAME.onnx`` model plus its ``NAME.onnx.json`` config; missing ones are downloaded into
  ``MODELS_DIR`` when the network allows (``piper.download_voices``), else ``VoiceModelMissing`` says how to get it.
- ``EspeakSynthesizer``: espeak-ng (formant synthesis), robotic but needing no download: the library and its data
  ship inside the ``espeakng-loader`` wheel.

``create_synthesizer`` prefers Piper and falls back to espeak-ng with a logged warning when the voice cannot be had.
Models load once, lazily, in a worker thread; ``synthesize`` and ``stream`` never block the event loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import tempfile
import threading
import time
from abc import abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.error import HTTPError, URLError

import numpy as np

from services.audio import pcm_duration_s, to_discord_pcm
from services.errors import ServiceError
from services.lazy_model import LazyModel
from services.speech_text import prepare_for_speech, split_sentences

if TYPE_CHECKING:
    from config import Settings

log = logging.getLogger(__name__)


class SpeechSynthesisError(ServiceError):
    """The speech engine cannot start or cannot say the text (library missing, unknown voice, broken model)."""


class VoiceModelMissing(SpeechSynthesisError):
    """The Piper voice files are not on disk and could not be downloaded; the message gives the command to run."""

    def __init__(self, voice: str, models_dir: Path, reason: str) -> None:
        self.voice = voice
        self.models_dir = models_dir
        self.command = f"python -m piper.download_voices {voice} --data-dir {models_dir}"
        super().__init__(
            f"The Piper voice `{voice}` is not available ({reason}); download it with "
            f"`{self.command}` on a machine with internet access, or set PIPER_VOICE to the path of an .onnx voice."
        )


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    """One piece of synthesised speech, ready for playback.

    pcm: 48 kHz stereo s16le, a whole number of 20 ms frames (a multiple of 3840 bytes); b"" for nothing to say.
    text: the text that was spoken (after ``prepare_for_speech``).
    synth_seconds: wall-clock seconds spent synthesising and resampling it (model loading excluded).
    """

    pcm: bytes
    text: str
    synth_seconds: float

    @property
    def duration_s(self) -> float:
        """Length of ``pcm`` in seconds."""
        return pcm_duration_s(self.pcm)


class Synthesizer(LazyModel):
    """A text-to-speech engine. ``load`` and ``synthesize_raw`` block; ``synthesize`` and ``stream`` do not.

    Subclasses implement ``_load`` (run once, under a lock), ``_synthesize_raw`` and ``sample_rate``.
    """

    kind = "speech voice"

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Native rate of ``synthesize_raw``'s samples, in Hz. Raises RuntimeError before ``load``."""

    def synthesize_raw(self, text: str) -> tuple[np.ndarray, int]:
        """Synthesise ``text`` as given (blocking; loads the voice first if needed).

        Returns (samples, sample_rate): float32 mono, shape (n,), values in [-1, 1], at ``sample_rate`` Hz.
        Raises SpeechSynthesisError.
        """
        self.load()
        return self._synthesize_raw(text), self.sample_rate

    async def synthesize(self, text: str) -> SpeechAudio:
        """Speak the whole of ``text`` (Markdown and mentions rewritten by ``prepare_for_speech``) in one piece.

        Loading, synthesis and resampling run in a worker thread. Returns an empty SpeechAudio (without loading
        anything) when nothing is left to say. Raises SpeechSynthesisError.
        """
        prepared = prepare_for_speech(text)
        if not prepared:
            return SpeechAudio(b"", "", 0.0)
        return await asyncio.to_thread(self._speak, prepared)

    async def stream(self, text: str) -> AsyncIterator[SpeechAudio]:
        """Speak ``text`` sentence by sentence: one SpeechAudio per sentence of ``split_sentences``, in order.

        Playback can start after the first sentence; the next sentence is synthesised while the caller plays the
        current one. Closing the generator early drops the sentence being prepared. Raises SpeechSynthesisError.
        """
        sentences = split_sentences(prepare_for_speech(text))
        if not sentences:
            return
        pending = asyncio.ensure_future(asyncio.to_thread(self._speak, sentences[0]))
        try:
            for following in [*sentences[1:], None]:
                audio = await pending
                if following is not None:
                    pending = asyncio.ensure_future(asyncio.to_thread(self._speak, following))
                yield audio
        finally:
            # The worker thread finishes its sentence regardless; only its result is dropped.
            pending.cancel()

    def _speak(self, text: str) -> SpeechAudio:
        """Blocking: load if needed, synthesise ``text`` and convert it to Discord PCM."""
        self.load()
        started = time.perf_counter()
        samples, rate = self.synthesize_raw(text)
        pcm = to_discord_pcm(samples, rate)
        return SpeechAudio(pcm, text, time.perf_counter() - started)

    @abstractmethod
    def _synthesize_raw(self, text: str) -> np.ndarray:
        """float32 mono samples in [-1, 1] at ``sample_rate`` for ``text`` (the engine is loaded)."""


# --- Piper -------------------------------------------------------------------------------------------------------


class PiperSynthesizer(Synthesizer):
    """Piper TTS with one voice.

    voice: a voice name such as "en_US-lessac-medium" (looked up as ``models_dir/NAME.onnx`` + ``.onnx.json``,
        downloaded there when missing and the network allows), or a path to an ``.onnx`` file (its config is the
        same path + ``.json``; never downloaded).
    models_dir: folder of downloaded voices (Settings.MODELS_DIR).
    """

    def __init__(self, voice: str, models_dir: Path) -> None:
        super().__init__(f"piper:{Path(voice).stem if _is_path(voice) else voice}")
        self.voice = voice
        self.models_dir = Path(models_dir)
        self._voice: Any = None  # piper.PiperVoice, imported lazily (onnxruntime is slow to import)

    @property
    def model_path(self) -> Path:
        """The .onnx file of the voice (which may not exist yet)."""
        return Path(self.voice) if _is_path(self.voice) else self.models_dir / f"{self.voice}.onnx"

    @property
    def sample_rate(self) -> int:
        if self._voice is None:
            raise RuntimeError(f"{self.name} is not loaded")
        return int(self._voice.config.sample_rate)

    def _load(self) -> None:
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
        from piper import PiperVoice

        model_path = self.model_path
        config_path = model_path.with_name(model_path.name + ".json")
        if not (model_path.is_file() and config_path.is_file()):
            if _is_path(self.voice):
                missing = model_path if not model_path.is_file() else config_path
                raise VoiceModelMissing(model_path.stem, model_path.parent, f"{missing} does not exist")
            self._download()
        # A broken config raises ValueError/KeyError/TypeError; onnxruntime reports a broken or incompatible model
        # with its own exception types, which are not RuntimeError subclasses.
        errors = (OSError, ValueError, KeyError, TypeError, ort_errors.Fail, ort_errors.InvalidProtobuf,
                  ort_errors.InvalidGraph, ort_errors.NoSuchFile, ort_errors.RuntimeException)  # fmt: skip
        try:
            self._voice = PiperVoice.load(model_path, config_path=config_path)
        except errors as exc:
            raise SpeechSynthesisError(
                f"The Piper voice file {model_path} could not be loaded ({type(exc).__name__}: {exc}); delete it "
                f"and its .onnx.json, then download it again with `python -m piper.download_voices "
                f"{model_path.stem} --data-dir {model_path.parent}`."
            ) from exc

    def _download(self) -> None:
        """Fetch the voice into ``models_dir``, all or nothing; raises VoiceModelMissing when it cannot."""
        from piper.download_voices import download_voice

        log.info("Piper voice %s is not in %s; trying to download it", self.voice, self.models_dir)
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
            # Download into a private folder, then move into place: an interrupted download would otherwise leave a
            # truncated .onnx that piper.download_voices takes as present and never fetches again.
            with tempfile.TemporaryDirectory(dir=self.models_dir, prefix=".download-") as staging:
                download_voice(self.voice, Path(staging))
                for suffix in (".onnx", ".onnx.json"):
                    os.replace(Path(staging) / f"{self.voice}{suffix}", self.models_dir / f"{self.voice}{suffix}")
        except ValueError as exc:  # not a <language>-<name>-<quality> voice name
            raise VoiceModelMissing(self.voice, self.models_dir, str(exc)) from exc
        except OSError as exc:  # URLError, HTTPError, timeouts, disk errors
            # URLError's own text wraps the reason in "<urlopen error ...>"; HTTPError's text has the status code.
            reason = exc.reason if isinstance(exc, URLError) and not isinstance(exc, HTTPError) else exc
            raise VoiceModelMissing(self.voice, self.models_dir, f"download failed: {reason}") from exc
        log.info("Downloaded Piper voice %s into %s", self.voice, self.models_dir)

    def _synthesize_raw(self, text: str) -> np.ndarray:
        # PiperVoice.synthesize yields one normalised float32 chunk per sentence (its espeak phonemizer has its own
        # lock; an onnxruntime session may be run from several threads at once).
        chunks = [chunk.audio_float_array for chunk in self._voice.synthesize(text)]
        return np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, dtype=np.float32)


def _is_path(voice: str) -> bool:
    """Whether PIPER_VOICE names a file rather than a downloadable voice."""
    return voice.endswith(".onnx") or os.sep in voice or "/" in voice


# --- espeak-ng ---------------------------------------------------------------------------------------------------

# Values from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: synthesise inside espeak_Synth, samples to the callback
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # a sentence pause at the end of the text
_POS_CHARACTER = 1
_RATE = 1  # espeak_PARAMETER espeakRATE, words per minute
_EE_OK = 0
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _EspeakLibrary:
    """The process-wide espeak-ng library from the espeakng-loader wheel.

    espeak-ng keeps global state (current voice, rate, synth callback), so every call goes through ``lock``.
    (Piper's phonemizer links its own static copy of espeak-ng: the two do not share state.)
    """

    _instance: _EspeakLibrary | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        self.lock = threading.Lock()
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = espeakng_loader.get_data_path()
        except (OSError, RuntimeError) as exc:
            raise SpeechSynthesisError(
                f"espeak-ng could not be loaded ({exc}); reinstall it with `pip install --force-reinstall "
                "espeakng-loader`."
            ) from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        self.sample_rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if self.sample_rate <= 0:
            raise SpeechSynthesisError(
                f"espeak-ng could not start with its data at {data_path}; reinstall it with "
                "`pip install --force-reinstall espeakng-loader`."
            )
        self._lib = lib
        self._chunks: list[bytes] = []
        self._callback = _SYNTH_CALLBACK(self._on_samples)  # kept referenced: the library calls it later
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> _EspeakLibrary:
        """The one instance, initialised on first use (blocking, a few ms)."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def check_voice(self, voice: str) -> None:
        """Raise SpeechSynthesisError when espeak-ng has no voice called ``voice``."""
        with self.lock:
            self._set_voice(voice)

    def synthesize(self, voice: str, text: str, words_per_minute: int) -> np.ndarray:
        """int16 mono samples at ``sample_rate`` for ``text`` read by ``voice``; raises SpeechSynthesisError."""
        data = text.encode("utf-8") + b"\0"
        with self.lock:
            self._set_voice(voice)
            self._lib.espeak_SetParameter(_RATE, words_per_minute, 0)
            self._chunks = []
            status = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
            chunks, self._chunks = self._chunks, []
        if status != _EE_OK:
            raise SpeechSynthesisError(f"espeak-ng could not synthesise the text (error {status}).")
        return np.frombuffer(b"".join(chunks), dtype=np.int16)

    def _set_voice(self, voice: str) -> None:
        if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise SpeechSynthesisError(
                f"espeak-ng has no voice `{voice}`; set ESPEAK_VOICE to one it knows, such as en-us or en (British)."
            )

    def _on_samples(self, wav: Any, count: int, _events: Any) -> int:
        """Synth callback, run inside espeak_Synth (so under ``lock``): keep a copy of the samples; 0 = go on."""
        if wav and count > 0:
            self._chunks.append(ctypes.string_at(wav, count * 2))
        return 0


class EspeakSynthesizer(Synthesizer):
    """espeak-ng through its C library (ctypes, synchronous mode): no model download, 22,050 Hz mono.

    voice: an espeak-ng voice name such as "en-us" (Settings.ESPEAK_VOICE).
    words_per_minute: speaking rate (espeak-ng's default is 175).
    """

    def __init__(self, voice: str = "en-us", *, words_per_minute: int = 175) -> None:
        super().__init__(f"espeak:{voice}")
        self.voice = voice
        self.words_per_minute = words_per_minute
        self._library: _EspeakLibrary | None = None

    @property
    def sample_rate(self) -> int:
        if self._library is None:
            raise RuntimeError(f"{self.name} is not loaded")
        return self._library.sample_rate

    def _load(self) -> None:
        library = _EspeakLibrary.get()
        library.check_voice(self.voice)
        self._library = library

    def _synthesize_raw(self, text: str) -> np.ndarray:
        assert self._library is not None  # loaded by synthesize_raw
        samples = self._library.synthesize(self.voice, text, self.words_per_minute)
        return samples.astype(np.float32) / 32768.0


# --- choice of engine --------------------------------------------------------------------------------------------


class FallbackSynthesizer(Synthesizer):
    """The preferred engine when it loads, else the fallback one: chosen by ``load``, lazily, in its thread.

    This lets the bot create its synthesiser at start-up without waiting for a voice (or a download attempt) and
    decide when the voice is first needed. Until ``load`` has run, ``active`` is None and ``name`` names both.
    """

    def __init__(self, preferred: Synthesizer, fallback: Synthesizer) -> None:
        super().__init__(f"{preferred.name} (or {fallback.name})")
        self.preferred = preferred
        self.fallback = fallback
        self._active: Synthesizer | None = None

    @property
    def active(self) -> Synthesizer | None:
        """The engine in use once loaded: ``preferred``, or ``fallback`` when the preferred one failed to load."""
        return self._active

    @property
    def sample_rate(self) -> int:
        if self._active is None:
            raise RuntimeError(f"{self.name} is not loaded")
        return self._active.sample_rate

    def _load(self) -> None:
        try:
            self.preferred.load()
            self._active = self.preferred
        except SpeechSynthesisError as exc:
            log.warning("Speaking with %s instead of %s. %s", self.fallback.name, self.preferred.name, exc.user_message)
            self.fallback.load()
            self._active = self.fallback
        self.name = self._active.name

    def _synthesize_raw(self, text: str) -> np.ndarray:
        assert self._active is not None  # loaded by synthesize_raw
        samples, _ = self._active.synthesize_raw(text)
        return samples


def create_synthesizer(settings: Settings) -> Synthesizer:
    """The configured synthesiser, not loaded yet: cheap, call it anywhere; ``load`` (in a thread) does the work.

    TTS_ENGINE=piper: Piper with PIPER_VOICE (downloaded into MODELS_DIR if possible) when that voice loads, else
    espeak-ng with ESPEAK_VOICE and a logged warning that says how to get the Piper voice (a FallbackSynthesizer,
    which decides at ``load``). TTS_ENGINE=espeak: an EspeakSynthesizer.
    Its ``load`` raises SpeechSynthesisError only when espeak-ng itself cannot start (or has no ESPEAK_VOICE).
    """
    espeak = EspeakSynthesizer(settings.ESPEAK_VOICE)
    if settings.TTS_ENGINE == "espeak":
        return espeak
    return FallbackSynthesizer(PiperSynthesizer(settings.PIPER_VOICE, settings.MODELS_DIR), espeak)
