"""Speech to text: an utterance (16 kHz mono float32) in, a transcript out.

``FasterWhisperTranscriber``: Whisper run by CTranslate2 (faster-whisper) on the CPU, int8 by default. The default
model, ``tiny.en``, is installed with the bot as a Python package and checked against its published digest when
loaded (``services.speech.bundled_models``). Another model named in WHISPER_MODEL (``base.en``...) is taken from
``MODELS_DIR`` or downloaded there from the Hugging Face Hub when the network allows (``services.speech.model_hub``); a
path is used as is. When the configured model cannot be had, the bundled one listens and a warning says how to get the
named one. The model loads once, lazily, in a worker thread; ``transcribe`` never blocks the event loop: it runs in
the transcriber's own worker thread, one utterance at a time (so transcriptions queue there instead of competing for
the cores, and one that is cancelled before it starts never runs).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from services.errors import ServiceError
from services.speech.audio import STT_SAMPLE_RATE, to_mono_16k
from services.speech.bundled_models import BUNDLED_WHISPER_MODEL, bundled_whisper_model
from services.speech.lazy_model import LazyModel, ModelSource
from services.speech.model_hub import HubUnavailable, fetch
from services.speech.prompt import MAX_PROMPT_TERMS, fit_prompt
from services.speech.whisper_window import decode_in_window, repeats_itself, voiced, window_frames

if TYPE_CHECKING:
    from config import Settings

log = logging.getLogger(__name__)


class SpeechRecognitionError(ServiceError):
    """The speech recogniser cannot start (missing or broken model) or cannot transcribe the audio."""


class SpeechModelMissing(SpeechRecognitionError):
    """The Whisper model is not on disk and could not be downloaded; the message says how to get it."""

    def __init__(self, model: str, models_dir: Path, reason: str) -> None:
        self.model = model
        self.models_dir = models_dir
        self.command = (
            f"python -c \"from faster_whisper import download_model; download_model('{model}', "
            f"cache_dir='{models_dir}')\""
        )
        super().__init__(
            f"The Whisper model `{model}` is not available ({reason}); download it with `{self.command}` on a "
            f"machine with internet access (then copy {models_dir} here), or set WHISPER_MODEL to the path of a "
            "converted faster-whisper model folder."
        )


@dataclass(frozen=True, slots=True)
class Transcript:
    """What was said in one utterance.

    text: the words, stripped; "" when nothing was said (silence, noise, or only unsure guesses).
    language: ISO 639-1 code of the language heard ("en"), or None when the engine does not say.
    audio_s: length of the utterance in seconds.
    transcribe_s: wall-clock seconds spent transcribing it (model loading excluded).
    engine: name of the engine and model that transcribed it, e.g. "whisper:tiny.en".
    queued_s: wall-clock seconds the call waited for the transcriber's worker thread (behind other utterances, of
        any guild) before its work began; 0.0 when it did not wait (or was not made through ``transcribe``).
    no_speech_prob: the engine's probability, 0..1, that the audio held no speech (Whisper's <|nospeech|> token; the
        highest of the segments kept), a doubt about what it heard; None when nothing was kept or the engine does
        not say.
    """

    text: str
    language: str | None
    audio_s: float
    transcribe_s: float
    engine: str
    queued_s: float = 0.0
    no_speech_prob: float | None = None


class Recognized(NamedTuple):
    """What an engine's ``_recognize`` heard: the words (unstripped), the language code or None, and the
    no-speech probability of what was kept or None (as ``Transcript``'s fields)."""

    text: str
    language: str | None
    no_speech_prob: float | None = None


class Transcriber(LazyModel):
    """A speech-to-text engine. ``load`` and ``transcribe_raw`` block; ``transcribe`` does not.

    Subclasses implement LazyModel's loading methods, ``_recognize`` and ``close`` (to release the model).
    """

    kind = "speech recognition model"
    _worker: ThreadPoolExecutor | None = None

    def transcribe_raw(self, samples: np.ndarray, vocabulary: Sequence[str] = ()) -> str:
        """Transcribe ``samples`` (blocking; loads the model first if needed).

        samples: shape (n,), 16 kHz (STT_SAMPLE_RATE) mono, float in [-1, 1] (as ``services.speech.audio.to_mono_16k``
            returns). vocabulary: words the speaker is likely to say, most important first (the guild's names and
            document terms, ``services.knowledge.vocabulary.guild_vocabulary``); the recogniser is biased towards them,
            as many as its prompt holds. Returns the words, stripped, or "" when nothing was said; empty input gives ""
            without loading anything. Raises ValueError for another shape, SpeechRecognitionError when the engine
            fails (BundledModelError when the bundled model must be loaded and is not the published file).
        """
        return self._run(samples, vocabulary).text

    async def transcribe(self, samples: np.ndarray | bytes, vocabulary: Sequence[str] = ()) -> Transcript:
        """Transcribe ``samples`` (as ``transcribe_raw``, ``vocabulary`` included, or Discord PCM: bytes, 48 kHz
        stereo s16le, converted there) in the transcriber's worker thread, loading the model there if needed; calls
        queue for that one thread (the time waited is the transcript's ``queued_s``), and a call cancelled while
        queued never runs. The transcriber is shared by every guild: each call brings its guild's vocabulary.

        Raises ValueError for a bad shape or PCM length and SpeechRecognitionError, like ``transcribe_raw``.
        """
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="stt")
        call = functools.partial(self._timed, samples, tuple(vocabulary), time.perf_counter())
        return await asyncio.get_running_loop().run_in_executor(self._worker, call)

    def _timed(self, samples: np.ndarray | bytes, vocabulary: Sequence[str], submitted: float) -> Transcript:
        """Blocking: convert Discord PCM, load if needed, then transcribe and time it; ``submitted``: the
        ``time.perf_counter()`` when the call was handed to the worker thread."""
        queued_s = time.perf_counter() - submitted
        audio = _check_samples(to_mono_16k(samples) if isinstance(samples, bytes) else samples)
        if audio.size:
            self.load()  # outside the timing: transcribe_s is recognition only
        started = time.perf_counter()
        heard = self._run(audio, vocabulary)
        return Transcript(heard.text, heard.language, audio.size / STT_SAMPLE_RATE, time.perf_counter() - started,
                          self.name, queued_s, heard.no_speech_prob)

    def _run(self, samples: np.ndarray, vocabulary: Sequence[str]) -> Recognized:
        audio = _check_samples(samples)
        if not audio.size:
            return Recognized("", None)
        self.load()
        heard = self._recognize(audio, vocabulary)
        return heard._replace(text=heard.text.strip())

    def close(self) -> None:
        """Release the model; a later call loads it again. Blocking, idempotent."""
        with self._load_lock:
            self._loaded = False

    @abstractmethod
    def _recognize(self, samples: np.ndarray, vocabulary: Sequence[str]) -> Recognized:
        """What non-empty float32 16 kHz mono ``samples`` say (the engine is loaded), biased towards ``vocabulary``
        (may be empty)."""


