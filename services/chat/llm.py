"""Ollama client wrapper: streamed chat, batched embeddings, model listing; timeouts and typed errors.

No discord imports. Every call goes through ``ollama.AsyncClient`` (httpx underneath) with one timeout,
``timeout_s``, applied to connecting and to *each* read: a server that is down, never answers, or stops
sending in the middle of an answer raises ``BackendUnavailable`` after at most ``timeout_s`` seconds without
data. A model that is not pulled raises ``ModelNotFound``. Other refusals by Ollama (HTTP 4xx) raise a
plain ``ServiceError`` whose message names the settings to check.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import ollama

from services.chat.thinking import ThinkTagSplitter
from services.errors import BackendUnavailable, ModelNotFound, ServiceError

log = logging.getLogger(__name__)

# What the ollama client (and httpx under it) can raise for a failed exchange. ValueError covers a body that
# is not JSON or not of the expected shape (json.JSONDecodeError and pydantic's ValidationError).
_CLIENT_ERRORS = (ollama.ResponseError, httpx.HTTPError, ConnectionError, ValueError)


def display_host(host: str) -> str:
    """``host`` without any ``user:password@`` part, so credentials never reach a message or the log."""
    parts = urllib.parse.urlsplit(host)
    if parts.username is None and parts.password is None:
        return host
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def normalize_model(name: str) -> str:
    """``"llama3.2"`` -> ``"llama3.2:latest"``, as Ollama resolves it; the tag is after the last ``/``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _wire_keep_alive(keep_alive: str | float) -> str | float:
    """Ollama parses a string keep_alive as a Go duration ("5m"), where "-1" or "300" is an error (missing unit);
    a numeric string is therefore sent as a number (seconds; negative = keep loaded forever)."""
    if isinstance(keep_alive, str):
        try:
            number = float(keep_alive)
        except ValueError:
            return keep_alive
        return int(number) if number.is_integer() else number
    return keep_alive


