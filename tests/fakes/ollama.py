"""A wire-faithful stand-in for the Ollama HTTP API, for tests and for trying the bot without Ollama.

It serves the endpoints the bot uses, with the shapes the real server sends (and the real ``ollama``
python client parses):

- ``POST /api/chat``: NDJSON stream of ``{"model", "created_at", "message": {"role": "assistant",
  "content": <token>}, "done": false}`` lines and a final ``"done": true`` line with ``done_reason`` and the
  timing/count fields (durations in nanoseconds); one JSON object when ``"stream": false``.
- ``POST /api/embed``: ``{"model", "embeddings": [[float, ...], ...], "total_duration", "load_duration",
  "prompt_eval_count"}``; the vectors are deterministic feature hashes of the words (see ``hashed_embedding``),
  so lexically similar texts get similar, L2-normalised vectors.
- ``GET /api/tags``, ``POST /api/show``, ``GET /api/ps``, ``GET /api/version``, ``GET /`` ("Ollama is running").

Reasoning models, as Ollama serves them: a model of ``thinking_models`` (by name without tag: qwen3, deepseek-r1)
has the "thinking" capability; asked with ``"think": true`` it streams its thinking (``thinking_responder``) in
``message.thinking`` chunks before the content; with ``think`` unset it writes it in the content between
``<think>`` and ``</think>``, and with ``false`` it does not think. A model of ``think_tag_models`` (an older
template) has no "thinking" capability but always writes such a block in its content. Any model without the
capability answers ``"think": true`` with 400 ``{"error": "\"NAME\" does not support thinking"}``.

An unknown model answers 404 ``{"error": "model \\"x\\" not found, try pulling it first"}`` like Ollama.
Failures can be switched on per endpoint with ``fail_chat`` / ``fail_embed``:

- ``"404"``: the model-not-found answer; ``"500"``: an Ollama-style internal error;
- ``"hang"``: read the request and never answer (until ``stop()``);
- ``"drop"``: stream about half of the answer, then close the connection (embed: close before answering);
- ``"stall"``: stream about half of the answer, then stop sending while keeping the connection open.

Like Ollama with OLLAMA_NUM_PARALLEL, ``num_parallel`` (``--num-parallel``) limits the chat answers generated at
once per model; further requests wait in the server, in arrival order, before their first token (0: no limit).

Run alone: ``python -m tests.fakes.ollama --port 11434 --first-token-ms 300 --tokens-per-s 40``; add
``--fail-chat MODE`` / ``--fail-embed MODE`` to try the faults above by hand (``--help`` lists them).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import inspect
import json
import math
import re
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

FailMode = Literal["404", "500", "hang", "drop", "stall"] | None
FAIL_MODES = ("404", "500", "hang", "drop", "stall")
Responder = Callable[[dict[str, Any]], str | Awaitable[str]]

DEFAULT_EMBED_DIM = 256
OPEN_THINK, CLOSE_THINK = "<think>", "</think>"
# Models whose name starts with one of these see images ("vision" in /api/show's capabilities), as those families do.
VISION_MODELS = ("llava", "gemma3", "llama3.2-vision", "qwen2.5vl", "moondream")
FAKE_VERSION = "0.6.5"

# Word pieces: optional leading whitespace + up to 5 word characters, or one punctuation mark; trailing
# whitespace on its own. Concatenating the pieces gives back the text exactly.
_TOKEN_RE = re.compile(r"\s*(?:\w{1,5}|[^\w\s])|\s+")
_WORD_RE = re.compile(r"\w+")
# Go's time.ParseDuration syntax, which Ollama applies to a string keep_alive ("5m", "1h30m", "-1s", "0").
_GO_DURATION_RE = re.compile(r"^[-+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+)$")


def split_tokens(text: str) -> list[str]:
    """Split ``text`` into word-piece tokens whose concatenation is ``text``."""
    return _TOKEN_RE.findall(text)


def normalize_model(name: str) -> str:
    """``"llama3.2"`` -> ``"llama3.2:latest"``; a name with a tag is kept (the tag is after the last ``/``)."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def hashed_embedding(text: str, dim: int = DEFAULT_EMBED_DIM, seed: str = "") -> list[float]:
    """A deterministic embedding of ``text``: ``dim`` floats, L2 norm 1.

    Lowercased word tokens (weight 1) and word bigrams (weight 0.5) are hashed (blake2b, so stable across
    processes) into signed buckets; texts sharing words therefore have a high cosine similarity and unrelated
    texts one near 0. ``seed`` (the model name) gives each model its own vector space. A text without words
    gets a fixed unit vector.
    """
    words = _WORD_RE.findall(text.lower())
    features = [(word, 1.0) for word in words]
    features += [(f"{a} {b}", 0.5) for a, b in zip(words, words[1:], strict=False)]
    vector = [0.0] * dim
    for feature, weight in features:
        value = int.from_bytes(hashlib.blake2b(f"{seed}\x00{feature}".encode(), digest_size=8).digest(), "little")
        vector[value % dim] += weight if value >> 63 else -weight
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        vector[0] = 1.0
        return vector
    return [v / norm for v in vector]


