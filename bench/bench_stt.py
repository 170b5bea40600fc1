"""Speech recognition benchmark: real-time factor of faster-whisper (tiny, base, small) and PocketSphinx on this CPU.

One utterance of about 5 s is transcribed ``--runs`` times by each engine through ``Transcriber.transcribe`` (worker
thread, as the bot does), after one warm-up. The utterance is the ALSA channel-test recordings of
/work/shared/speech/alsa ("Front Center", "Front Left"...) joined with 0.3 s pauses until it lasts 5 s or more, or,
when they are absent, espeak-ng reading a sentence. Reported per engine: ``rtf`` (median transcription seconds /
audio seconds; < 1 is faster than real time), median and max seconds, model load seconds, and the event-loop lag
while it ran.

No Whisper checkpoint can be downloaded here, so the Whisper rows are models of the real ARCHITECTURES with random
weights (tests/fixtures/make_tiny_whisper.py through CTranslate2's spec API): tiny d=384 / 4+4 layers, base d=512 /
6+6, small d=768 / 12+12, 80 mels, the 51,864-token *.en vocabulary, stored as int8 and run with compute type int8.
The compute per step is the real one; what random weights cannot give is the real NUMBER of decoding steps, so the
text is made to run to exactly ``--tokens`` new tokens (default 20: ~5 s of speech at ~2.5 words a second, ~1.3
tokens a word, plus punctuation). The encoder always runs over a whole 30 s window (Whisper pads every input), so
its cost does not shrink with shorter utterances. Each size is timed with beam 1 (greedy) and beam 5.

Usage: ``.venv/bin/python -m bench.bench_stt [--runs 3] [--tokens 20] [--sizes tiny base small]``; writes
bench/results/stt.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ctranslate2
import numpy as np
import soundfile as sf

from services.audio import STT_SAMPLE_RATE, to_discord_pcm, to_mono_16k
from services.files import write_json_atomic
from services.stt import FasterWhisperTranscriber, PocketsphinxTranscriber, Transcriber
from services.tts import EspeakSynthesizer
from tests.fixtures.make_tiny_whisper import EN_VOCAB, SIZES, make_model
from tests.support.loop_lag import LoopLagProbe

RESULTS = Path(__file__).resolve().parent / "results" / "stt.json"
ALSA_DIR = Path(__file__).resolve().parents[2] / "shared" / "speech" / "alsa"
TARGET_S = 5.0
PAUSE_S = 0.3
FALLBACK_TEXT = "Hello there, could you tell me what the weather will be like in Paris tomorrow afternoon?"


def utterance() -> tuple[np.ndarray, str]:
    """~5 s of speech as the bot hands it to STT (16 kHz mono float32) and a description of its source."""
    pause = np.zeros(int(PAUSE_S * STT_SAMPLE_RATE), dtype=np.float32)
    pieces: list[np.ndarray] = []
    used: list[str] = []
    for path in sorted(ALSA_DIR.glob("*.wav")) if ALSA_DIR.is_dir() else []:
        if path.stem == "Noise":
            continue
        samples, rate = sf.read(path, dtype="int16", always_2d=True)
        # Through the bot's own path: 48 kHz stereo s16le as Discord delivers it, then to_mono_16k.
        pieces += [to_mono_16k(to_discord_pcm(samples, rate)), pause]
        used.append(path.stem)
        if sum(p.size for p in pieces) >= TARGET_S * STT_SAMPLE_RATE:
            return np.concatenate(pieces[:-1]), f"ALSA recordings {', '.join(used)} ({ALSA_DIR})"
    samples, rate = EspeakSynthesizer("en-us").synthesize_raw(FALLBACK_TEXT)
    return to_mono_16k(to_discord_pcm(samples, rate)), f"espeak-ng en-us: {FALLBACK_TEXT!r}"


async def measure(transcriber: Transcriber, audio: np.ndarray, runs: int) -> dict[str, Any]:
    """Load ``transcriber`` (timed), warm it up once, then time ``runs`` transcriptions of ``audio``."""
    started = time.perf_counter()
    await asyncio.to_thread(transcriber.load)
    load_s = time.perf_counter() - started
    warm = await transcriber.transcribe(audio)
    seconds: list[float] = []
    probe = LoopLagProbe()
    probe.start()
    try:
        for _ in range(runs):
            seconds.append((await transcriber.transcribe(audio)).transcribe_s)
    finally:
        lag = probe.stop()
    median = statistics.median(seconds)
    return {
        "engine": transcriber.name,
        "load_s": round(load_s, 3),
        "transcribe_s": {"p50": round(median, 3), "max": round(max(seconds), 3)},
        "rtf": round(median / warm.audio_s, 4),
        "text": warm.text[:80],
        "loop_lag_ms": lag,
    }


async def run(runs: int, tokens: int, sizes: list[str]) -> dict[str, Any]:
    audio, source = utterance()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-stt-") as scratch:
        for size_name in sizes:
            size = SIZES[size_name]
            started = time.perf_counter()
            # eot_bias -10: the random text never ends by itself, so every run decodes exactly `tokens` tokens.
            folder = await asyncio.to_thread(
                make_model, Path(scratch) / size_name, size, vocab_size=EN_VOCAB, eot_bias=-10.0
            )
            build_s = time.perf_counter() - started
            model_mb = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
            for beam in (1, 5):
                whisper = FasterWhisperTranscriber(
                    str(folder),
                    Path(scratch),
                    "int8",
                    max_no_speech_prob=1.0,  # keep the random text: the gate is not what is timed
                    min_avg_logprob=-1e9,
                    max_compression_ratio=float("inf"),
                    beam_size=beam,
                    decode_options={"max_new_tokens": tokens},
                )
                row = await measure(whisper, audio, runs)
                rows.append(
                    {
                        **row,
                        "engine": f"whisper-{size_name} (random weights) beam {beam}",
                        "size": size_name,
                        "dim": size.dim,
                        "layers": size.layers,
                        "beam_size": beam,
                        "new_tokens": tokens,
                        "model_mb": round(model_mb, 1),
                        "build_s": round(build_s, 1),
                    }
                )
                print(_line(rows[-1]), flush=True)
            await asyncio.to_thread(_remove, folder)
    rows.append(await measure(PocketsphinxTranscriber(), audio, runs))
    print(_line(rows[-1]), flush=True)
    return {
        "audio": {"source": source, "seconds": round(audio.size / STT_SAMPLE_RATE, 2)},
        "runs": runs,
        "compute_type": "int8",
        "results": rows,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}, ctranslate2 {ctranslate2.__version__}",
    }


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['engine']:42} RTF {row['rtf']:.3f} ({row['transcribe_s']['p50']:.2f} s p50, "
        f"{row['transcribe_s']['max']:.2f} s max); load {row['load_s']:.2f} s; "
        f"loop lag max {row['loop_lag_ms']['max']} ms"
    )


def _remove(folder: Path) -> None:
    for file in folder.iterdir():
        file.unlink()
    folder.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=20, help="new tokens decoded per utterance (default 20)")
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["tiny", "base", "small"])
    args = parser.parse_args()
    result = asyncio.run(run(args.runs, args.tokens, args.sizes))
    print(f"audio: {result['audio']['seconds']} s of {result['audio']['source']}; {result['machine']}")
    write_json_atomic(RESULTS, result)


if __name__ == "__main__":
    main()
