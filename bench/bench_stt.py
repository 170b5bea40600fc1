"""Speech recognition benchmark: word error rate and real-time factor of the bundled Whisper tiny.en on this CPU.

Three sets, each transcribed with each way of decoding of ``variants``: without and with the bot's vocabulary bias
(``services.knowledge.vocabulary``: the bot's name and the distinctive terms of the documents, the first 20 as
hotwords), each in the short window the bot decodes in (``services.speech.whisper_window``) and in Whisper's 30 s window
with a beam of 5; and the ways of biasing the bot's was chosen over (all the terms that fit, lowercased, in a sentence).
The vocabulary is taken from indexing the documents the way the bot does (``DocumentIndex.reload`` of the shared corpus
/work/shared/corpus/ollama-docs, embedded by the Ollama stand-in, then ``DocumentIndex.document_terms``, whose cost per
spoken turn is timed too, from the index and from memory; without the corpus, the test fixture documents
tests/fixtures/docs):

- the spoken questions: QUESTIONS about the corpus (or FIXTURE_QUESTIONS about the fixtures), naming its products
  and settings ("Ollama", "Modelfile", "GGUF"...), said by the bundled Piper voice, through Discord's format, with
  white noise mixed in at ``--snr`` dB (tests/support/noise.py); scored by WER with ``_`` read as a space (a spoken
  "CUDA visible devices" written CUDA_VISIBLE_DEVICES is right);
- everyday questions (EVERYDAY) with none of the documents' words, said and mixed the same way: the bias must not
  make them worse;
- the ALSA set: the eight ALSA channel-test recordings of /work/shared/speech/alsa ("Front Left", "Rear Center"...),
each taken through the bot's own path (48 kHz stereo s16le as Discord delivers it, then ``to_mono_16k``) and
transcribed through ``Transcriber.transcribe`` (worker thread, as the bot does), after one warm-up; ``Noise.wav``
must give nothing. Without the recordings, the bundled Piper voice says the eight channel names instead. Reported
per model:

- ``wer``: word error rate over the set (jiwer, after lowercasing and removing punctuation); the reference of
  ``Front_Left.wav`` is "front left";
- ``sides_named`` (ALSA): recordings whose transcript has the channel's side (left, right, center);
- ``rtf``: transcription seconds / audio seconds over the set (< 1: faster than real time), and the p50, p95 and
  max seconds per recording; ``load_s`` (hash check included); the event-loop lag while it ran.

``--models`` times other faster-whisper models too (size names from MODELS_DIR's cache or downloaded when the
network allows, or folders); they are never replaced by the bundled model here.

Usage: ``.venv/bin/python -m bench.bench_stt [--runs 3] [--snr 15] [--models tiny.en base.en]``; writes
bench/results/stt.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ctranslate2
import numpy as np
import soundfile as sf

from bench.common import OllamaProcess, percentile
from config import Settings
from services.chat.llm import LLMClient
from services.files import write_json_atomic
from services.knowledge.index import GLOBAL_SCOPE, DocumentIndex
from services.knowledge.vocabulary import guild_vocabulary
from services.speech.audio import STT_SAMPLE_RATE, to_discord_pcm, to_mono_16k
from services.speech.bundled_models import BUNDLED_WHISPER_MODEL
from services.speech.prompt import MAX_PROMPT_TERMS
from services.speech.stt import FasterWhisperTranscriber
from services.speech.tts import PiperSynthesizer
from tests.support.loop_lag import LoopLagProbe
from tests.support.noise import mix_noise
from tests.support.wer import word_error_rate

RESULTS = Path(__file__).resolve().parent / "results" / "stt.json"
ALSA_DIR = Path(__file__).resolve().parents[2] / "shared" / "speech" / "alsa"
CORPUS_DIR = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "ollama-docs"
FIXTURE_DOCS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "docs"
BOT_NAME = "Assistant"  # the sandbox bot's name, first in the vocabulary as in the bot
GUILD_ID = 123456789012345678  # a guild without documents of its own: its turns use the global ones
CHANNELS = [f"{row}_{side}" for row in ("Front", "Rear", "Side") for side in ("Left", "Center", "Right")
            if (row, side) != ("Side", "Center")]  # fmt: skip
QUESTIONS = [
    "How do I set the Ollama host variable to listen on all interfaces?",
    "What does num ctx control in a Modelfile?",
    "Can I run Ollama in Docker with an NVIDIA GPU?",
    "How do I import a GGUF model into Ollama?",
    "How do I import Safetensors weights?",
    "Does Ollama support AMD Radeon cards with ROCm?",
    "How do I quantize a model when I create it?",
    "Is the Ollama API compatible with OpenAI?",
    "How do I enable Vulkan support on Linux?",
    "Where does Ollama store models on macOS?",
    "How long does keep alive keep a model loaded?",
    "How do I choose GPUs with CUDA visible devices?",
    "Where are the Ollama logs on Windows?",
    "What is the template in a Modelfile?",
    "How do I get structured outputs with a JSON schema?",
    "How do I run Ollama as a systemd service?",
    "Can Ollama generate embeddings?",
    "How do I use Ollama with the Anthropic API?",
    "How do I increase the context length?",
    "How do I pull a model with the Ollama CLI?",
]
EVERYDAY = [  # none of the documents' words: the bias must leave them alone
    "What is the weather like today?",
    "Can you tell me a joke about cats?",
    "Please remind me to call my mother tomorrow.",
    "Who won the football match last night?",
    "How far is the moon from the earth?",
    "Let's play some music in the lounge.",
    "Thank you, that was very helpful.",
    "What time does the shop close on Sunday?",
]
FIXTURE_QUESTIONS = [
    "How do I choose a GPU with CUDA visible devices?",
    "How do I reload the NVIDIA UVM driver?",
    "Should I set HTTPS proxy or HTTP proxy?",
    "How long does keep alive keep a model loaded?",
    "Where are models stored on macOS?",
    "How do I change the models directory with models dir?",
]


def speech_set() -> tuple[dict[str, np.ndarray], np.ndarray | None, str]:
    """(channel name -> 16 kHz mono float32 speech, the noise recording or None, a description of the source)."""
    if ALSA_DIR.is_dir():
        audio = {}
        for path in sorted(ALSA_DIR.glob("*.wav")):
            samples, rate = sf.read(path, dtype="int16", always_2d=True)
            audio[path.stem] = to_mono_16k(to_discord_pcm(samples, rate))
        noise = audio.pop("Noise", None)
        return audio, noise, f"ALSA recordings ({ALSA_DIR})"
    voice = PiperSynthesizer()
    audio = {}
    for name in CHANNELS:
        samples, rate = voice.synthesize_raw(name.replace("_", " ") + ".")
        audio[name] = to_mono_16k(to_discord_pcm(samples, rate))
    return audio, None, "the channel names said by the bundled Piper voice (no ALSA recordings here)"


async def document_vocabulary(documents: Path, lookups: int = 50) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The bot's name and the distinctive terms of ``documents``, indexed as the bot does (the global scope, embedded
    by the Ollama stand-in in its own process, ChromaDB as CHROMA_WORKER_PROCESS says in a temporary folder); and
    what one spoken turn's ``document_terms(guild)`` costs, ``lookups`` times: read from the index (each turn before
    the terms were kept in memory; now a guild's first turn) and from memory, in ms p50/p95."""
    settings = Settings()
    fake = OllamaProcess()
    work = Path(tempfile.mkdtemp(prefix="bench-stt-"))
    llm = LLMClient(host=await fake.start(), chat_model=settings.CHAT_MODEL, embed_model=settings.EMBED_MODEL,
                    timeout_s=120.0, num_ctx=settings.LLM_NUM_CTX, keep_alive=settings.LLM_KEEP_ALIVE,
                    embed_batch_size=settings.EMBED_BATCH_SIZE)  # fmt: skip
    index = DocumentIndex(embedder=llm, index_dir=work / "index", documents_dir=work / "documents",
                          chroma_process=settings.CHROMA_WORKER_PROCESS, doc_max_bytes=settings.DOC_MAX_BYTES,
                          chunk_max_chars=settings.CHUNK_MAX_CHARS,
                          chunk_overlap_chars=settings.CHUNK_OVERLAP_CHARS)  # fmt: skip
    try:
        shutil.copytree(documents, work / "documents" / GLOBAL_SCOPE)
        await index.reload(GLOBAL_SCOPE)
        vocabulary = guild_vocabulary([BOT_NAME], await index.document_terms(None))
        timings: dict[str, list[float]] = {"from_index": [], "from_memory": []}
        for _ in range(lookups):
            for way in timings:
                if way == "from_index":
                    index.forget_guild(GUILD_ID)
                started = time.perf_counter()
                await index.document_terms(GUILD_ID)
                timings[way].append((time.perf_counter() - started) * 1000)
        lookup = {way: {"p50": round(statistics.median(ms), 3), "p95": round(percentile(ms, 95), 3)}
                  for way, ms in timings.items()}  # fmt: skip
        return vocabulary, {"chroma_worker_process": settings.CHROMA_WORKER_PROCESS, "lookups": lookups, **lookup}
    finally:
        await index.close()
        await llm.close()
        await fake.stop()
        shutil.rmtree(work, ignore_errors=True)