def _short(text: object, limit: int = 160) -> str:
    one_line = " ".join(str(text).split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


class LLMClient:
    """Async client of one Ollama server.

    host: Ollama URL, e.g. ``"http://127.0.0.1:11434"``. chat_model / embed_model: default model names.
    timeout_s: seconds allowed to connect and between two reads (so also the first-token wait).
    num_ctx: context window in tokens, sent as ``options.num_ctx`` on every chat and embed request.
    keep_alive: how long Ollama keeps the model loaded ("5m", "1h", seconds as a number, -1 = forever).
    embed_batch_size: texts per ``/api/embed`` request.

    One instance is shared by the bot; it holds a connection pool, released by ``close()``.
    """

    def __init__(
        self,
        *,
        host: str,
        chat_model: str,
        embed_model: str,
        timeout_s: float,
        num_ctx: int,
        keep_alive: str | float,
        embed_batch_size: int = 32,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if embed_batch_size < 1:
            raise ValueError("embed_batch_size must be at least 1")
        self.host = host.rstrip("/")
        self.chat_model = chat_model
        self.embed_model = embed_model
        self.timeout_s = timeout_s
        self.num_ctx = num_ctx
        self.keep_alive = keep_alive
        self.embed_batch_size = embed_batch_size
        self.display_host = display_host(self.host)
        # One number for connect, read, write and pool waits: httpx applies the read timeout to every socket
        # read, so a stream that goes silent mid-answer fails after timeout_s instead of hanging.
        self._client = ollama.AsyncClient(host=self.host, timeout=httpx.Timeout(timeout_s))
        self._closed = False
        self._thinks: dict[str, bool] = {}  # model (with tag) -> has the "thinking" capability

    @classmethod
    def from_settings(cls, settings: Any) -> LLMClient:
        """Build the client from ``config.Settings`` (OLLAMA_HOST, CHAT_MODEL, EMBED_MODEL, LLM_TIMEOUT_S,
        LLM_NUM_CTX, LLM_KEEP_ALIVE, EMBED_BATCH_SIZE)."""
        return cls(
            host=settings.OLLAMA_HOST,
            chat_model=settings.CHAT_MODEL,
            embed_model=settings.EMBED_MODEL,
            timeout_s=settings.LLM_TIMEOUT_S,
            num_ctx=settings.LLM_NUM_CTX,
            keep_alive=settings.LLM_KEEP_ALIVE,
            embed_batch_size=settings.EMBED_BATCH_SIZE,
        )

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- chat ------------------------------------------------------------------------------------------

    async def chat_stream(self, messages: list[dict[str, str]], *, model: str | None = None,
                          thinking: list[str] | None = None) -> AsyncIterator[str]:
        """Stream an answer: yields the content deltas (str, non-empty) in the order Ollama generates them.

        messages: ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``, oldest first.
        model: overrides ``chat_model``.
        thinking: a list that receives the model's thinking, in pieces (str), in order. The thinking is never
        yielded: a model with the "thinking" capability is asked with ``think: true``, which puts it in the
        ``thinking`` field of the messages; ``<think>...</think>`` blocks in the content (older templates) are taken
        out of it (``services.chat.thinking``). Without this list the thinking is dropped.
        Raises ModelNotFound when the model is not pulled; BackendUnavailable when Ollama cannot be reached,
        sends nothing for ``timeout_s`` seconds (before or between tokens), fails, or ends the stream early.
        Closing the generator early (``aclose()``, ``break`` then garbage collection, or cancellation of the
        consumer) closes the HTTP response, which makes Ollama stop generating; prefer
        ``contextlib.aclosing`` so that it happens at once.
        """
        model = model or self.chat_model
        # Only a model that says it thinks may be sent `think`: Ollama refuses it (400) for any other.
        think = True if await self.supports_thinking(model) else None
        # Builds the request only (a malformed message raises here, as a programming error); the HTTP request
        # is sent on the first __anext__, inside the try below.
        stream = await self._client.chat(
            model=model,
            messages=messages,
            stream=True,
            think=think,
            options={"num_ctx": self.num_ctx},
            keep_alive=_wire_keep_alive(self.keep_alive),
        )
        thoughts: list[str] = thinking if thinking is not None else []
        splitter = ThinkTagSplitter()
        try:
            finished = False
            async for part in stream:
                if part.message.thinking:
                    thoughts.append(part.message.thinking)
                split = splitter.feed(part.message.content or "")
                if split.thinking:
                    thoughts.append(split.thinking)
                if split.answer:
                    yield split.answer
                if part.done:
                    finished = True
            if not finished:
                raise BackendUnavailable(
                    f"Ollama at {self.display_host} ended the answer before it was complete; "
                    "check the Ollama server log and try again."
                )
            split = splitter.finish()
            if split.thinking:
                thoughts.append(split.thinking)
            if split.answer:
                yield split.answer
        except _CLIENT_ERRORS as exc:
            raise self._map_error(exc, model, "chat") from exc
        finally:
            # Closes the inner generator's `async with client.stream(...)`, i.e. the HTTP response, when
            # we stop early (GeneratorExit at our yield) or fail; a no-op after a complete answer.
            await stream.aclose()

    async def chat(self, messages: list[dict[str, str]], *, model: str | None = None) -> str:
        """The whole answer as one string; same arguments and errors as ``chat_stream``.

        Streams under the hood so that ``timeout_s`` bounds the wait for each token, not the whole generation.
        """
        parts = [delta async for delta in self.chat_stream(messages, model=model)]
        return "".join(parts)

    # -- embeddings ------------------------------------------------------------------------------------

    async def embed(self, texts: Sequence[str], *, model: str | None = None) -> list[list[float]]:
        """Embed ``texts``: one vector (list of floats, the model's dimension) per text, in the same order.

        Sent through ``/api/embed`` in batches of ``embed_batch_size`` texts, one after the other; an empty
        ``texts`` makes no request. ``timeout_s`` applies to each batch request.
        Raises ModelNotFound when the embedding model is not pulled; BackendUnavailable when Ollama cannot
        be reached, does not answer in time, fails, or returns the wrong number of vectors.
        """
        model = model or self.embed_model
        texts = list(texts)
        # Checked here so that a ValueError from the client below can only mean an unreadable answer.
        if not all(isinstance(text, str) for text in texts):
            raise TypeError("texts must be strings")
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.embed_batch_size):
            batch = texts[start : start + self.embed_batch_size]
            try:
                response = await self._client.embed(
                    model=model,
                    input=batch,
                    options={"num_ctx": self.num_ctx},
                    keep_alive=_wire_keep_alive(self.keep_alive),
                )
            except _CLIENT_ERRORS as exc:
                raise self._map_error(exc, model, "embed") from exc
            if len(response.embeddings) != len(batch):
                raise BackendUnavailable(
                    f"Ollama at {self.display_host} returned {len(response.embeddings)} embeddings for "
                    f"{len(batch)} texts; check the Ollama server and the EMBED_MODEL setting."
                )
            vectors.extend([float(x) for x in vector] for vector in response.embeddings)
        return vectors

    # -- models ----------------------------------------------------------------------------------------

    async def list_models(self) -> list[str]:
        """Names of the models pulled on the server (``/api/tags``), with tags, e.g. ``["llama3.2:latest"]``.

        Raises BackendUnavailable when Ollama cannot be reached or does not answer within ``timeout_s``.
        """
        try:
            response = await self._client.list()
        except _CLIENT_ERRORS as exc:
            raise self._map_error(exc, "", "list models") from exc
        return [m.model for m in response.models if m.model]

    async def has_model(self, name: str) -> bool:
        """Whether ``name`` is pulled; a name without a tag means ``:latest`` ("llama3.2" ~ "llama3.2:latest").

        Raises BackendUnavailable like ``list_models``.
        """
        wanted = normalize_model(name)
        return any(normalize_model(listed) == wanted for listed in await self.list_models())

    async def capabilities(self, name: str) -> list[str]:
        """What model ``name`` can do, from ``/api/show``: e.g. ``["completion", "tools"]`` for a chat model,
        ``["embedding"]`` for an embedding model; empty when the server does not say (Ollama before 0.6).

        Raises ModelNotFound when it is not pulled, BackendUnavailable like ``list_models``.
        """
        try:
            response = await self._client.show(name)
        except _CLIENT_ERRORS as exc:
            raise self._map_error(exc, name, "show the model") from exc
        return list(response.capabilities or [])

    async def supports_thinking(self, name: str) -> bool:
        """Whether model ``name`` has the "thinking" capability (``/api/show``), i.e. accepts ``think: true``;
        asked once per model, then remembered. Raises like ``capabilities``."""
        key = normalize_model(name)
        if key not in self._thinks:
            self._thinks[key] = "thinking" in await self.capabilities(name)
        return self._thinks[key]

    async def close(self) -> None:
        """Close the connection pool; idempotent."""
        if not self._closed:
            self._closed = True
            await self._client.close()

    # -- errors ----------------------------------------------------------------------------------------

    def _map_error(self, exc: BaseException, model: str, action: str) -> ServiceError:
        """Turn an ollama/httpx exception into the typed error whose message tells the member what to do."""
        if isinstance(exc, ServiceError):
            return exc
        host = self.display_host
        log.warning("Ollama %s (model %r) at %s failed: %s: %s", action, model, host, type(exc).__name__, exc)
        if isinstance(exc, ollama.ResponseError):
            status, detail = exc.status_code, _short(exc.error)
            if status == 404 and model and "not found" in detail.lower():
                return ModelNotFound(model)
            if status == 404:
                return BackendUnavailable(
                    f"Ollama at {host} answered 404 to {action}; check that OLLAMA_HOST points to an Ollama server."
                )
            if status == -1 or status >= 500:  # -1: an error line inside a stream that had started
                return BackendUnavailable(
                    f"Ollama at {host} failed to {action} ({detail}); check the Ollama server log and try again."
                )
            return ServiceError(
                f"Ollama at {host} rejected the {action} request (HTTP {status}: {detail}); "
                "check the LLM_NUM_CTX, LLM_KEEP_ALIVE and model settings."
            )
        if isinstance(exc, httpx.ConnectTimeout):
            return BackendUnavailable(
                f"Ollama at {host} could not be reached within {self.timeout_s:g} s; check that it is running "
                "(`ollama serve`) and that OLLAMA_HOST is right."
            )
        if isinstance(exc, httpx.TimeoutException):
            return BackendUnavailable(
                f"Ollama at {host} did not answer within {self.timeout_s:g} s; it may be busy or still loading "
                "the model. Try again, or raise LLM_TIMEOUT_S."
            )
        if isinstance(exc, (httpx.ConnectError, ConnectionError)):
            return BackendUnavailable(
                f"Ollama at {host} could not be reached; check that it is running (`ollama serve`) "
                "and that OLLAMA_HOST is right."
            )
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            return BackendUnavailable(
                f"Ollama at {host} closed the connection before the answer was complete; "
                "check the Ollama server log and try again."
            )
        if isinstance(exc, ValueError):
            return BackendUnavailable(
                f"Ollama at {host} sent an answer that could not be read; check that OLLAMA_HOST points to an "
                "Ollama server."
            )
        return BackendUnavailable(
            f"Ollama at {host} could not be used ({type(exc).__name__}); check that it is running and that "
            "OLLAMA_HOST is right."
        )
