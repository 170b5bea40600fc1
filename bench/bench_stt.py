"""Speech recognition benchmark: word error rate and real-time factor of the bundled Whisper tiny.en on this CPU.

The set is the eight ALSA channel-test recordings of /work/shared/speech/alsa ("Front Left", "Rear Center"...),
each taken through the bot's own path (48 kHz stereo s16le as Discord delivers it, then ``to_mono_16k``) and
transcribed through ``Transcriber.transcribe`` (worker thread, as the bot does), after one warm-up; ``Noise.wav``
must give nothing. Without the recordings, the bundled Piper voice says the eight channel names instead. Reported
per model:

- ``wer``: word error rate over the set (jiwer, after lowercasing and removing punctuation); the reference of
  ``Front_Left.wav`` is "front left";
- ``sides_named``: recordings whose transcript has the channel's side (left, right, center);
- ``rtf``: transcription seconds / audio seconds over the set (< 1: faster than real time), and the p50 and max
  seconds per recording; ``load_s`` (hash check included); the event-loop lag while it ran.

``--models`` times other faster-whisper models too (size names from MODELS_DIR's cache or downloaded when the
network allows, or folders); they are never replaced by the bundled model here.

Usage: ``.venv/bin/python -m bench.bench_stt [--runs 3] [--models tiny.en base.en]``; writes
bench/results/stt.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import ctranslate2
import numpy as np
import soundfile as sf

from services.audio import STT_SAMPLE_RATE, to_discord_pcm, to_mono_16k
from services.bundled_models import BUNDLED_WHISPER_MODEL
from services.files import write_json_atomic
from services.stt import FasterWhisperTranscriber
from services.tts import PiperSynthesizer
from tests.support.loop_lag import LoopLagProbe
from tests.support.wer import word_error_rate

RESULTS = Path(__file__).resolve().parent / "results" / "stt.json"
ALSA_DIR = Path(__file__).resolve().parents[2] / "shared" / "speech" / "alsa"
CHANNELS = [f"{row}_{side}" for row in ("Front", "Rear", "Side") for side in ("Left", "Center", "Right")
            if (row, side) != ("Side", "Center")]  # fmt: skip


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


async def measure(transcriber: FasterWhisperTranscriber, audio: dict[str, np.ndarray], noise: np.ndarray | None,
                  runs: int) -> dict[str, Any]:  # fmt: skip
    """Load ``transcriber`` (timed), warm it up once, then transcribe the set ``runs`` times."""
    started = time.perf_counter()
    await asyncio.to_thread(transcriber.load)
    load_s = time.perf_counter() - started
    await transcriber.transcribe(next(iter(audio.values())))
    seconds: dict[str, list[float]] = {name: [] for name in audio}
    heard: dict[str, str] = {}
    probe = LoopLagProbe()
    probe.start()
    try:
        for _ in range(runs):
            for name, samples in audio.items():
                transcript = await transcriber.transcribe(samples)
                seconds[name].append(transcript.transcribe_s)
                heard[name] = transcript.text
        noise_text = (await transcriber.transcribe(noise)).text if noise is not None else None
    finally:
        lag = probe.stop()
    references = [name.replace("_", " ").lower() for name in audio]
    hypotheses = [heard[name] for name in audio]
    per_file = [statistics.median(values) for values in seconds.values()]
    audio_s = sum(samples.size for samples in audio.values()) / STT_SAMPLE_RATE
    return {
        "engine": transcriber.name,
        "model": transcriber.source.describe() if transcriber.source else None,
        "load_s": round(load_s, 3),
        "wer": round(word_error_rate(references, hypotheses), 4),
        "sides_named": sum(name.split("_")[-1].lower() in heard[name].lower() for name in audio),
        "files": len(audio),
        "noise_transcript": noise_text,
        "rtf": round(sum(per_file) / audio_s, 4),
        "transcribe_s": {"p50": round(statistics.median(per_file), 3), "max": round(max(per_file), 3)},
        "heard": heard,
        "loop_lag_ms": lag,
    }


async def run(runs: int, models: list[str], models_dir: Path) -> dict[str, Any]:
    audio, noise, source = speech_set()
    rows = []
    for model in models:
        transcriber = FasterWhisperTranscriber(model, models_dir, "int8", fallback=False)
        rows.append(await measure(transcriber, audio, noise, runs))
        transcriber.close()
        print(_line(rows[-1]), flush=True)
    return {
        "audio": {"source": source, "files": len(audio),
                  "seconds": round(sum(a.size for a in audio.values()) / STT_SAMPLE_RATE, 2)},  # fmt: skip
        "runs": runs,
        "compute_type": "int8",
        "results": rows,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}, ctranslate2 {ctranslate2.__version__}",
    }


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['engine']:18} WER {row['wer']:.3f}, sides named {row['sides_named']}/{row['files']}, noise "
        f"{row['noise_transcript']!r}; RTF {row['rtf']:.3f} ({row['transcribe_s']['p50']:.2f} s p50, "
        f"{row['transcribe_s']['max']:.2f} s max); load {row['load_s']:.2f} s; "
        f"loop lag max {row['loop_lag_ms']['max']} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=[BUNDLED_WHISPER_MODEL])
    parser.add_argument("--models-dir", type=Path, default=Path("data/models"))
    args = parser.parse_args()
    result = asyncio.run(run(args.runs, args.models, args.models_dir))
    print(f"audio: {result['audio']['seconds']} s of {result['audio']['source']}; {result['machine']}")
    write_json_atomic(RESULTS, result)


if __name__ == "__main__":
    main()
