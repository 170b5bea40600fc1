"""Speech to text: an utterance (16 kHz mono float32) in, a transcript out.

Two engines behind one ``Transcriber`` interface:

- ``FasterWhisperTranscriber``: Whisper run by CTranslate2 (faster-whisper) on the CPU, int8 by default, the
  accurate default. A model is a size name (``base.en``...) fetched from the Hugging Face Hub into ``MODELS_DIR``
  when the network allows, or the path of a converted model folder; when it cannot be had, ``SpeechModelMissing``
  says how to get it.
- ``PocketsphinxTranscriber``: CMU PocketSphinx 5 with its bundled US English acoustic model, dictionary and
  general trigram language model: far less accurate, but needing no download at all.

``create_transcriber`` prefers Whisper and falls back to PocketSphinx with a logged warning when Whisper cannot be
loaded. Models load once, lazily, in a worker thread; ``transcribe`` never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import multiprocessing
import os
import re
import signal
import time
from abc import abstractmethod
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from services.audio import STT_SAMPLE_RATE
from services.errors import ServiceError
from services.lazy_model import LazyModel

if TYPE_CHECKING:
    from config import Settings

log = logging.getLogger(__name__)


class SpeechRecognitionError(ServiceError):
    """The speech recogniser cannot start (library missing, broken model) or cannot transcribe the audio."""


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
    engine: name of the engine that transcribed it, e.g. "whisper:base.en" or "pocketsphinx:en-us".
    """

    text: str
    language: str | None
    audio_s: float
    transcribe_s: float
    engine: str


