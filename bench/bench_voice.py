"""Voice benchmark: /speak to first frame, and the pacing of the audio while the bot is busy.

The real bot speaks through the sandbox, whose UDP reader thread timestamps every Opus frame on arrival.

1. Time to first frame: ``--runs`` times, a member uses /speak; measured is the time from the interaction
   to the first frame at the sandbox, and the bot's overhead = that time minus the synthesis time of the
   first sentence (the same sentence synthesized by the same engine just before, warm).
2. Inter-frame gap p99 at the sandbox for the same long speech, side by side: once with the bot otherwise
   idle, once while 20 /chat answers stream (Ollama stand-in, 25 tokens/s) and an admin runs a full
   /docs reload of the document corpus (``../shared/corpus/ollama-docs`` when present, else the test
   fixtures).

The bot speaks with the bundled Piper voice (en_US-joe-medium).

Usage: ``.venv/bin/python -m bench.bench_voice [--runs 10]``; writes bench/results/voice.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import percentile
from config import load_settings
from sandbox import Sandbox
from services.files import write_json_atomic
from services.speech.speech_text import split_sentences
from tests.fakes.ollama import FakeOllama
from tests.support.bot_harness import running_bot

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "voice.json"
CORPUS = ROOT.parent / "shared" / "corpus" / "ollama-docs"
FIXTURE_DOCS = ROOT / "tests" / "fixtures" / "docs"
SHORT = "Welcome to the voice channel, everyone. The meeting starts in five minutes."
LONG = " ".join(f"Item {n} on the agenda is the report from the team, with questions after it." for n in range(1, 10))


async def spurt_after(sandbox: Sandbox, count: int) -> dict[str, Any]:
    """Wait (up to 2 minutes) until the bot has finished its ``count``-th talk spurt; returns it."""
    await sandbox.wait_for(lambda ev: ev["event"] == "voice_audio" and ev["member"] == "Assistant"
                           and len(sandbox.voice_spurts("Assistant")) >= count, timeout=120, since=0)
    return sandbox.voice_spurts("Assistant")[count - 1]


async def run(runs: int) -> dict[str, Any]:
    fake = FakeOllama(tokens_per_s=25)
    fake.responder = lambda body: " ".join(["This answer streams for a few seconds."] * 8)
    await fake.start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-voice-"))
    corpus = CORPUS if CORPUS.is_dir() else FIXTURE_DOCS
    shutil.copytree(corpus, tmp / "documents" / "global")
    settings = load_settings(
        DISCORD_TOKEN=None, OLLAMA_HOST=fake.url, DATA_DIR=tmp / "data", DOCUMENTS_DIR=tmp / "documents",
        CHAT_COOLDOWN_S=0, VOICE_COOLDOWN_S=0, ADMIN_COOLDOWN_S=0,
    )
    try:
        async with Sandbox() as sandbox, running_bot(sandbox, settings, ready_timeout_s=30) as bot:
            await sandbox.join_voice("alice", "Lounge")
            position = sandbox.event_position
            await sandbox.invoke("alice", "join", {})
            await sandbox.wait_for(lambda ev: ev["event"] == "voice_state" and ev["member"] == "Assistant",
                                   timeout=30, since=position)
            synth = bot.synthesizer
            await asyncio.to_thread(synth.load)
            first_sentence = split_sentences(SHORT)[0]
            await synth.synthesize(first_sentence)  # warm-up

            latency_ms, overhead_ms = [], []
            for number in range(1, runs + 1):
                started = time.perf_counter()
                await synth.synthesize(first_sentence)
                synth_ms = (time.perf_counter() - started) * 1000
                position = sandbox.event_position
                await sandbox.invoke("alice", "speak", {"text": SHORT})
                command = await sandbox.wait_for(lambda ev: ev["event"] == "command", timeout=10, since=position)
                spurt = await spurt_after(sandbox, number)
                latency_ms.append(spurt["start_t_ms"] - command["t_ms"])
                overhead_ms.append(latency_ms[-1] - synth_ms)
                await asyncio.sleep(0.3)

            spoken = len(sandbox.voice_spurts("Assistant"))
            await sandbox.invoke("alice", "speak", {"text": LONG})
            idle = await spurt_after(sandbox, spoken + 1)

            await sandbox.invoke("alice", "speak", {"text": LONG})
            await asyncio.sleep(0.5)
            await sandbox.invoke("admin", "docs reload", {"full": True})
            for number in range(20):
                member = ("alice", "bob", "admin", "owner")[number % 4]
                await sandbox.invoke(member, "chat", {"message": f"question {number}"},
                                     channel=("general", "random")[number % 2])
            busy = await spurt_after(sandbox, spoken + 2)
            chats = len(fake.chat_requests)
    finally:
        await fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "engine": bot.synthesizer.name,
        "runs": runs,
        "speak_to_first_frame_ms": {"p50": round(statistics.median(latency_ms), 1),
                                    "p95": round(percentile(latency_ms, 95), 1)},
        "overhead_beyond_first_sentence_synthesis_ms": {"p50": round(statistics.median(overhead_ms), 1),
                                                        "p95": round(percentile(overhead_ms, 95), 1),
                                                        "max": round(max(overhead_ms), 1)},
        "gap_p99_ms": {"idle": idle["gap_p99_ms"], "while_20_chats_and_reindex": busy["gap_p99_ms"]},
        "speech_seconds": {"idle": idle["seconds"], "busy": busy["seconds"]},
        "chat_answers_during_busy_speech": chats,
        "corpus": corpus.name,
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    result = asyncio.run(run(args.runs))
    print(json.dumps(result, indent=2))
    write_json_atomic(RESULTS, result)


if __name__ == "__main__":
    main()