def question_set(snr_db: float) -> tuple[dict[str, np.ndarray], dict[str, str], Path]:
    """(question -> its noisy 16 kHz mono speech, question -> reference, the documents they are about)."""
    documents, questions = (CORPUS_DIR, QUESTIONS) if CORPUS_DIR.is_dir() else (FIXTURE_DOCS, FIXTURE_QUESTIONS)
    return said(questions, snr_db), {question: question for question in questions}, documents


def said(sentences: list[str], snr_db: float, first_seed: int = 0) -> dict[str, np.ndarray]:
    """sentence -> the bundled Piper voice saying it, through Discord's format, noise at ``snr_db`` (16 kHz mono)."""
    voice = PiperSynthesizer()
    audio = {}
    for number, sentence in enumerate(sentences):
        samples, rate = voice.synthesize_raw(sentence)
        audio[sentence] = mix_noise(to_mono_16k(to_discord_pcm(samples, rate)), snr_db, seed=first_seed + number)
    return audio


def _spoken(text: str) -> str:
    return text.replace("_", " ")


async def measure(transcriber: FasterWhisperTranscriber, audio: dict[str, np.ndarray], references: dict[str, str],
                  noise: np.ndarray | None, runs: int, vocabulary: tuple[str, ...] = (),
                  sides: bool = False) -> dict[str, Any]:  # fmt: skip
    """Load ``transcriber`` (timed), warm it up once, then transcribe the set ``runs`` times with ``vocabulary``."""
    started = time.perf_counter()
    await asyncio.to_thread(transcriber.load)
    load_s = time.perf_counter() - started
    await transcriber.transcribe(next(iter(audio.values())), vocabulary)
    seconds: dict[str, list[float]] = {name: [] for name in audio}
    heard: dict[str, str] = {}
    probe = LoopLagProbe()
    probe.start()
    try:
        for _ in range(runs):
            for name, samples in audio.items():
                transcript = await transcriber.transcribe(samples, vocabulary)
                seconds[name].append(transcript.transcribe_s)
                heard[name] = transcript.text
        noise_text = (await transcriber.transcribe(noise, vocabulary)).text if noise is not None else None
    finally:
        lag = probe.stop()
    per_file = [statistics.median(values) for values in seconds.values()]
    audio_s = sum(samples.size for samples in audio.values()) / STT_SAMPLE_RATE
    row: dict[str, Any] = {
        "engine": transcriber.name,
        "model": transcriber.source.describe() if transcriber.source else None,
        "load_s": round(load_s, 3),
        "wer": round(word_error_rate([_spoken(references[n]) for n in audio], [_spoken(heard[n]) for n in audio]), 4),
        "files": len(audio),
        "noise_transcript": noise_text,
        "rtf": round(sum(per_file) / audio_s, 4),
        "transcribe_s": {"p50": round(statistics.median(per_file), 3), "p95": round(percentile(per_file, 95), 3),
                         "max": round(max(per_file), 3)},
        "heard": heard,
        "loop_lag_ms": lag,
    }
    if sides:
        row["sides_named"] = sum(name.split("_")[-1].lower() in heard[name].lower() for name in audio)
    return row