class Transcriber(LazyModel):
    """A speech-to-text engine. ``load`` and ``transcribe_raw`` block; ``transcribe`` does not.

    Subclasses implement ``_load`` (run once, under a lock) and ``_recognize``, and ``close`` when they hold more
    than memory.
    """

    kind = "speech recognition model"

    def transcribe_raw(self, samples: np.ndarray) -> str:
        """Transcribe ``samples`` (blocking; loads the model first if needed).

        samples: shape (n,), 16 kHz (STT_SAMPLE_RATE) mono, float in [-1, 1] (as ``services.audio.to_mono_16k``
            returns). Returns the words, stripped, or "" when nothing was said; empty input gives "" without
            loading anything. Raises ValueError for another shape, SpeechRecognitionError when the engine fails.
        """
        return self._run(samples)[0]

    async def transcribe(self, samples: np.ndarray) -> Transcript:
        """Transcribe ``samples`` (as ``transcribe_raw``) in a worker thread, loading the model there if needed.

        Raises ValueError for a bad shape and SpeechRecognitionError, like ``transcribe_raw``.
        """
        return await asyncio.to_thread(self._timed, samples)

    def _timed(self, samples: np.ndarray) -> Transcript:
        """Blocking: load if needed, then transcribe and time it."""
        audio = _check_samples(samples)
        if audio.size:
            self.load()  # outside the timing: transcribe_s is recognition only
        started = time.perf_counter()
        text, language = self._run(audio)
        return Transcript(text, language, audio.size / STT_SAMPLE_RATE, time.perf_counter() - started, self.name)

    def _run(self, samples: np.ndarray) -> tuple[str, str | None]:
        audio = _check_samples(samples)
        if not audio.size:
            return "", None
        self.load()
        text, language = self._recognize(audio)
        return text.strip(), language

    def close(self) -> None:
        """Release the model (and any worker process); a later call loads it again. Blocking, idempotent."""
        with self._load_lock:
            self._loaded = False

    @abstractmethod
    def _recognize(self, samples: np.ndarray) -> tuple[str, str | None]:
        """(text, language) for non-empty float32 16 kHz mono ``samples`` (the engine is loaded)."""


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

    model: a size name that faster-whisper knows ("tiny.en", "base.en", "small.en"...; see
        ``faster_whisper.available_models()``), looked up in, or downloaded into, ``models_dir`` (Hugging Face cache
        layout: ``models_dir/models--Systran--faster-whisper-base.en/...``); anything else is the path of a converted
        model folder (``model.bin``, ``config.json``, ``vocabulary.*``, ``tokenizer.json``), used as is.
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
    decode_options: keyword arguments for ``WhisperModel.transcribe`` that override the defaults of DECODE_OPTIONS
        (for benchmarks and tuning).
    """

    BEAM_SIZE = 5
    """Beam search width: 5, as openai/whisper's CLI and faster-whisper decode by default (beam search is more
    accurate than greedy decoding, and less prone to repetition). For a short utterance its cost is small, because
    the encoder, which always runs over a whole 30 s window, dominates: bench/bench_stt.py measured, on 2 CPUs in
    int8 for 5 s of speech (20 tokens), 0.78 s with 5 beams vs 0.72 s greedy for base-sized and 1.97 vs 1.75 s for
    small-sized models (bench/results/stt.json)."""

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

    def __init__(
        self,
        model: str,
        models_dir: Path,
        compute_type: str = "int8",
        max_no_speech_prob: float = 0.6,
        min_avg_logprob: float = -1.0,
        *,
        max_compression_ratio: float = 2.4,
        beam_size: int = BEAM_SIZE,
        cpu_threads: int = 0,
        allow_download: bool = True,
        decode_options: Mapping[str, Any] | None = None,
    ) -> None:
        # The display name only: whether `model` is a size name is settled by _load (importing faster-whisper here
        # would make creating a transcriber slow).
        super().__init__(f"whisper:{Path(model).name if '/' in model or os.sep in model else model}")
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
        self._whisper: Any = None  # faster_whisper.WhisperModel, imported lazily (ctranslate2 is slow to import)
        self._language: str | None = None

    @property
    def whisper(self) -> Any:
        """The loaded ``faster_whisper.WhisperModel``; raises RuntimeError before ``load``."""
        if self._whisper is None:
            raise RuntimeError(f"{self.name} is not loaded")
        return self._whisper

    def _load(self) -> None:
        from faster_whisper import WhisperModel

        path = self._model_path()
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
        if not _is_size_name(self.model):
            path = Path(self.model).expanduser()
            for required in ("model.bin", "tokenizer.json"):  # without tokenizer.json faster-whisper goes online
                if not (path / required).is_file():
                    raise SpeechModelMissing(self.model, self.models_dir, f"{path / required} does not exist")
            return path
        from faster_whisper import download_model

        try:
            return Path(download_model(self.model, cache_dir=str(self.models_dir), local_files_only=True))
        except OSError as exc:  # huggingface_hub's LocalEntryNotFoundError: not cached yet
            if not self.allow_download:
                raise SpeechModelMissing(self.model, self.models_dir, f"not in {self.models_dir}") from exc
        log.info("Whisper model %s is not in %s; trying to download it", self.model, self.models_dir)
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
            # huggingface_hub writes each file as *.incomplete and renames it when complete: no truncated model.
            path = Path(download_model(self.model, cache_dir=str(self.models_dir)))
        except OSError as exc:  # no network (LocalEntryNotFoundError), HTTP errors (HfHubHTTPError), disk errors
            # huggingface_hub's messages run over several lines; the first one names the cause.
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SpeechModelMissing(self.model, self.models_dir, f"download failed: {reason}") from exc
        log.info("Downloaded Whisper model %s into %s", self.model, self.models_dir)
        return path

    def _recognize(self, samples: np.ndarray) -> tuple[str, str | None]:
        segments, info = self.whisper.transcribe(
            samples, language=self._language, beam_size=self.beam_size, **self.decode_options
        )
        kept: list[str] = []
        for segment in segments:  # a generator: decoding happens while iterating, here in the worker thread
            if self._keep(segment):
                kept.append(segment.text)
        return "".join(kept), info.language

    def close(self) -> None:
        with self._load_lock:
            self._whisper = None  # CTranslate2 frees the model with its last reference
            self._loaded = False

    def _keep(self, segment: Any) -> bool:
        """Whether a faster_whisper Segment is speech worth keeping (see the thresholds of ``__init__``)."""
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


def _is_size_name(model: str) -> bool:
    """Whether WHISPER_MODEL is a model faster-whisper downloads by name rather than a folder."""
    from faster_whisper.utils import _MODELS  # the size -> Hub repository table behind available_models()

    return model in _MODELS


# --- PocketSphinx ------------------------------------------------------------------------------------------------

_ALTERNATE_PRONUNCIATION = re.compile(r"\(\d+\)$")  # "the(2)": the dictionary's second pronunciation of "the"
_WORKER_START_TIMEOUT_S = 120.0  # a cold start imports numpy and the bot's modules in the child: seconds, not minutes

# State of the PocketSphinx worker process (set by _pocketsphinx_init, in the child only).
_ps_decoder: Any = None
_ps_initial_cmn = ""


def _pocketsphinx_init() -> None:
    """Worker initialiser: load the decoder once (bundled en-us model; loglevel keeps its INFO chatter quiet)."""
    from pocketsphinx import Decoder

    global _ps_decoder, _ps_initial_cmn
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the bot, which stops us itself
    _ps_decoder = Decoder(loglevel="ERROR")
    _ps_initial_cmn = _ps_decoder.get_cmn()


def _pocketsphinx_ready() -> bool:
    """Worker call that succeeds once the initialiser has loaded the decoder."""
    return _ps_decoder is not None


def _pocketsphinx_decode(pcm: bytes, min_voiced_s: float, max_word_s: float) -> str:
    """Worker call: the words in ``pcm`` (16 kHz mono s16le), or "" (see PocketsphinxTranscriber for the checks)."""
    from pocketsphinx import Vad

    vad = Vad(Vad.LOOSE, STT_SAMPLE_RATE)  # a fresh one: its noise estimate must not carry over utterances
    step = vad.frame_bytes
    voiced = sum(vad.is_speech(pcm[i : i + step]) for i in range(0, len(pcm) - step + 1, step))
    if voiced * vad.frame_length < min_voiced_s:
        return ""
    decoder = _ps_decoder
    # Start each utterance from the model's initial cepstral mean, so that a transcript does not depend on the
    # utterances (and speakers) before it; full_utt then normalises with the mean of this whole utterance.
    decoder.set_cmn(_ps_initial_cmn)
    decoder.start_utt()
    decoder.process_raw(pcm, no_search=False, full_utt=True)
    decoder.end_utt()
    frames_per_second = int(decoder.config["frate"])  # Segment frames: 10 ms at the default -frate 100
    words = []
    for segment in decoder.seg():
        if segment.word.startswith(("<", "[", "+")):  # <s> </s> <sil> [NOISE] [SPEECH] ++UH++: fillers
            continue
        if (segment.end_frame - segment.start_frame + 1) / frames_per_second > max_word_s:
            continue
        words.append(_ALTERNATE_PRONUNCIATION.sub("", segment.word))
    return " ".join(words)


class PocketsphinxTranscriber(Transcriber):
    """CMU PocketSphinx 5 with its bundled US English model (acoustic model, CMU dictionary, general trigram LM).

    A large-vocabulary recogniser for free speech, not a keyword spotter; it needs no download but is much less
    accurate than Whisper. Noise is turned into "" by two checks:

    min_voiced_s: below this many seconds of voiced 30 ms frames (PocketSphinx's WebRTC-derived ``Vad``, loosest
        mode), the audio is silence or a faint hiss and is not decoded (the decoder otherwise finds words in pure
        silence).
    max_word_s: recognised words held longer than this are dropped: a drone or a long noise burst decodes as one
        word stretched over seconds, while a spoken word lasts well under a second.

    Fillers (<sil>, [NOISE], [SPEECH]...) are never returned.

    The decoder runs in a child process: PocketSphinx's Python binding holds the GIL for a whole decoding call
    (about 0.1 s per second of audio here), which from a thread would still stall the event loop. The calling
    thread only waits for the child, with the GIL released. Utterances are decoded one at a time; ``close`` stops
    the child, and a child that died is restarted by the next ``load``.
    """

    def __init__(self, *, min_voiced_s: float = 0.15, max_word_s: float = 1.5) -> None:
        super().__init__("pocketsphinx:en-us")
        self.min_voiced_s = min_voiced_s
        self.max_word_s = max_word_s
        self._pool: ProcessPoolExecutor | None = None

    def _load(self) -> None:
        if importlib.util.find_spec("pocketsphinx") is None:
            raise SpeechRecognitionError(
                "PocketSphinx is not installed; install it with `pip install pocketsphinx==5.1.1`."
            )
        pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),  # fork is unsafe in a process with threads
            initializer=_pocketsphinx_init,
        )
        try:
            pool.submit(_pocketsphinx_ready).result(timeout=_WORKER_START_TIMEOUT_S)
        except (BrokenProcessPool, OSError, TimeoutError) as exc:  # the initialiser failed, or no process could start
            pool.shutdown(wait=False, cancel_futures=True)
            raise SpeechRecognitionError(
                f"PocketSphinx could not be started ({type(exc).__name__}: {exc}); reinstall it with "
                "`pip install --force-reinstall pocketsphinx==5.1.1`."
            ) from exc
        self._pool = pool

    def _recognize(self, samples: np.ndarray) -> tuple[str, str | None]:
        assert self._pool is not None  # loaded by _run
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        try:
            text = self._pool.submit(_pocketsphinx_decode, pcm, self.min_voiced_s, self.max_word_s).result()
        except BrokenProcessPool as exc:
            with self._load_lock:  # the next load() starts a new child
                self._loaded = False
                self._pool = None
            raise SpeechRecognitionError(
                "The PocketSphinx process stopped unexpectedly; the next utterance will restart it."
            ) from exc
        return text, "en"

    def close(self) -> None:
        with self._load_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._loaded = False


# --- choice of engine --------------------------------------------------------------------------------------------


class FallbackTranscriber(Transcriber):
    """The preferred engine when it loads, else the fallback one: chosen by ``load``, lazily, in its thread.

    This lets the bot create its transcriber at start-up without waiting for a model (or a download attempt) and
    decide when listening first needs it. Until ``load`` has run, ``active`` is None and ``name`` names both.
    """

    def __init__(self, preferred: Transcriber, fallback: Transcriber) -> None:
        super().__init__(f"{preferred.name} (or {fallback.name})")
        self.preferred = preferred
        self.fallback = fallback
        self._active: Transcriber | None = None

    @property
    def active(self) -> Transcriber | None:
        """The engine in use once loaded: ``preferred``, or ``fallback`` when the preferred one failed to load."""
        return self._active

    def _load(self) -> None:
        try:
            self.preferred.load()
            self._active = self.preferred
        except SpeechRecognitionError as exc:
            log.warning(
                "Transcribing with %s instead of %s. %s", self.fallback.name, self.preferred.name, exc.user_message
            )
            self.fallback.load()
            self._active = self.fallback
        self.name = self._active.name

    def _recognize(self, samples: np.ndarray) -> tuple[str, str | None]:
        assert self._active is not None  # loaded by _run
        self._active.load()  # a no-op, unless the engine dropped its model (a PocketSphinx child that died)
        return self._active._recognize(samples)

    def close(self) -> None:
        with self._load_lock:
            self.preferred.close()
            self.fallback.close()
            self._active = None
            self._loaded = False


def create_transcriber(settings: Settings) -> Transcriber:
    """The configured transcriber, not loaded yet: cheap, call it anywhere; ``load`` (in a thread) does the work.

    STT_ENGINE=whisper: faster-whisper with WHISPER_MODEL (downloaded into MODELS_DIR if possible),
    WHISPER_COMPUTE_TYPE and the STT_MAX_NO_SPEECH_PROB / STT_MIN_AVG_LOGPROB gate when that model loads, else
    PocketSphinx with a logged warning that says how to get the Whisper model (a FallbackTranscriber, which decides
    at ``load``). STT_ENGINE=pocketsphinx: a PocketsphinxTranscriber.
    Its ``load`` raises SpeechRecognitionError only when PocketSphinx itself cannot start.
    """
    pocketsphinx = PocketsphinxTranscriber()
    if settings.STT_ENGINE == "pocketsphinx":
        return pocketsphinx
    whisper = FasterWhisperTranscriber(
        settings.WHISPER_MODEL,
        settings.MODELS_DIR,
        settings.WHISPER_COMPUTE_TYPE,
        settings.STT_MAX_NO_SPEECH_PROB,
        settings.STT_MIN_AVG_LOGPROB,
    )
    return FallbackTranscriber(whisper, pocketsphinx)
