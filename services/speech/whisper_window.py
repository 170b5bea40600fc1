"""Whisper decoding in an encoder window sized to the utterance, instead of Whisper's fixed 30 s.

Whisper's encoder is trained on 30 s windows, and faster-whisper always pads the log-Mel features of a shorter
utterance to 3000 frames (30 s), so a 3 s question pays for 27 s of silence, in the encoder (all of it) and in every
decoding step (cross-attention over 1500 encoder positions). CTranslate2 accepts fewer frames (since 3.19,
OpenNMT/CTranslate2#1433); whisper.cpp's ``audio_ctx`` option does the same, and transcribe.cpp ships it for short
clips with a 10 s floor. Here, on 2 CPUs with the bundled tiny.en (bench/bench_stt.py, ``window`` rows):

- a window of the speech plus 5 s, at least 10 s, decoded greedily, transcribes a 2-4 s question in about a fifth of
  the time of the 30 s window with a beam of 5, at a similar word error rate;
- windows with less than about 5 s of silence after the speech, or beam search in a short window, make Whisper say
  a sentence twice now and then (beam search normalises its score by length, and a repeated confident sentence
  scores well), so the margin and greedy decoding are part of the method, not tuning. Even then, about one Piper
  reading in 15 of "Can you tell me a joke about cats?" (with 20 dB of noise) comes out of the short window said
  twice; ``repeats_itself`` spots that, and the transcriber decodes such speech again in the 30 s window.

``decode_in_window`` is the decoding step of faster-whisper's ``WhisperModel.generate_segments`` for one window
without timestamps (its prompt, suppressed tokens and scores, from faster-whisper's own helpers), on features cut
to ``window_frames``; longer speech goes through faster-whisper's ``transcribe`` as before.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.speech.audio import STT_SAMPLE_RATE

WINDOW_MIN_S = 10.0
"""Shortest window, s: shorter ones lose words and repeat sentences (measured down to 6 s)."""
WINDOW_MARGIN_S = 5.0
"""Silence after the speech in the window, s, at least."""
FULL_WINDOW_S = 30.0
"""Whisper's own window, s (3000 Mel frames of 10 ms); speech that needs more is decoded the usual way."""
FRAMES_PER_S = 100  # Whisper's log-Mel hop: 160 samples at 16 kHz
REPEAT_MIN_WORDS = 3
"""Words said twice in a row, at least, for ``repeats_itself``: "very very" and "no, no" are speech, not a loop."""


@dataclass(frozen=True)
class Decoded:
    """One window's transcript and the scores faster-whisper gives a segment (the same names, for the same gate).

    text: the words, stripped; language: its code ("en"); no_speech_prob: Whisper's probability of <|nospeech|>,
    0..1; avg_logprob: the tokens' summed log-probability over (tokens + 1), as faster-whisper computes it;
    compression_ratio: len(text) over its zlib-compressed length (repetition loops compress well).
    """

    text: str
    language: str
    no_speech_prob: float
    avg_logprob: float
    compression_ratio: float


def window_frames(speech_s: float) -> int | None:
    """Mel frames of the window for ``speech_s`` seconds of speech: (speech + WINDOW_MARGIN_S), at least
    WINDOW_MIN_S, rounded up to a frame; None when that exceeds FULL_WINDOW_S (decode the usual way)."""
    window_s = max(WINDOW_MIN_S, speech_s + WINDOW_MARGIN_S)
    if window_s > FULL_WINDOW_S:
        return None
    return math.ceil(window_s * FRAMES_PER_S)


def repeats_itself(text: str, min_words: int = REPEAT_MIN_WORDS) -> bool:
    """Whether ``text`` says the same ``min_words`` or more words twice in a row, ignoring case and punctuation:
    "Can you tell me a joke about cats? Can you tell me a joke about cats?" does, "Hello? Hello?" does not."""
    words = re.findall(r"[\w']+", text.lower())
    for size in range(min_words, len(words) // 2 + 1):
        for start in range(len(words) - 2 * size + 1):
            if words[start : start + size] == words[start + size : start + 2 * size]:
                return True
    return False


def voiced(audio: np.ndarray) -> np.ndarray:
    """The speech of ``audio`` (16 kHz mono float32), silences removed by Silero VAD with faster-whisper's default
    options, as its ``vad_filter`` does; an empty array when there is no speech."""
    from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

    chunks = get_speech_timestamps(audio, VadOptions(), sampling_rate=STT_SAMPLE_RATE)
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    pieces, _ = collect_chunks(audio, chunks, sampling_rate=STT_SAMPLE_RATE)
    return np.concatenate(pieces)


def decode_in_window(whisper: Any, speech: np.ndarray, frames: int, hotwords: str | None,
                     language: str | None) -> Decoded:
    """Transcribe ``speech`` (16 kHz mono float32, at most ``frames`` long) in a window of ``frames`` Mel frames.

    whisper: a loaded ``faster_whisper.WhisperModel``; hotwords: its prompt text or None; language: the language
    code, or None to detect it on this window (multilingual models). Greedy decoding at temperature 0, no
    timestamps, no conditioning on earlier text (as ``FasterWhisperTranscriber.DECODE_OPTIONS``). Blocking (run it
    in a worker thread). Raises what CTranslate2 raises (RuntimeError).
    """
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

    features = whisper.feature_extractor(speech)[:, :frames]
    # Padded with zeros in the feature domain, as faster-whisper pads to its 30 s window.
    features = np.pad(features, ((0, 0), (0, frames - features.shape[1])))
    encoder_output = whisper.encode(features)
    if language is None:
        [ranked] = whisper.model.detect_language(encoder_output)
        language = ranked[0][0][2:-2]  # "<|de|>" -> "de"
    tokenizer = Tokenizer(whisper.hf_tokenizer, whisper.model.is_multilingual, task="transcribe", language=language)
    prompt = whisper.get_prompt(tokenizer, [], without_timestamps=True, hotwords=hotwords)
    [result] = whisper.model.generate(
        encoder_output, [prompt], beam_size=1, max_length=whisper.max_length, return_scores=True,
        return_no_speech_prob=True, suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
    )
    tokens = result.sequences_ids[0]
    text = tokenizer.decode(tokens).strip()
    # CTranslate2's score is the summed log-probability over len(tokens) (length_penalty 1); faster-whisper's average
    # divides the sum by len(tokens) + 1 (the end-of-text token).
    avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
    return Decoded(text, language, result.no_speech_prob, avg_logprob, get_compression_ratio(text))