def variants(vocabulary: tuple[str, ...]) -> list[tuple[str, dict[str, Any], tuple[str, ...]]]:
    """(label, FasterWhisperTranscriber options, vocabulary) of each way of decoding compared: without and with the
    bot's vocabulary (the first MAX_PROMPT_TERMS words as written, comma-separated, as hotwords), each in the short
    window (greedy, the bot's default) and in Whisper's 30 s window with a beam of 5 (STT_SHORT_WINDOW=false); then
    the ways of biasing the bot's was chosen over (an initial prompt is faster-whisper's own option, so 30 s)."""
    sentence = f"The following terms may come up: {', '.join(vocabulary[:MAX_PROMPT_TERMS])}."
    full = {"short_window": False}
    bot = f"first {MAX_PROMPT_TERMS} terms"
    return [
        ("off, short window", {}, ()),
        ("off, 30 s window, beam 5", full, ()),
        (f"{bot}, short window (the bot's)", {}, vocabulary),
        (f"{bot}, 30 s window, beam 5", full, vocabulary),
        ("all that fit in 223 tokens, short window", {"max_prompt_terms": None}, vocabulary),
        (f"{bot} lowercased, short window", {}, tuple(word.lower() for word in vocabulary)),
        (f"{bot} in a sentence, as initial_prompt, 30 s window, beam 5",
         {"decode_options": {"initial_prompt": sentence}}, ()),
    ]


