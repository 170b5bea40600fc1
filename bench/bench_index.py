"""Indexing and retrieval benchmark of services/knowledge/index.py on the Ollama documentation corpus.

Usage: ``.venv/bin/python -m bench.bench_index [--corpus PATH] [--ollama URL --embed-model NAME]``

The corpus (default ``../shared/corpus/ollama-docs`` relative to the repository root) is copied to a temporary
``DOCUMENTS_DIR/global``; the index uses the real ``LLMClient`` against FakeOllama, served from its own process
like a real Ollama (so the lag measured below is the bot's loop, not the fake's hashing), or
against a real Ollama server with ``--ollama``. Measured, with the default chunking settings:

- full index: seconds, chunks, chunks/s, embed calls; event-loop lag p50/p99/max during it (a ticker that
  sleeps 5 ms and records how late it wakes up);
- no-change reload: seconds and ratio to the full index time (expected: no embedding at all);
- one-file-changed reload: seconds, chunks embedded;
- query latency p50/p95 over ~50 queries (questions plus every ``OLLAMA_*`` setting name in the corpus), and
  for the setting names how often the top hit contains the name (exact-term recall@1).

Prints the figures and writes them to ``bench/results/index.json``. A benchmark, not a test: no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import OllamaProcess, percentile
from config import Settings
from services.chat.llm import LLMClient
from services.files import write_json_atomic
from services.knowledge.index import DocumentIndex
from tests.support.loop_lag import LoopLagProbe

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "corpus" / "ollama-docs"
RESULTS = REPO_ROOT / "bench" / "results" / "index.json"
TICK_S = 0.005

QUESTIONS = [
    "How do I set the context length?", "How can I expose Ollama on my network?", "How do I use a GPU with Docker?",
    "How do I stream responses?", "What is tool calling?", "How do I generate embeddings?",
    "How can I keep a model loaded in memory?", "Where are models stored?", "How do I upgrade Ollama?",
    "How do I use the OpenAI compatible API?", "How do I pull a model?", "What are structured outputs?",
    "How does thinking work?", "How do I run Ollama in Docker?", "How do I import a GGUF model?",
    "How do I create a Modelfile?", "Which GPUs are supported?", "How do I view the logs on Linux?",
    "How do I use web search?", "How do I configure a proxy server?", "What is the default port?",
    "How do I unload a model?", "How do I use vision models with images?", "What does num_ctx do?",
    "How do I sign in to Ollama cloud?", "How do I uninstall Ollama on macOS?", "What is the generate endpoint?",
    "How do I set a system prompt?", "How many requests are handled in parallel?", "How do I use Ollama with VS Code?",
]


@contextmanager
def timer() -> Iterator[dict[str, float]]:
    result: dict[str, float] = {}
    started = time.perf_counter()
    yield result
    result["s"] = time.perf_counter() - started


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


async def run(corpus: Path, ollama_url: str | None, embed_model: str, chroma_process: bool) -> dict[str, Any]:
    settings = Settings()
    fake = None if ollama_url else OllamaProcess()
    url = ollama_url or await fake.start()  # type: ignore[union-attr]
    llm = LLMClient(host=url, chat_model=settings.CHAT_MODEL, embed_model=embed_model, timeout_s=120.0,
                    num_ctx=settings.LLM_NUM_CTX, keep_alive=settings.LLM_KEEP_ALIVE,
                    embed_batch_size=settings.EMBED_BATCH_SIZE)
    work = Path(tempfile.mkdtemp(prefix="bench-index-"))
    try:
        documents = work / "documents"
        shutil.copytree(corpus, documents / "global")
        index = DocumentIndex(embedder=llm, index_dir=work / "index", documents_dir=documents,
                              doc_max_bytes=settings.DOC_MAX_BYTES, chunk_max_chars=settings.CHUNK_MAX_CHARS,
                              chunk_overlap_chars=settings.CHUNK_OVERLAP_CHARS,
                              embed_batch_size=settings.EMBED_BATCH_SIZE, chroma_process=chroma_process)
        await llm.embed(["warm-up"])  # connection and (with real Ollama) model load, outside the timings
        await index.search(None, "warm-up")  # starts the ChromaDB client (and its worker), outside the timings

        probe = LoopLagProbe(TICK_S)
        probe.start()
        full = await index.reload("global", full=True)
        lag = probe.stop()
        chunks = full.chunks_embedded
        no_change = await index.reload("global")

        target = max((documents / "global").rglob("*.md*"), key=lambda p: p.stat().st_size)
        relative = target.relative_to(documents / "global").as_posix()
        target.write_text(target.read_text(encoding="utf-8") + "\n\n## Benchmark edit\n\nOne more paragraph.\n")
        one_changed = await index.reload("global")

        text = "\n".join(p.read_text(encoding="utf-8") for p in (documents / "global").rglob("*") if p.is_file())
        settings_names = sorted(set(re.findall(r"\bOLLAMA_[A-Z_]+[A-Z]\b", text)))
        queries = QUESTIONS + settings_names[: max(0, 50 - len(QUESTIONS))]
        await index.search(None, "warm up the lexical index")  # the BM25 corpus is already built by reload
        latencies: list[float] = []
        exact_hits = 0
        for query in queries:
            with timer() as took:
                hits = await index.search(None, query, k=settings.RETRIEVAL_TOP_K)
            latencies.append(took["s"])
            if query in settings_names and hits and query in hits[0].text:
                exact_hits += 1
        exact_total = sum(1 for q in queries if q in settings_names)
        await index.close()
    finally:
        await llm.close()
        if fake is not None:
            await fake.stop()
        shutil.rmtree(work, ignore_errors=True)

    files = len(full.added)
    return {
        "backend": ollama_url or "FakeOllama (own process) via the real LLMClient",
        "embed_model": embed_model,
        "chroma": "embedded, worker process" if chroma_process else "embedded, in the bot's process (threads)",
        "corpus": {"path": str(corpus), "files_indexed": files, "files_skipped": len(full.skipped),
                   "chunks": chunks},
        "settings": {"chunk_max_chars": settings.CHUNK_MAX_CHARS, "chunk_overlap_chars": settings.CHUNK_OVERLAP_CHARS,
                     "embed_batch_size": settings.EMBED_BATCH_SIZE, "top_k": settings.RETRIEVAL_TOP_K},
        "full_index": {"seconds": round(full.seconds, 3), "chunks_per_s": round(chunks / full.seconds, 1),
                       "embed_calls": full.embed_calls},
        "event_loop_lag_during_full_index_ms": lag,
        "no_change_reload": {"seconds": round(no_change.seconds, 4), "embed_calls": no_change.embed_calls,
                             "ratio_to_full": round(no_change.seconds / full.seconds, 4)},
        "one_file_changed_reload": {"file": relative, "seconds": round(one_changed.seconds, 4),
                                    "chunks_embedded": one_changed.chunks_embedded,
                                    "embed_calls": one_changed.embed_calls},
        "query_latency_ms": {"queries": len(latencies), "p50": ms(percentile(latencies, 50)),
                             "p95": ms(percentile(latencies, 95)), "max": ms(max(latencies, default=0.0))},
        "exact_term_recall_at_1": {
            "queries": exact_total,
            "top_hit_contains_term": round(exact_hits / exact_total, 3) if exact_total else None,
        },
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }


def report(results: dict[str, Any]) -> None:
    full, lag = results["full_index"], results["event_loop_lag_during_full_index_ms"]
    print(f"\n== ChromaDB {results['chroma']}")
    print(f"backend: {results['backend']} ({results['embed_model']})")
    print(f"corpus: {results['corpus']['files_indexed']} files, {results['corpus']['chunks']} chunks")
    print(f"full index: {full['seconds']:.2f} s, {full['chunks_per_s']} chunks/s, {full['embed_calls']} embed calls")
    print(f"event-loop lag during full index: p50 {lag['p50']} ms, p99 {lag['p99']} ms, max {lag['max']} ms")
    nc, oc = results["no_change_reload"], results["one_file_changed_reload"]
    print(f"no-change reload: {nc['seconds'] * 1000:.1f} ms ({nc['ratio_to_full']:.2%} of full), "
          f"{nc['embed_calls']} embed calls")
    print(f"one file changed ({oc['file']}): {oc['seconds'] * 1000:.1f} ms, {oc['chunks_embedded']} chunks embedded")
    q, exact = results["query_latency_ms"], results["exact_term_recall_at_1"]
    print(f"query latency over {q['queries']} queries: p50 {q['p50']} ms, p95 {q['p95']} ms")
    print(f"exact setting-name queries: top hit contains the name {exact['top_hit_contains_term']} "
          f"({exact['queries']} queries)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder of documents to index")
    parser.add_argument("--ollama", default=None, help="URL of a real Ollama server (default: in-process fake)")
    parser.add_argument("--embed-model", default="nomic-embed-text", help="embedding model name")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        print(f"Skipped: corpus not found at {args.corpus} (pass --corpus PATH to a folder of .md/.mdx/.txt/.pdf).")
        return 0
    # Both ChromaDB placements in one run, so the comparison is side by side on this noisy machine.
    runs = {
        "worker_process": asyncio.run(run(args.corpus.resolve(), args.ollama, args.embed_model, True)),
        "in_process": asyncio.run(run(args.corpus.resolve(), args.ollama, args.embed_model, False)),
    }
    corpus_bytes = sum(p.stat().st_size for p in args.corpus.rglob("*") if p.is_file())
    for results in runs.values():
        results["corpus"]["bytes"] = corpus_bytes
    write_json_atomic(RESULTS, runs)
    for results in runs.values():
        report(results)
    print(f"written to {RESULTS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