def capabilities(name: str) -> list[str]:
    """What /api/show says model ``name`` can do: embedding models embed, vision families see images."""
    if "embed" in name:
        return ["embedding"]
    if normalize_model(name).startswith(VISION_MODELS):
        return ["completion", "vision"]
    return ["completion", "tools"]


def default_responder(body: dict[str, Any]) -> str:
    """The default answer: ``"You said: <content of the last user message>"``."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return f"You said: {message.get('content', '')}"
    return "You said nothing."


def default_thinking_responder(body: dict[str, Any]) -> str:
    """The default thinking: ``"Thinking it over: the member said <content of the last user message>."``."""
    said = next((m.get("content", "") for m in reversed(body.get("messages") or []) if m.get("role") == "user"), "")
    return f"Thinking it over: the member said {said}."


async def _call(responder: Responder, body: dict[str, Any]) -> str:
    answer = responder(body)
    if inspect.isawaitable(answer):
        answer = await answer
    return answer


def _base_name(model: str) -> str:
    return normalize_model(model).rsplit(":", 1)[0]


def _now() -> str:
    # Ollama sends RFC 3339 with sub-second digits and a Z suffix.
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class FakeOllama:
    """An Ollama server on 127.0.0.1 (random port unless given) served by aiohttp.

    first_token_latency_s: seconds before the first token (and the response headers, as with Ollama).
    tokens_per_s: generation rate; 0 sends every token as fast as possible.
    models: the pulled models; a name without a tag means ``:latest``.
    embed_dims: embedding dimension per model name (default ``default_embed_dim``, 256).
    num_parallel: chat answers generated at once per model, as Ollama's OLLAMA_NUM_PARALLEL; the others wait
    (0: no limit). ``generating`` counts the answers being generated, ``peak_generating`` its highest value.

    Tests read ``chat_requests`` (chat request bodies, in order), ``embed_requests``, ``embed_calls``
    (``/api/embed`` requests), ``embedded_texts`` (inputs embedded), ``active_requests`` (handlers running),
    ``generating``, ``peak_generating``, ``open_connections`` and ``received_images`` (the decoded ``images`` of chat
    messages; a model outside ``VISION_MODELS`` refuses images with Ollama's 500); they set ``responder``,
    ``thinking_responder``, ``fail_chat``, ``fail_embed`` and the latency/rate. thinking_models / think_tag_models:
    models (names without tag) that think, with the "thinking" capability or an older template (see the module
    docstring).
    """

    def __init__(
        self,
        first_token_latency_s: float = 0.0,
        tokens_per_s: float = 0.0,
        models: Iterable[str] = ("llama3.2", "nomic-embed-text"),
        embed_dims: Mapping[str, int] | None = None,
        *,
        default_embed_dim: int = DEFAULT_EMBED_DIM,
        host: str = "127.0.0.1",
        port: int = 0,
        num_parallel: int = 0,
        thinking_models: Iterable[str] = ("qwen3", "deepseek-r1"),
        think_tag_models: Iterable[str] = (),
    ) -> None:
        if num_parallel < 0:
            raise ValueError("num_parallel must not be negative")
        self.num_parallel = num_parallel
        self._runners: dict[str, asyncio.Semaphore] = {}  # model -> its parallel slots
        self.generating = 0
        self.peak_generating = 0
        self.first_token_latency_s = first_token_latency_s
        self.tokens_per_s = tokens_per_s
        self.models: list[str] = list(models)
        self.embed_dims: dict[str, int] = {normalize_model(k): v for k, v in (embed_dims or {}).items()}
        self.default_embed_dim = default_embed_dim
        self.responder: Responder = default_responder
        self.thinking_responder: Responder = default_thinking_responder
        self.thinking_models = {_base_name(m) for m in thinking_models}
        self.think_tag_models = {_base_name(m) for m in think_tag_models}
        self.fail_chat: FailMode = None
        self.fail_embed: FailMode = None
        self.chat_requests: list[dict[str, Any]] = []
        self.received_images: list[bytes] = []  # images of chat messages, decoded, in the order received
        self.embed_requests: list[dict[str, Any]] = []
        self.embed_calls = 0
        self.embedded_texts = 0
        self.active_requests = 0
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()  # set by stop(): wakes handlers that "hang" or "stall"
        self.url = ""

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening; ``url`` is then ``"http://127.0.0.1:PORT"``."""
        app = web.Application(client_max_size=256 * 1024**2)  # aiohttp's 1 MiB default would refuse big batches
        app.router.add_get("/", self._root)
        app.router.add_post("/api/chat", self._chat)
        app.router.add_post("/api/embed", self._embed)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_post("/api/show", self._show)
        app.router.add_get("/api/ps", self._ps)
        app.router.add_get("/api/version", self._version)
        self._release = asyncio.Event()
        # Short shutdown timeout: stop() releases hung handlers itself and must never wait long.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]  # the port the OS picked when port is 0
        self.url = f"http://{self._host}:{port}"

    async def stop(self) -> None:
        """Stop the server, closing every connection, including requests left hanging; idempotent."""
        self._release.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeOllama:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def reset_counters(self) -> None:
        """Forget the recorded requests and zero the counters."""
        self.chat_requests.clear()
        self.embed_requests.clear()
        self.embed_calls = 0
        self.embedded_texts = 0
        self.peak_generating = self.generating

    @property
    def open_connections(self) -> int:
        """TCP connections currently open to the server (idle keep-alive ones included)."""
        if self._runner is None or self._runner.server is None:
            return 0
        return len(self._runner.server.connections)

    def embed_dim(self, model: str) -> int:
        """The embedding dimension the fake gives ``model``."""
        return self.embed_dims.get(normalize_model(model), self.default_embed_dim)

    def embedding(self, text: str, model: str = "nomic-embed-text") -> list[float]:
        """The vector ``/api/embed`` returns for ``text`` with ``model``."""
        return hashed_embedding(text, self.embed_dim(model), seed=normalize_model(model))

    def has_model(self, name: str) -> bool:
        return normalize_model(name) in {normalize_model(m) for m in self.models}

    def thinks(self, name: str) -> bool:
        """Whether ``name`` has the "thinking" capability (an older template's model has not)."""
        return _base_name(name) in self.thinking_models - self.think_tag_models

    # -- helpers ---------------------------------------------------------------------------------------

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    @staticmethod
    def _not_found(model: str) -> web.Response:
        # Ollama: c.JSON(404, gin.H{"error": fmt.Sprintf("model %q not found, try pulling it first", name)})
        return FakeOllama._error(404, f"model {json.dumps(model)} not found, try pulling it first")

    async def _read_body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError as exc:
            return self._error(400, f"invalid character in request body: {exc.msg}")
        if not isinstance(body, dict):
            return self._error(400, "json: cannot unmarshal into Go value of type api.Request")
        return body

    def _check_request(self, body: dict[str, Any]) -> web.Response | None:
        """Ollama's own validation: a model is required; keep_alive is a number or a Go duration string."""
        if not body.get("model"):
            return self._error(400, "model is required")
        keep_alive = body.get("keep_alive")
        if isinstance(keep_alive, str) and not _GO_DURATION_RE.match(keep_alive):
            return self._error(400, f'time: missing unit in duration "{keep_alive}"')
        if keep_alive is not None and not isinstance(keep_alive, (str, int, float)):
            return self._error(400, f"Unsupported type: '{type(keep_alive).__name__}'")
        return None

    async def _wait_released(self, request: web.Request) -> None:
        """Wait until stop() or until the client goes away, whichever comes first."""
        while not self._release.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await self._release.wait()

    @staticmethod
    def _cut(request: web.Request) -> None:
        # close(), not abort(): what was already written is flushed, then the peer sees the connection end
        # without the final chunk, exactly like an Ollama process that died mid-answer.
        if request.transport is not None:
            request.transport.close()

    async def _embeddings(self, texts: list[str], model: str) -> list[list[float]]:
        """The vectors ``/api/embed`` returns for ``texts`` (a subclass with a real engine asks it)."""
        return [self.embedding(text, model) for text in texts]

    async def _answer(self, body: dict[str, Any]) -> str:
        return str(await _call(self.responder, body))

    async def _pace(self, tokens: int) -> None:
        if self.tokens_per_s > 0 and tokens > 0:
            await asyncio.sleep(tokens / self.tokens_per_s)

    # -- endpoints -------------------------------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": FAKE_VERSION})

    async def _tags(self, request: web.Request) -> web.Response:
        models = []
        for name in self.models:
            full = normalize_model(name)
            digest = hashlib.sha256(full.encode()).hexdigest()
            family = "nomic-bert" if "embed" in full else "llama"
            models.append(
                {
                    "name": full,
                    "model": full,
                    "modified_at": "2025-01-01T00:00:00.000000000Z",
                    "size": 2_019_393_189 if family == "llama" else 274_302_450,
                    "digest": digest,
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": family,
                        "families": [family],
                        "parameter_size": "3.2B" if family == "llama" else "137M",
                        "quantization_level": "Q4_K_M" if family == "llama" else "F16",
                    },
                }
            )
        return web.json_response({"models": models})

    async def _ps(self, request: web.Request) -> web.Response:
        return web.json_response({"models": []})

    async def _show(self, request: web.Request) -> web.Response:
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            return body
        name = body.get("model") or body.get("name") or ""
        if not self.has_model(name):
            return self._error(404, f"model '{name}' not found")
        embedding = "embed" in name
        family = "nomic-bert" if embedding else "llama"
        info_key = f"{family}.embedding_length" if embedding else f"{family}.context_length"
        return web.json_response(
            {
                "modelfile": f"FROM {normalize_model(name)}\n",
                "parameters": "" if embedding else 'stop "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": family,
                    "families": [family],
                    "parameter_size": "137M" if embedding else "3.2B",
                    "quantization_level": "F16" if embedding else "Q4_K_M",
                },
                "model_info": {"general.architecture": family, info_key: self.embed_dim(name) if embedding else 131072},
                "capabilities": [*capabilities(name), *(["thinking"] if self.thinks(name) else [])],
                "modified_at": "2025-01-01T00:00:00.000000000Z",
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.active_requests += 1
        try:
            return await self._chat_inner(request)
        finally:
            self.active_requests -= 1

    async def _chat_inner(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            return body
        self.chat_requests.append(body)
        if (invalid := self._check_request(body)) is not None:
            return invalid
        model: str = body["model"]
        fail = self.fail_chat
        if fail == "404" or not self.has_model(model):
            return self._not_found(model)
        if body.get("think") is True and not self.thinks(model):
            # Ollama: c.JSON(400, gin.H{"error": fmt.Sprintf("%q does not support thinking", req.Model)})
            return self._error(400, f"{json.dumps(model)} does not support thinking")
        if fail == "500":
            return self._error(500, "llama runner process has terminated: signal: killed")
        images = [image for message in body.get("messages") or [] for image in message.get("images") or []]
        if images and "vision" not in capabilities(model):
            return self._error(500, "this model is missing data required for image input")
        try:
            self.received_images += [base64.b64decode(image, validate=True) for image in images]
        except (ValueError, TypeError):
            return self._error(400, "illegal base64 data in images")
        if fail == "hang":
            await self._wait_released(request)
            self._cut(request)
            return web.Response(status=503)
        if not self.num_parallel:
            return await self._generate(request, body, model)
        # Ollama's scheduler: a model's runner answers num_parallel requests at once; the others wait for a slot.
        runner = self._runners.setdefault(normalize_model(model), asyncio.Semaphore(self.num_parallel))
        async with runner:
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)  # the client gave up while waiting
            return await self._generate(request, body, model)

    async def _generate(self, request: web.Request, body: dict[str, Any], model: str) -> web.StreamResponse:
        self.generating += 1
        self.peak_generating = max(self.peak_generating, self.generating)
        try:
            return await self._generate_inner(request, body, model)
        finally:
            self.generating -= 1

    async def _generate_inner(self, request: web.Request, body: dict[str, Any], model: str) -> web.StreamResponse:
        fail = self.fail_chat
        started = time.perf_counter_ns()
        answer = await self._answer(body)
        thought = ""
        if self.thinks(model) and body.get("think") is not False or _base_name(model) in self.think_tag_models:
            thought = str(await _call(self.thinking_responder, body))
        if thought and body.get("think") is not True:  # no separate field: the thinking goes in the content
            answer, thought = f"{OPEN_THINK}{thought}{CLOSE_THINK}\n\n{answer}", ""
        thinking_tokens = split_tokens(thought)
        tokens = split_tokens(answer)
        prompt_tokens = sum(len(split_tokens(str(m.get("content") or ""))) for m in body.get("messages") or [])
        # Ollama writes the headers together with the first token, so the latency delays both.
        if self.first_token_latency_s > 0:
            await asyncio.sleep(self.first_token_latency_s)
        cut_at = max(1, len(tokens) // 2)

        def stats() -> dict[str, Any]:
            total = time.perf_counter_ns() - started
            return {
                "done_reason": "stop",
                "done": True,
                "total_duration": total,
                "load_duration": 1_000_000,
                "prompt_eval_count": prompt_tokens,
                "prompt_eval_duration": 1_000_000,
                "eval_count": len(thinking_tokens) + len(tokens),
                "eval_duration": max(0, total - 2_000_000),
            }

        if body.get("stream", True) is False:
            await self._pace(len(tokens))
            if fail in ("drop", "stall"):
                if fail == "stall":
                    await self._wait_released(request)
                self._cut(request)
                return web.Response(status=503)
            message = {"role": "assistant", "content": "".join(tokens), **({"thinking": thought} if thought else {})}
            return web.json_response({"model": model, "created_at": _now(), "message": message, **stats()})

        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            for token in thinking_tokens:
                chunk = {"model": model, "created_at": _now(),
                         "message": {"role": "assistant", "content": "", "thinking": token}, "done": False}
                await response.write(json.dumps(chunk).encode() + b"\n")
                await self._pace(1)
            for index, token in enumerate(tokens):
                if index:
                    await self._pace(1)
                if fail in ("drop", "stall") and index == cut_at:
                    if fail == "stall":
                        await self._wait_released(request)
                    self._cut(request)
                    return response
                chunk = {
                    "model": model,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": token},
                    "done": False,
                }
                await response.write(json.dumps(chunk).encode() + b"\n")
            final = {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": ""}, **stats()}
            await response.write(json.dumps(final).encode() + b"\n")
            await response.write_eof()
        except ConnectionError:
            # The client went away mid-stream (it stopped reading or timed out): Ollama sees a cancel and stops.
            return response
        return response

    async def _embed(self, request: web.Request) -> web.StreamResponse:
        self.active_requests += 1
        try:
            return await self._embed_inner(request)
        finally:
            self.active_requests -= 1

    async def _embed_inner(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            return body
        self.embed_calls += 1
        self.embed_requests.append(body)
        if (invalid := self._check_request(body)) is not None:
            return invalid
        model: str = body["model"]
        fail = self.fail_embed
        if fail == "404" or not self.has_model(model):
            return self._not_found(model)
        if fail == "500":
            return self._error(500, "llama runner process has terminated: exit status 2")
        if fail in ("hang", "stall"):
            await self._wait_released(request)
            self._cut(request)
            return web.Response(status=503)
        if fail == "drop":
            self._cut(request)
            return web.Response(status=503)

        raw = body.get("input", [])
        texts = [raw] if isinstance(raw, str) else list(raw)
        if not all(isinstance(t, str) for t in texts):
            return self._error(400, "invalid input type")
        started = time.perf_counter_ns()
        self.embedded_texts += len(texts)
        if self.first_token_latency_s > 0:
            await asyncio.sleep(self.first_token_latency_s)
        embeddings = await self._embeddings(texts, model)
        return web.json_response(
            {
                "model": model,
                "embeddings": embeddings,
                "total_duration": time.perf_counter_ns() - started,
                "load_duration": 1_000_000,
                "prompt_eval_count": sum(len(split_tokens(text)) for text in texts),
            }
        )


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeOllama(
        first_token_latency_s=args.first_token_ms / 1000,
        tokens_per_s=args.tokens_per_s,
        models=[m.strip() for m in args.models.split(",") if m.strip()],
        host=args.host,
        port=args.port,
        num_parallel=args.num_parallel,
        think_tag_models=[m.strip() for m in args.think_tag_models.split(",") if m.strip()],
    )
    fake.fail_chat, fake.fail_embed = args.fail_chat, args.fail_embed
    if args.answer is not None:
        fake.responder = lambda body: args.answer
    await fake.start()
    faults = "".join(f"; /api/{name} fails: {mode}" for name, mode in (("chat", args.fail_chat),
                                                                       ("embed", args.fail_embed)) if mode)
    print(f"Fake Ollama listening on {fake.url} (models: {', '.join(fake.models)}){faults}; Ctrl-C to stop.",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows: Ctrl-C still interrupts
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await fake.stop()


FAULTS_HELP = """\
fault modes (--fail-chat for /api/chat, --fail-embed for /api/embed):
  404    answer 404 {"error": "model \\"NAME\\" not found, try pulling it first"}, as Ollama does for a model
         that is not pulled
  500    answer 500 {"error": "llama runner process has terminated: ..."}, as Ollama does when its model
         runner dies
  hang   read the request and never answer (not even the headers) until the stand-in stops
  drop   chat: stream about half of the answer, then close the connection (no final "done" line);
         embed, or chat with "stream": false: close the connection without answering
  stall  chat: stream about half of the answer, then send nothing more while keeping the connection open;
         embed, or chat with "stream": false: like hang (one JSON answer has no half to send)"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Run the fake Ollama server (deterministic answers and embeddings).",
        epilog=FAULTS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=11434, help="port to listen on (default 11434; 0 = any free one)")
    parser.add_argument("--first-token-ms", type=float, default=0.0, help="milliseconds before the first token")
    parser.add_argument("--tokens-per-s", type=float, default=0.0, help="tokens per second; 0 = as fast as possible")
    parser.add_argument("--num-parallel", type=int, default=0,
                        help="chat answers generated at once per model, like OLLAMA_NUM_PARALLEL; the others wait "
                             "(default 0: no limit)")
    parser.add_argument("--models", default="llama3.2,nomic-embed-text", help="comma-separated pulled models")
    parser.add_argument("--think-tag-models", default="",
                        help="comma-separated models whose (older) template writes <think>...</think> in the answer; "
                             "qwen3 and deepseek-r1 think through the thinking field")
    parser.add_argument("--answer", help="answer every chat with this text (default: 'You said: <last message>')")
    parser.add_argument("--fail-chat", choices=FAIL_MODES, metavar="MODE",
                        help="make every /api/chat request fail: 404, 500, hang, drop or stall (see below)")
    parser.add_argument("--fail-embed", choices=FAIL_MODES, metavar="MODE",
                        help="make every /api/embed request fail: 404, 500, hang, drop or stall (see below)")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