def _check_samples(samples: np.ndarray) -> np.ndarray:
    """``samples`` as a contiguous float32 array of shape (n,); raises ValueError otherwise."""
    audio = np.asarray(samples)
    if audio.ndim != 1:
        raise ValueError(f"samples must have shape (n,) (16 kHz mono), got {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"samples must be float in [-1, 1], got dtype {audio.dtype}")
    return np.ascontiguousarray(audio, dtype=np.float32)


# --- faster-whisper ----------------------------------------------------------------------------------------------


class FasterWhisperTranscriber(Transcriber):
    """Whisper through faster-whisper (CTranslate2) on the CPU.

    model: "tiny.en" (BUNDLED_WHISPER_MODEL, the default: the packaged model, verified, never downloaded); another
        size name that faster-whisper knows ("base.en", "small.en"...; see ``faster_whisper.available_models()``),
        looked up in, or downloaded into, ``models_dir`` (Hugging Face cache layout:
        ``models_dir/models--Systran--faster-whisper-base.en/...``); anything else is the path of a converted model
        folder (``model.bin``, ``config.json``, ``vocabulary.*``, ``tokenizer.json``), used as is.
    models_dir: folder of downloaded models (Settings.MODELS_DIR).
    compute_type: CTranslate2 compute type: int8 (default; fastest on CPUs), int8_float32 or float32.
    max_no_speech_prob: segments whose probability of being silence (Whisper's <|nospeech|> token) is above this
        are dropped (Settings.STT_MAX_NO_SPEECH_PROB).
    min_avg_logprob: segments whose average token log-probability is below this are dropped: Whisper's guesses on
        noise are unsure (Settings.STT_MIN_AVG_LOGPROB).
    max_compression_ratio: segments whose text gzip-compresses better than this are dropped: a repetition loop,
        Whisper's typical hallucination (2.4, the threshold of openai/whisper transcribe.py).
    beam_size: 5 by default; see BEAM_SIZE.
    cpu_threads: CTranslate2 intra-op threads; 0 = its default (4, or OMP_NUM_THREADS).
    allow_download: when False a size name is only looked up in ``models_dir`` (never the network).
    fallback: when the model cannot be had (SpeechModelMissing) or loaded (SpeechRecognitionError), log a warning
        and load the bundled tiny.en instead; with False, ``load`` raises those errors.
    decode_options: keyword arguments for ``WhisperModel.transcribe`` that override the defaults of DECODE_OPTIONS
        (for benchmarks and tuning).
    max_prompt_terms: words of a transcription's vocabulary in the prompt, at most (None: as many as fit); see
        ``services.speech.prompt.MAX_PROMPT_TERMS``.
    short_window: decode speech of up to 25 s (after voice activity detection) greedily in an encoder window of its
        length plus 5 s, at least 10 s: several times faster than Whisper's 30 s window with beam search
        (``services.speech.whisper_window``); what it hears said twice in a row is decoded again the usual way. False
        (STT_SHORT_WINDOW), or ``decode_options`` of its own, decodes every utterance with faster-whisper's
        ``transcribe``.
    """

    BEAM_SIZE = 5
    """Beam search width in the 30 s window: 5, as openai/whisper's CLI and faster-whisper decode by default (more
    accurate than greedy decoding, and less prone to repetition there). The short window decodes greedily
    (``services.speech.whisper_window``)."""

    DECODE_OPTIONS: Mapping[str, Any] = {
        # Silero VAD (bundled with faster-whisper, run by onnxruntime) cuts silence and drops noise-only audio
        # before Whisper can hallucinate on it ("Thank you.", "you").
        "vad_filter": True,
        # One temperature: no sampling fallback. Fallback retries unsure segments (avg_logprob < -1) at higher
        # temperatures, up to six decodes; those are the segments the gate below drops, and a sampled retry mostly
        # turns "nothing heard" into a guess, at several times the latency. Greedy/beam at 0 is also deterministic.
        "temperature": 0.0,
        # Utterances are short (Settings.MAX_UTTERANCE_S): one 30 s window, no earlier text to condition on, and
        # conditioning is what lets a hallucination loop carry over from window to window.
        "condition_on_previous_text": False,
        # No timestamps: the bot needs the words only, and timestamp tokens cost decoding steps.
        "without_timestamps": True,
        # Our own gate (max_no_speech_prob, min_avg_logprob, max_compression_ratio) decides what is kept; leaving
        # faster-whisper's own skip on would apply a second, fixed one.
        "no_speech_threshold": None,
        "log_prob_threshold": None,
        "compression_ratio_threshold": None,
    }

    engine = "whisper"
    unavailable = SpeechRecognitionError

    def __init__(
        self,
        model: str = BUNDLED_WHISPER_MODEL,
        models_dir: Path = Path("data/models"),
        compute_type: str = "int8",
        max_no_speech_prob: float = 0.6,
        min_avg_logprob: float = -1.0,
        *,
        max_compression_ratio: float = 2.4,
        beam_size: int = BEAM_SIZE,
        cpu_threads: int = 0,
        allow_download: bool = True,
        fallback: bool = True,
        decode_options: Mapping[str, Any] | None = None,
        max_prompt_terms: int | None = MAX_PROMPT_TERMS,
        short_window: bool = True,
    ) -> None:
        # The display name only: whether `model` is a size name is settled by the load (importing faster-whisper
        # here would make creating a transcriber slow).
        super().__init__(Path(model).name if _is_path(model) else model, bundled=model == BUNDLED_WHISPER_MODEL,
                         fallback=fallback)  # fmt: skip
        self.model = model
        self.models_dir = Path(models_dir)
        self.compute_type = compute_type
        self.max_no_speech_prob = max_no_speech_prob
        self.min_avg_logprob = min_avg_logprob
        self.max_compression_ratio = max_compression_ratio
        self.beam_size = beam_size
        self.cpu_threads = cpu_threads
        self.allow_download = allow_download
        self.decode_options = {**self.DECODE_OPTIONS, **(decode_options or {})}
        self.max_prompt_terms = max_prompt_terms
        self.short_window = short_window and not decode_options
        self._whisper: Any = None  # faster_whisper.WhisperModel, imported lazily (ctranslate2 is slow to import)
        self._language: str | None = None

    @property
    def whisper(self) -> Any:
        """The loaded ``faster_whisper.WhisperModel``; raises RuntimeError before ``load``."""
        if self._whisper is None:
            raise RuntimeError(f"{self.name} is not loaded")
        return self._whisper

    def _load_configured(self) -> ModelSource:
        if self.bundled:
            return self._load_bundled()
        path = self._model_path()
        self._open(path)
        return ModelSource(Path(self.model).name if _is_path(self.model) else self.model, path)

    def _load_bundled(self) -> ModelSource:
        bundled = bundled_whisper_model()
        bundled.verify()
        self._open(bundled.path)
        return ModelSource(bundled.name, bundled.path, bundled.algorithms, bundled=True)

    def _open(self, path: Path) -> None:
        """Load the model folder ``path`` with CTranslate2 (blocking); raises SpeechRecognitionError."""
        from faster_whisper import WhisperModel

        try:
            whisper = WhisperModel(
                str(path), device="cpu", compute_type=self.compute_type, cpu_threads=self.cpu_threads
            )
        except (RuntimeError, ValueError, OSError) as exc:  # ctranslate2: unreadable/incompatible model.bin
            raise SpeechRecognitionError(
                f"The Whisper model in {path} could not be loaded ({type(exc).__name__}: {exc}); delete that folder "
                f"and download the model again, or set WHISPER_MODEL to another model."
            ) from exc
        # English-only models (*.en) are told the language; multilingual ones detect it per utterance.
        self._language = None if whisper.model.is_multilingual else "en"
        self._whisper = whisper

    def _model_path(self) -> Path:
        """The local folder of the model, downloaded first when it is a size name; raises SpeechModelMissing."""
        if _is_path(self.model) or not _is_size_name(self.model):
            path = Path(self.model).expanduser()
            for required in ("model.bin", "tokenizer.json"):  # without tokenizer.json faster-whisper goes online
                if not (path / required).is_file():
                    raise SpeechModelMissing(self.model, self.models_dir, f"{path / required} does not exist")
            return path
        from faster_whisper import download_model

        def download(local_files_only: bool) -> str:
            return download_model(self.model, cache_dir=str(self.models_dir), local_files_only=local_files_only)

        try:
            if not self.allow_download:
                return Path(download(True))
            return Path(fetch(download, f"Whisper model {self.model}", self.models_dir))
        except OSError as exc:  # huggingface_hub's LocalEntryNotFoundError: not cached (downloads not allowed)
            raise SpeechModelMissing(self.model, self.models_dir, f"not in {self.models_dir}") from exc
        except HubUnavailable as exc:
            raise SpeechModelMissing(self.model, self.models_dir, exc.reason) from exc

    def hotwords(self, vocabulary: Sequence[str]) -> str | None:
        """The prompt text for ``vocabulary``: its first ``max_prompt_terms`` words, comma-separated, within Whisper's
        prompt (``services.speech.prompt.MAX_PROMPT_TOKENS``, counted with this model's tokenizer); None when empty.

        Passed as faster-whisper's ``hotwords`` rather than ``initial_prompt``: for an utterance (one 30 s window)
        both put the same tokens after <|startofprev|> (the same transcripts, measured), but hotwords are given to
        every window, where an initial prompt is dropped after the first with condition_on_previous_text off.
        Raises RuntimeError before ``load``.
        """
        tokenizer = self.whisper.hf_tokenizer
        prompt = fit_prompt(vocabulary, lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids),
                            max_terms=self.max_prompt_terms)
        return prompt or None

    PAD_S = 0.3
    """Seconds of silence put before and after the audio. Discord clients send only the frames their voice activity
    detection finds voiced, so an utterance starts and ends right on the speech, and Whisper, trained on speech
    with room around it, is less sure of words cut that tight, all the more with a vocabulary prompt: the ALSA
    recording "Side Right" through the sandbox's Opus path averaged a token log-probability of -1.03 with the
    prompt "Assistant" (below the -1.0 gate, so dropped) and -0.47 with 0.3 s of silence on each side."""

    def _recognize(self, samples: np.ndarray, vocabulary: Sequence[str]) -> Recognized:
        audio = np.pad(samples, round(self.PAD_S * STT_SAMPLE_RATE))
        if self.short_window:
            speech = voiced(audio)  # what faster-whisper's vad_filter keeps (0.4 s of the padding around speech)
            if not speech.size:
                return Recognized("", self._language)
            frames = window_frames(speech.size / STT_SAMPLE_RATE)
            if frames is not None:
                decoded = decode_in_window(self.whisper, speech, frames, self.hotwords(vocabulary), self._language)
                if not repeats_itself(decoded.text):
                    if not self._keep(decoded):
                        return Recognized("", decoded.language)
                    return Recognized(decoded.text, decoded.language, decoded.no_speech_prob)
                # Said twice: now and then a short window's artefact (services.speech.whisper_window); the 30 s window
                # decides, and keeps the repetition when the member did say it twice.
                log.debug("The short window heard %r; decoding in the 30 s window", decoded.text)
        segments, info = self.whisper.transcribe(
            audio, language=self._language, beam_size=self.beam_size, hotwords=self.hotwords(vocabulary),
            **self.decode_options,
        )
        kept = [segment for segment in segments if self._keep(segment)]  # decoded while iterating, in this thread
        no_speech_prob = max((segment.no_speech_prob for segment in kept), default=None)
        return Recognized("".join(segment.text for segment in kept), info.language, no_speech_prob)

    def close(self) -> None:
        with self._load_lock:
            self._whisper = None  # CTranslate2 frees the model with its last reference
            self._loaded = False
            self.source = None
            self.fallback_reason = None

    def _keep(self, segment: Any) -> bool:
        """Whether a faster_whisper Segment (or a ``services.speech.whisper_window.Decoded``) is speech worth keeping
        (see the thresholds of ``__init__``)."""
        if segment.no_speech_prob > self.max_no_speech_prob:
            reason = f"no_speech_prob {segment.no_speech_prob:.2f} > {self.max_no_speech_prob}"
        elif segment.avg_logprob < self.min_avg_logprob:
            reason = f"avg_logprob {segment.avg_logprob:.2f} < {self.min_avg_logprob}"
        elif segment.compression_ratio > self.max_compression_ratio:
            reason = f"compression_ratio {segment.compression_ratio:.2f} > {self.max_compression_ratio}"
        else:
            return True
        log.debug("Dropped Whisper segment %r: %s", segment.text, reason)
        return False


def _is_path(model: str) -> bool:
    """Whether WHISPER_MODEL is written as a path (it has a folder separator)."""
    return "/" in model or os.sep in model


def _is_size_name(model: str) -> bool:
    """Whether WHISPER_MODEL is a model faster-whisper downloads by name rather than a folder."""
    from faster_whisper.utils import _MODELS  # the size -> Hub repository table behind available_models()

    return model in _MODELS


def create_transcriber(settings: Settings) -> Transcriber:
    """The configured transcriber, not loaded yet: cheap, call it anywhere; ``load`` (in a thread) does the work.

    A FasterWhisperTranscriber with WHISPER_MODEL, MODELS_DIR, WHISPER_COMPUTE_TYPE and the STT_MAX_NO_SPEECH_PROB /
    STT_MIN_AVG_LOGPROB gate and STT_SHORT_WINDOW, which falls back to the bundled tiny.en (see its docstring).
    """
    return FasterWhisperTranscriber(
        settings.WHISPER_MODEL,
        settings.MODELS_DIR,
        settings.WHISPER_COMPUTE_TYPE,
        settings.STT_MAX_NO_SPEECH_PROB,
        settings.STT_MIN_AVG_LOGPROB,
        short_window=settings.STT_SHORT_WINDOW,
    )
