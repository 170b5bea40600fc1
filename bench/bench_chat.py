"""Chat overhead benchmark: what the bot adds between a /chat interaction and the first visible token.

The real bot runs against the sandbox and the Ollama stand-in, whose first-token latency is fixed
(``--first-token-ms``). For each /chat, the time from sending the interaction to the sandbox seeing the
first answer token in the channel is measured; the bot's overhead is that time minus the stand-in's
first-token latency. Reported: p50/p95/max overhead, plus event-loop lag while answers stream.

Usage: ``.venv/bin/python -m bench.bench_chat [--runs 30] [--first-token-ms 200]``; writes
bench/results/chat.json. ``--engine real`` measures instead what a CPU-only owner waits, against a real model
(``bench/real_engine.py``), and writes bench/results/real_model.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import percentile
from bot.streaming import CURSOR
from config import load_settings
from sandbox import Sandbox
from services.files import write_json_atomic
from tests.fakes.ollama import FakeOllama
from tests.support.bot_harness import running_bot
from tests.support.loop_lag import LoopLagProbe

RESULTS = Path(__file__).resolve().parent / "results" / "chat.json"
REAL_RESULTS = Path(__file__).resolve().parent / "results" / "real_model.json"


async def chat_overhead_ms(sandbox: Sandbox, number: int, first_token_ms: float) -> float:
    """One /chat: ms from the interaction to the first answer token in the channel, minus the stand-in's latency;
    returns once the whole answer is in (a second question in the channel would queue behind it)."""
    queue = sandbox.subscribe()
    try:
        started = time.perf_counter()
        handle = await sandbox.invoke("alice", "chat", {"message": f"question {number}"}, channel="general")
        while True:
            event = await asyncio.wait_for(queue.get(), timeout=30)
            if (event["event"] in ("message", "edit") and event.get("interaction_id") == handle.interaction_id
                    and "Hello" in (event.get("content") or "")):
                break
        overhead = (time.perf_counter() - started) * 1000 - first_token_ms
        while not (event["event"] in ("message", "edit")
                   and event.get("interaction_id") == handle.interaction_id
                   and not (event.get("content") or "").endswith(CURSOR)):
            event = await asyncio.wait_for(queue.get(), timeout=30)
        return overhead
    finally:
        sandbox.unsubscribe(queue)


async def run(runs: int, first_token_ms: float) -> dict[str, Any]:
    fake = FakeOllama(first_token_latency_s=first_token_ms / 1000, tokens_per_s=50)
    await fake.start()
    fake.responder = lambda body: "Hello " + "more words follow. " * 5  # "Hello" is one token
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = load_settings(
                DISCORD_TOKEN=None, OLLAMA_HOST=fake.url, DATA_DIR=Path(tmp) / "data",
                DOCUMENTS_DIR=Path(tmp) / "documents", CHAT_COOLDOWN_S=0,
            )
            async with Sandbox() as sandbox, running_bot(sandbox, settings, ready_timeout_s=30):
                probe = LoopLagProbe()
                probe.start()
                overheads: list[float] = []
                try:
                    for number in range(runs):
                        overheads.append(await chat_overhead_ms(sandbox, number, first_token_ms))
                finally:
                    lag = probe.stop()
    finally:
        await fake.stop()
    return {
        "runs": runs,
        "first_token_latency_ms": first_token_ms,
        "overhead_ms": {
            "p50": round(statistics.median(overheads), 1),
            "p95": round(percentile(overheads, 95), 1),
            "max": round(max(overheads), 1),
        },
        "loop_lag_ms_while_streaming": lag,
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--first-token-ms", type=float, default=200.0)
    parser.add_argument("--engine", choices=("stand-in", "real"), default="stand-in",
                        help="stand-in: the bot's overhead against the scripted Ollama stand-in (chat.json); real: "
                        "what a CPU-only owner waits, against llama.cpp with SmolLM2-135M (bench/real_engine.py, "
                        "real_model.json)")
    args = parser.parse_args()
    if args.engine == "real":
        from bench.real_engine import run as run_real

        result = asyncio.run(run_real(".venv/bin/python -m bench.bench_chat --engine real"))
        write_json_atomic(REAL_RESULTS, result)
        return
    result = asyncio.run(run(args.runs, args.first_token_ms))
    print(json.dumps(result, indent=2))
    write_json_atomic(RESULTS, result)


if __name__ == "__main__":
    main()
