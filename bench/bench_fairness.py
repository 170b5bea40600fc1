"""Fairness benchmark: does one member's backlog delay another member's first answer?

The real bot runs against the sandbox, with LLM_MAX_CONCURRENCY=2, in front of the Ollama stand-in (its own
process) limited to 2 parallel answers (``--num-parallel 2``, as OLLAMA_NUM_PARALLEL=2), each answer taking
``--first-token-ms`` plus its tokens at ``--tokens-per-s``. ``--members`` members (``member-1`` ...) each send
``--requests-per-member`` /ask questions back to back, one member after the other, as fast as the sandbox takes
them (a burst: by the time the last member asks, everyone else's questions are waiting).

Measured per request: the time from sending the interaction to the first answer token in the channel (time to
first token, TTFT; queue notices do not count). Reported per member (p50/p95 of their requests, and their first
request's TTFT) and over all members (p50/p95/max of first requests, of all requests), for the fair queue and
for the same queue with fairness off (LLM_QUEUE_FAIR=false: arrival order, as Ollama itself serves), one bot
after the other in the same run, against the same stand-in.

Usage: ``.venv/bin/python -m bench.bench_fairness [--members 20] [--requests-per-member 5]
[--first-token-ms 200] [--tokens-per-s 50]``; writes bench/results/fairness.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import OllamaProcess, percentile
from bot.streaming import CURSOR
from config import load_settings
from sandbox import Sandbox
from services.files import write_json_atomic
from tests.support.bot_harness import running_bot

RESULTS = Path(__file__).resolve().parent / "results" / "fairness.json"
ANSWER_START = "You said:"  # the stand-in's answer; a queue notice or "thinking..." never starts with it
PARALLEL = 2


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 1), "p95": round(percentile(values, 95), 1),
            "max": round(max(values), 1)}


async def burst(sandbox: Sandbox, members: int, per_member: int, timeout_s: float) -> dict[str, list[float]]:
    """Send the burst; returns member -> TTFT in ms of each of their requests, in the order they were sent."""
    events = sandbox.subscribe()
    first_token_at: dict[int, float] = {}
    finished: set[int] = set()
    progress = asyncio.Event()  # set whenever an answer finishes

    async def finishing(interaction_ids: set[int]) -> None:
        while not interaction_ids <= finished:
            progress.clear()
            await progress.wait()

    async def collect() -> None:
        while True:
            event = await events.get()
            content = event.get("content") or ""
            interaction_id = event.get("interaction_id")
            if event["event"] in ("message", "edit") and interaction_id and content.startswith(ANSWER_START):
                first_token_at.setdefault(interaction_id, time.perf_counter())
                if not content.endswith(CURSOR):
                    finished.add(interaction_id)
                    progress.set()

    collector = asyncio.create_task(collect())
    sent: list[tuple[str, int, float]] = []
    try:
        # A first question opens the document index (its worker process) and the model; not measured.
        warm_up = await sandbox.invoke("owner", "ask", {"question": "warming up"})
        await asyncio.wait_for(finishing({warm_up.interaction_id}), timeout_s)
        for member in range(1, members + 1):
            for number in range(per_member):
                name = f"member-{member}"
                started = time.perf_counter()
                handle = await sandbox.invoke(name, "ask", {"question": f"question {number} of {name}"})
                sent.append((name, handle.interaction_id, started))
        await asyncio.wait_for(finishing({interaction_id for _, interaction_id, _ in sent}), timeout_s)
    finally:
        collector.cancel()
        sandbox.unsubscribe(events)
    ttft: dict[str, list[float]] = {}
    for name, interaction_id, started in sent:
        ttft.setdefault(name, []).append(round((first_token_at[interaction_id] - started) * 1000, 1))
    return ttft


async def measure(ollama_url: str, fair: bool, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            DISCORD_TOKEN=None, OLLAMA_HOST=ollama_url, DATA_DIR=Path(tmp) / "data",
            DOCUMENTS_DIR=Path(tmp) / "documents", CHAT_COOLDOWN_S=0, LLM_MAX_CONCURRENCY=PARALLEL,
            LLM_QUEUE_MAX=args.members * args.requests_per_member, LLM_QUEUE_FAIR=fair,
        )
        async with Sandbox() as sandbox, running_bot(sandbox, settings, ready_timeout_s=60):
            ttft = await burst(sandbox, args.members, args.requests_per_member, timeout_s=600)
    firsts = [values[0] for values in ttft.values()]
    every = [value for values in ttft.values() for value in values]
    return {
        "first_request_ttft_ms": summary(firsts),
        "all_requests_ttft_ms": summary(every),
        "per_member_ttft_ms": {
            name: {"first": values[0], "p50": round(percentile(values, 50), 1),
                   "p95": round(percentile(values, 95), 1)}
            for name, values in ttft.items()
        },
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ollama = OllamaProcess("--num-parallel", str(PARALLEL), "--first-token-ms", str(args.first_token_ms),
                           "--tokens-per-s", str(args.tokens_per_s))
    url = await ollama.start()
    try:
        fair = await measure(url, True, args)
        fifo = await measure(url, False, args)
    finally:
        await ollama.stop()
    return {
        "members": args.members,
        "requests_per_member": args.requests_per_member,
        "llm_max_concurrency": PARALLEL,
        "stand_in": {"num_parallel": PARALLEL, "first_token_ms": args.first_token_ms,
                     "tokens_per_s": args.tokens_per_s},
        "fair": fair,
        "fifo": fifo,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
                   f"{platform.python_version()}",
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"{'member':>10} | {'fair first':>10} {'p50':>8} {'p95':>8} | {'FIFO first':>10} {'p50':>8} {'p95':>8}")
    fair, fifo = result["fair"]["per_member_ttft_ms"], result["fifo"]["per_member_ttft_ms"]
    for name, row in fair.items():
        other = fifo[name]
        print(f"{name:>10} | {row['first']:>10.0f} {row['p50']:>8.0f} {row['p95']:>8.0f} | "
              f"{other['first']:>10.0f} {other['p50']:>8.0f} {other['p95']:>8.0f}")
    for key in ("first_request_ttft_ms", "all_requests_ttft_ms"):
        print(f"{key}: fair {result['fair'][key]}  FIFO {result['fifo'][key]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--requests-per-member", type=int, default=5)
    parser.add_argument("--first-token-ms", type=float, default=200.0)
    parser.add_argument("--tokens-per-s", type=float, default=50.0)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print_table(result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("fair", "fifo")}))
    write_json_atomic(RESULTS, result)


if __name__ == "__main__":
    main()