async def run(runs: int, models: list[str], models_dir: Path, snr_db: float) -> dict[str, Any]:
    alsa, noise, source = speech_set()
    alsa_references = {name: name.replace("_", " ").lower() for name in alsa}
    everyday = said(EVERYDAY, snr_db, first_seed=100)
    questions, references, documents = question_set(snr_db)
    vocabulary, lookup = await document_vocabulary(documents)
    print(f"document_terms per turn (ms p50/p95): from the index {lookup['from_index']['p50']:.2f}/"
          f"{lookup['from_index']['p95']:.2f}, from memory {lookup['from_memory']['p50']:.3f}/"
          f"{lookup['from_memory']['p95']:.3f}", flush=True)
    transcriber_prompt = ""
    sets: dict[str, list[dict[str, Any]]] = {"questions": [], "everyday": [], "alsa": []}
    for model in models:
        for variant, options, words in variants(vocabulary):
            transcriber = FasterWhisperTranscriber(model, models_dir, "int8", fallback=False, **options)
            print(f"{model}, {variant}", flush=True)
            for name, audio, refs, sides in (("questions", questions, references, False),
                                             ("everyday", everyday, {s: s for s in EVERYDAY}, False),
                                             ("alsa", alsa, alsa_references, True)):  # fmt: skip
                row = await measure(transcriber, audio, refs, noise, runs, words, sides=sides)
                sets[name].append({"variant": variant, **row, "bias": bool(words or options.get("decode_options"))})
                print(f"  {name:9}", _line(row), flush=True)
            if not options and words:  # the bot's
                transcriber_prompt = transcriber_prompt or (transcriber.hotwords(vocabulary) or "")
            transcriber.close()
    return {
        "questions": {"source": f"{len(questions)} questions about {documents}, said by the bundled Piper voice, "
                                f"white noise at {snr_db:g} dB SNR",
                      "seconds": round(sum(a.size for a in questions.values()) / STT_SAMPLE_RATE, 2),
                      "vocabulary_terms": len(vocabulary), "prompt": transcriber_prompt,
                      "document_terms_ms": lookup,
                      "results": sets["questions"]},
        "everyday": {"source": f"{len(EVERYDAY)} everyday questions without the documents' words, said by the "
                                f"bundled Piper voice, white noise at {snr_db:g} dB SNR", "results": sets["everyday"]},
        "audio": {"source": source, "files": len(alsa),
                  "seconds": round(sum(a.size for a in alsa.values()) / STT_SAMPLE_RATE, 2)},  # fmt: skip
        "runs": runs,
        "compute_type": "int8",
        "results": sets["alsa"],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}, ctranslate2 {ctranslate2.__version__}",
    }


def _line(row: dict[str, Any]) -> str:
    sides = f", sides named {row['sides_named']}/{row['files']}" if "sides_named" in row else ""
    return (
        f"{row['engine']:16} WER {row['wer']:.3f}{sides}, noise "
        f"{row['noise_transcript']!r}; RTF {row['rtf']:.3f} ({row['transcribe_s']['p50']:.2f} s p50, "
        f"{row['transcribe_s']['p95']:.2f} s p95); load {row['load_s']:.2f} s; "
        f"loop lag max {row['loop_lag_ms']['max']} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--snr", type=float, default=15.0, help="signal-to-noise ratio of the questions, in dB")
    parser.add_argument("--models", nargs="+", default=[BUNDLED_WHISPER_MODEL])
    parser.add_argument("--models-dir", type=Path, default=Path("data/models"))
    args = parser.parse_args()
    result = asyncio.run(run(args.runs, args.models, args.models_dir, args.snr))
    print(f"audio: {result['audio']['seconds']} s of {result['audio']['source']}; "
          f"{result['questions']['seconds']} s of {result['questions']['source']}; {result['machine']}")
    write_json_atomic(RESULTS, result)


if __name__ == "__main__":
    main()
