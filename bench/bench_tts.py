"""Speech synthesis benchmark: real-time factor of the bundled Piper voice (en_US-joe-medium), as the bot speaks.

The same answer (ANSWER, six sentences) is spoken ``--runs`` times through ``Synthesizer.stream``, i.e. sentence by
sentence, synthesis plus resampling to 48 kHz stereo in a worker thread. Reported:

- ``rtf``: real-time factor, synthesis seconds / audio seconds over all sentences (< 1: faster than real time);
  also the p50 and max of the per-sentence factor;
- ``first_audio_s``: p50 and max seconds from calling ``stream`` to holding the first sentence's audio, which is
  when playback can start;
- ``load_s``: one-time voice load (hash check included); event-loop lag (ms) while it all runs.

``--voice`` times another Piper voice the same way (a name in MODELS_DIR / downloadable, or a path to an .onnx);
it is never replaced by the bundled voice here.

Usage: ``.venv/bin/python -m bench.bench_tts [--runs 5] [--voice NAME_OR_PATH]``; writes bench/results/tts.json.
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

import onnxruntime

from services.files import write_json_atomic
from services.speech.bundled_models import BUNDLED_PIPER_VOICE
from services.speech.tts import PiperSynthesizer, Synthesizer
from tests.support.loop_lag import LoopLagProbe

RESULTS = Path(__file__).resolve().parent / "results" / "tts.json"
ANSWER = (
    "Sure, here is how to reset your password. Open the settings page and choose the account tab. "
    "Click on the button labelled reset password, then check your inbox for the confirmation email. "
    "The link in that email stays valid for thirty minutes. "
    "If nothing arrives, look in your spam folder before asking a moderator for help! "
    "Does that answer your question?"
)


async def measure(synth: Synthesizer, runs: int) -> dict[str, Any]:
    """Time ``runs`` streamed readings of ANSWER with ``synth`` (loaded first, and warmed up by one reading)."""
    started = time.perf_counter()
    await asyncio.to_thread(synth.load)
    load_s = time.perf_counter() - started
    [_ async for _ in synth.stream(ANSWER)]  # warm-up: first-call allocations, librosa's lazy imports
    synth_s: list[float] = []
    audio_s: list[float] = []
    first_audio_s: list[float] = []
    probe = LoopLagProbe()
    probe.start()
    try:
        for _ in range(runs):
            started = time.perf_counter()
            first = True
            async for audio in synth.stream(ANSWER):
                if first:
                    first_audio_s.append(time.perf_counter() - started)
                    first = False
                synth_s.append(audio.synth_seconds)
                audio_s.append(audio.duration_s)
    finally:
        lag = probe.stop()
    per_sentence = [s / a for s, a in zip(synth_s, audio_s, strict=True)]
    source = synth.source
    return {
        "engine": synth.name,
        "voice": source.describe() if source else None,
        "load_s": round(load_s, 3),
        "sentences": len(audio_s),
        "audio_s": round(sum(audio_s), 2),
        "synth_s": round(sum(synth_s), 3),
        "rtf": round(sum(synth_s) / sum(audio_s), 4),
        "rtf_per_sentence": {"p50": round(statistics.median(per_sentence), 4), "max": round(max(per_sentence), 4)},
        "first_audio_s": {"p50": round(statistics.median(first_audio_s), 3), "max": round(max(first_audio_s), 3)},
        "loop_lag_ms": lag,
    }


async def run(runs: int, voice: str, models_dir: Path) -> dict[str, Any]:
    row = await measure(PiperSynthesizer(voice, models_dir, fallback=False), runs)
    return {
        "text_chars": len(ANSWER),
        "runs": runs,
        "results": [row],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--voice", default=BUNDLED_PIPER_VOICE, help="a Piper voice name or .onnx path to time")
    parser.add_argument("--models-dir", type=Path, default=Path("data/models"))
    args = parser.parse_args()
    result = asyncio.run(run(args.runs, args.voice, args.models_dir))
    for row in result["results"]:
        print(
            f"{row['engine']:28} RTF {row['rtf']:.3f} (per sentence p50 {row['rtf_per_sentence']['p50']:.3f}, "
            f"max {row['rtf_per_sentence']['max']:.3f}); first audio after {row['first_audio_s']['p50'] * 1000:.0f} ms "
            f"p50; load {row['load_s']:.2f} s; loop lag max {row['loop_lag_ms']['max']} ms"
        )
    write_json_atomic(RESULTS, result)


if __name__ == "__main__":
    main()
