"""Fairness benchmark: does one member's backlog delay another member's first answer?

The real bot runs against the sandbox, with LLM_MAX_CONCURRENCY=2, in front of the Ollama stand-in limited to 2
parallel answers (``num_parallel=2``, as OLLAMA_NUM_PARALLEL=2; in this process, so that the driver sees which
questions reached it), each answer taking ``--first-token-ms`` plus its tokens at ``--tokens-per-s``.
``--members`` members (``member-1`` ...) each send ``--requests-per-member`` /ask questions back to back, one
member after the other, each question as soon as the previous one is queued or reached the model (a few ms): a
burst, in which later members' questions arrive behind the backlog of the members before them.

Measured per request: the time from sending the interaction to the first answer token in the channel (time to
first token, TTFT; queue notices do not count). Reported per member (p50/p95 of their requests, and their first
request's TTFT) and over all members (p50/p95/max of first requests, of all requests), for the fair queue and
for the same queue with fairness off (LLM_QUEUE_FAIR=false: arrival order, as Ollama itself serves), one bot
after the other in the same run, against the same stand-in.

Usage: ``.venv/bin/python -m bench.bench_fairness [--members 20] [--requests-per-member 5]
[--first-token-ms 200] [--tokens-per-s 50]``; writes bench/results/fairness.json (``--output``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import percentile
from bot.streaming import CURSOR
from config import load_settings
from sandbox import Sandbox
from services.files import write_json_atomic
from tests.fakes.ollama import FakeOllama, default_responder
from tests.support.bot_harness import running_bot

RESULTS = Path(__file__).resolve().parent / "results" / "fairness.json"
ANSWER_START = "You said:"  # the stand-in's answer; a queue notice or "thinking..." never starts with it
QUEUED = "⏳ Queued:"
PARALLEL = 2


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 1), "p95": round(percentile(values, 95), 1),
            "max": round(max(values), 1)}


async def burst(sandbox: Sandbox, fake: FakeOllama, members: int, per_member: int,
                timeout_s: float) -> dict[str, list[float]]:
    """Send the burst; returns member -> TTFT in ms of each of their requests, in the order they were sent."""
    events = sandbox.subscribe()
    first_token_at: dict[int, float] = {}
    queued: set[int] = set()  # interactions that showed a queue notice
    reached: set[str] = set()  # questions that reached the model
    finished: set[int] = set()
    progress = asyncio.Event()  # set whenever one of the above grows

    async def until(condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():
                progress.clear()
                await progress.wait()

    def respond(body: dict[str, Any]) -> str:
        reached.add(body["messages"][-1]["content"])
        progress.set()
        return default_responder(body)

    async def collect() -> None:
        while True:
            event = await events.get()
            content = event.get("content") or ""
            interaction_id = event.get("interaction_id")
            if event["event"] not in ("message", "edit") or not interaction_id:
                continue
            if content.startswith(QUEUED):
                queued.add(interaction_id)
            if content.startswith(ANSWER_START):
                first_token_at.setdefault(interaction_id, time.perf_counter())
                if not content.endswith(CURSOR):
                    finished.add(interaction_id)
            progress.set()

    fake.responder = respond
    collector = asyncio.create_task(collect())
    sent: list[tuple[str, int, float]] = []
    try:
        # A first question opens the document index (its worker process); not measured.
        warm_up = await sandbox.invoke("owner", "ask", {"question": "warming up"})
        await until(lambda: warm_up.interaction_id in finished)
        for member in range(1, members + 1):
            for number in range(per_member):
                name, question = f"member-{member}", f"question {number} of member-{member}"
                started = time.perf_counter()
                handle = await sandbox.invoke(name, "ask", {"question": question})
                sent.append((name, handle.interaction_id, started))
                # The bot handles interactions concurrently: without this wait (a few ms), a member's questions
                # could enter the queue in another order than sent (whichever finished its document search first).
                await until(lambda: handle.interaction_id in queued or question in reached)  # noqa: B023
        await until(lambda: all(interaction_id in finished for _, interaction_id, _ in sent))
    finally:
        collector.cancel()
        sandbox.unsubscribe(events)
    ttft: dict[str, list[float]] = {}
    for name, interaction_id, started in sent:
        ttft.setdefault(name, []).append(round((first_token_at[interaction_id] - started) * 1000, 1))
    return ttft


async def measure(fake: FakeOllama, fair: bool, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            DISCORD_TOKEN=None, OLLAMA_HOST=fake.url, DATA_DIR=Path(tmp) / "data",
            DOCUMENTS_DIR=Path(tmp) / "documents", CHAT_COOLDOWN_S=0, LLM_MAX_CONCURRENCY=PARALLEL,
            LLM_QUEUE_MAX=args.members * args.requests_per_member, LLM_QUEUE_FAIR=fair,
        )
        async with Sandbox() as sandbox, running_bot(sandbox, settings, ready_timeout_s=60):
            ttft = await burst(sandbox, fake, args.members, args.requests_per_member, timeout_s=600)
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
    # In this process (unlike bench/flood.py) so that the burst can see which questions reached the model.
    fake = FakeOllama(first_token_latency_s=args.first_token_ms / 1000, tokens_per_s=args.tokens_per_s,
                      num_parallel=PARALLEL)
    await fake.start()
    try:
        fair = await measure(fake, True, args)
        fifo = await measure(fake, False, args)
    finally:
        await fake.stop()
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
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print_table(result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("fair", "fifo")}))
    write_json_atomic(args.output, result)


if __name__ == "__main__":
    main()
