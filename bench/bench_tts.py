"""Speech synthesis benchmark: real-time factor of espeak-ng and of a Piper medium voice, as the bot speaks.

For each engine, the same answer (ANSWER, six sentences) is spoken ``--runs`` times through
``Synthesizer.stream``, i.e. sentence by sentence, synthesis plus resampling to 48 kHz stereo in a worker thread.
Reported per engine:

- ``rtf``: real-time factor, synthesis seconds / audio seconds over all sentences (< 1: faster than real time);
  also the p50 and max of the per-sentence factor;
- ``first_audio_s``: p50 and max seconds from calling ``stream`` to holding the first sentence's audio, which is
  when playback can start;
- ``load_s``: one-time voice load; event-loop lag (ms) while it all runs.

The Piper row uses a MEDIUM-architecture voice with random weights (it speaks noise, at a calibrated speaking rate):
timing only. Build it once with ``.venv/bin/python -m bench.make_piper_medium_random`` (needs
``pip install torch==2.13.0``); without it the row is skipped with a message. A real medium voice given with
``--piper-voice PATH.onnx`` is timed the same way.

Usage: ``.venv/bin/python -m bench.bench_tts [--runs 5] [--piper-voice PATH]``; writes bench/results/tts.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import onnxruntime

from bench.make_piper_medium_random import OUT_DIR, VOICE_NAME
from services.files import write_json_atomic
from services.tts import EspeakSynthesizer, PiperSynthesizer, Synthesizer
from tests.support.loop_lag import LoopLagProbe

RESULTS = Path(__file__).resolve().parent / "results" / "tts.json"
MEDIUM_RANDOM = OUT_DIR / f"{VOICE_NAME}.onnx"
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
    return {
        "engine": synth.name,
        "load_s": round(load_s, 3),
        "sentences": len(audio_s),
        "audio_s": round(sum(audio_s), 2),
        "synth_s": round(sum(synth_s), 3),
        "rtf": round(sum(synth_s) / sum(audio_s), 4),
        "rtf_per_sentence": {"p50": round(statistics.median(per_sentence), 4), "max": round(max(per_sentence), 4)},
        "first_audio_s": {"p50": round(statistics.median(first_audio_s), 3), "max": round(max(first_audio_s), 3)},
        "loop_lag_ms": lag,
    }


def describe_voice(model_path: Path) -> dict[str, Any] | None:
    """Size and config facts of a Piper voice file, or None when it is absent."""
    if not model_path.is_file():
        return None
    config = json.loads(model_path.with_name(model_path.name + ".json").read_text(encoding="utf-8"))
    return {
        "file": str(model_path),
        "mb": round(model_path.stat().st_size / 1e6, 1),
        "quality": config.get("audio", {}).get("quality"),
        "dataset": config.get("dataset"),
    }


async def run(runs: int, piper_voice: Path, piper_facts: dict[str, Any] | None) -> dict[str, Any]:
    rows: list[dict[str, Any]] = [await measure(EspeakSynthesizer("en-us"), runs)]
    skipped: list[str] = []
    if piper_facts is not None:
        piper = PiperSynthesizer(str(piper_voice), piper_voice.parent)
        rows.append({**await measure(piper, runs), "voice": piper_facts})
    else:
        skipped.append(
            f"piper: no voice at {piper_voice}; build the random-weight medium voice with "
            "`.venv/bin/python -m bench.make_piper_medium_random` (needs `pip install torch==2.13.0`)"
        )
    return {
        "text_chars": len(ANSWER),
        "runs": runs,
        "results": rows,
        "skipped": skipped,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--piper-voice", type=Path, default=MEDIUM_RANDOM, help="a Piper .onnx voice to time")
    args = parser.parse_args()
    result = asyncio.run(run(args.runs, args.piper_voice, describe_voice(args.piper_voice)))
    for row in result["results"]:
        print(
            f"{row['engine']:32} RTF {row['rtf']:.3f} (per sentence p50 {row['rtf_per_sentence']['p50']:.3f}, "
            f"max {row['rtf_per_sentence']['max']:.3f}); first audio after {row['first_audio_s']['p50'] * 1000:.0f} ms "
            f"p50; load {row['load_s']:.2f} s; loop lag max {row['loop_lag_ms']['max']} ms"
        )
    for message in result["skipped"]:
        print(f"skipped {message}")
    write_json_atomic(RESULTS, result)


if __name__ == "__main__":
    main()
