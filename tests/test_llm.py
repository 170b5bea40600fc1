"""services.chat.llm.LLMClient against the wire-faithful fake Ollama (tests/fakes/ollama.py)."""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import httpx
import ollama as ollama_lib
import pytest

from config import Settings
from services.chat.llm import LLMClient
from services.errors import BackendUnavailable, ModelNotFound, ServiceError
from tests.fakes.ollama import FakeOllama, split_tokens

ANSWER = "The quick brown fox jumps over the lazy dog, twice: once at dawn and once at dusk."


def make_client(fake: FakeOllama, **overrides: Any) -> LLMClient:
    kwargs: dict[str, Any] = {
        "host": fake.url,
        "chat_model": "llama3.2",
        "embed_model": "nomic-embed-text",
        "timeout_s": 2.0,
        "num_ctx": 4096,
        "keep_alive": "5m",
        "embed_batch_size": 32,
    }
    kwargs.update(overrides)
    return LLMClient(**kwargs)


@pytest.fixture
async def llm(ollama: FakeOllama) -> AsyncIterator[LLMClient]:
    client = make_client(ollama)
    try:
        yield client
    finally:
        await client.close()


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


USER = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]


# -- chat ------------------------------------------------------------------------------------------------


async def test_chat_stream_yields_deltas_in_order_with_options(ollama: FakeOllama, llm: LLMClient) -> None:
    ollama.responder = lambda body: ANSWER
    deltas = [delta async for delta in llm.chat_stream(USER)]
    assert deltas == split_tokens(ANSWER)
    assert len(deltas) > 10 and "".join(deltas) == ANSWER
    [body] = ollama.chat_requests
    assert body["model"] == "llama3.2"
    assert body["stream"] is True
    assert body["options"] == {"num_ctx": 4096}
    assert body["keep_alive"] == "5m"
    assert body["messages"] == USER


async def test_chat_default_responder_and_model_override(ollama: FakeOllama, llm: LLMClient) -> None:
    ollama.models.append("mistral:7b")
    assert await llm.chat(USER) == "You said: hello there"
    assert await llm.chat(USER, model="mistral:7b") == "You said: hello there"
    assert [b["model"] for b in ollama.chat_requests] == ["llama3.2", "mistral:7b"]


async def test_chat_streams_incrementally(ollama: FakeOllama, llm: LLMClient) -> None:
    ollama.tokens_per_s = 100
    ollama.responder = lambda body: ANSWER  # ~24 tokens: ~0.23 s at 100 tokens/s
    start = time.monotonic()
    arrivals = [time.monotonic() - start async for _ in llm.chat_stream(USER)]
    assert arrivals[-1] - arrivals[0] > 0.1  # tokens arrived spread out, not all at the end


async def test_numeric_keep_alive_is_sent_as_a_number(ollama: FakeOllama) -> None:
    # Ollama rejects the string "-1" (Go duration without unit); the client must send -1.
    async with make_client(ollama, keep_alive="-1") as client:
        assert await client.chat(USER) == "You said: hello there"
        await client.embed(["x"])
    assert ollama.chat_requests[0]["keep_alive"] == -1
    assert ollama.embed_requests[0]["keep_alive"] == -1


async def test_request_rejected_by_ollama_is_a_service_error(ollama: FakeOllama) -> None:
    async with make_client(ollama, keep_alive="forever") as client:
        with pytest.raises(ServiceError) as info:
            await client.chat(USER)
    assert not isinstance(info.value, (BackendUnavailable, ModelNotFound))
    assert "HTTP 400" in info.value.user_message and "LLM_KEEP_ALIVE" in info.value.user_message


# -- embeddings ------------------------------------------------------------------------------------------


async def test_embed_batches_and_keeps_order(ollama: FakeOllama, llm: LLMClient) -> None:
    texts = [f"document number {i} about topic {i % 7}" for i in range(70)]
    vectors = await llm.embed(texts)
    assert ollama.embed_calls == 3
    assert ollama.embedded_texts == 70
    assert [len(r["input"]) for r in ollama.embed_requests] == [32, 32, 6]
    assert vectors == [ollama.embedding(text) for text in texts]
    assert all(len(v) == 256 for v in vectors)
    for request in ollama.embed_requests:
        assert request["model"] == "nomic-embed-text"
        assert request["options"] == {"num_ctx": 4096}
        assert request["keep_alive"] == "5m"


async def test_embed_nothing_makes_no_request(ollama: FakeOllama, llm: LLMClient) -> None:
    assert await llm.embed([]) == []
    assert ollama.embed_calls == 0


async def test_similar_texts_have_higher_cosine(llm: LLMClient) -> None:
    query, similar, unrelated = await llm.embed(
        ["How do I reset my password?", "To reset your password, open settings.", "The weather in Paris is sunny."]
    )
    assert math.isclose(math.sqrt(sum(x * x for x in query)), 1.0, rel_tol=1e-9)
    assert cosine(query, similar) > cosine(query, unrelated) + 0.2


async def test_embed_dimension_follows_the_model() -> None:
    async with FakeOllama(
        models=("llama3.2", "nomic-embed-text", "mxbai-embed-large"), embed_dims={"mxbai-embed-large": 1024}
    ) as fake:
        async with make_client(fake) as client:
            [small] = await client.embed(["hello"])
            [large] = await client.embed(["hello"], model="mxbai-embed-large")
    assert (len(small), len(large)) == (256, 1024)


# -- models ----------------------------------------------------------------------------------------------


async def test_list_and_has_model(llm: LLMClient) -> None:
    assert await llm.list_models() == ["llama3.2:latest", "nomic-embed-text:latest"]
    assert await llm.has_model("llama3.2")
    assert await llm.has_model("llama3.2:latest")
    assert await llm.has_model("nomic-embed-text")
    assert not await llm.has_model("llama3.2:1b")
    assert not await llm.has_model("mistral")


async def test_from_settings(ollama: FakeOllama) -> None:
    settings = Settings(
        OLLAMA_HOST=ollama.url + "/",
        CHAT_MODEL="llama3.2",
        LLM_TIMEOUT_S=3,
        LLM_NUM_CTX=2048,
        LLM_KEEP_ALIVE="10m",
        EMBED_BATCH_SIZE=5,
    )
    async with LLMClient.from_settings(settings) as client:
        assert (client.host, client.chat_model, client.timeout_s) == (ollama.url, "llama3.2", 3.0)
        await client.embed(["a"] * 11)
        await client.chat(USER)
    assert ollama.embed_calls == 3
    assert ollama.chat_requests[0]["options"] == {"num_ctx": 2048}
    assert ollama.chat_requests[0]["keep_alive"] == "10m"


# -- errors ----------------------------------------------------------------------------------------------


async def test_unknown_model_is_model_not_found(ollama: FakeOllama, llm: LLMClient) -> None:
    with pytest.raises(ModelNotFound) as info:
        await llm.chat(USER, model="mistral")
    assert info.value.model == "mistral"
    assert "ollama pull mistral" in info.value.user_message
    with pytest.raises(ModelNotFound) as info:
        await llm.embed(["x"], model="all-minilm")
    assert "ollama pull all-minilm" in info.value.user_message


@pytest.mark.parametrize("endpoint", ["chat", "embed"])
async def test_forced_404_is_model_not_found(ollama: FakeOllama, llm: LLMClient, endpoint: str) -> None:
    setattr(ollama, f"fail_{endpoint}", "404")
    with pytest.raises(ModelNotFound) as info:
        await (llm.chat(USER) if endpoint == "chat" else llm.embed(["x"]))
    expected = "llama3.2" if endpoint == "chat" else "nomic-embed-text"
    assert f"ollama pull {expected}" in info.value.user_message


@pytest.mark.parametrize("endpoint", ["chat", "embed"])
async def test_500_is_backend_unavailable(ollama: FakeOllama, llm: LLMClient, endpoint: str) -> None:
    setattr(ollama, f"fail_{endpoint}", "500")
    with pytest.raises(BackendUnavailable) as info:
        await (llm.chat(USER) if endpoint == "chat" else llm.embed(["x"]))
    assert ollama.url in info.value.user_message


@pytest.mark.parametrize("endpoint", ["chat", "embed"])
async def test_hang_times_out(ollama: FakeOllama, endpoint: str) -> None:
    setattr(ollama, f"fail_{endpoint}", "hang")
    async with make_client(ollama, timeout_s=0.5) as client:
        start = time.monotonic()
        with pytest.raises(BackendUnavailable) as info:
            await (client.chat(USER) if endpoint == "chat" else client.embed(["x"]))
        elapsed = time.monotonic() - start
    assert elapsed < 3.0  # a bound, not a benchmark: the 0.5 s read timeout fired
    assert "did not answer within 0.5 s" in info.value.user_message


async def test_stall_mid_stream_times_out(ollama: FakeOllama) -> None:
    ollama.responder = lambda body: ANSWER
    ollama.fail_chat = "stall"
    received: list[str] = []
    async with make_client(ollama, timeout_s=0.5) as client:
        start = time.monotonic()
        with pytest.raises(BackendUnavailable, match="did not answer within"):
            async for delta in client.chat_stream(USER):
                received.append(delta)
        assert time.monotonic() - start < 3.0
    assert 0 < len(received) < len(split_tokens(ANSWER))


async def test_drop_mid_stream_is_backend_unavailable(ollama: FakeOllama, llm: LLMClient) -> None:
    ollama.responder = lambda body: ANSWER
    ollama.fail_chat = "drop"
    received: list[str] = []
    with pytest.raises(BackendUnavailable, match="closed the connection") as info:
        async for delta in llm.chat_stream(USER):
            received.append(delta)
    assert 0 < len(received) < len(split_tokens(ANSWER))
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
    with pytest.raises(BackendUnavailable):
        await llm.chat(USER)


async def test_embed_drop_is_backend_unavailable(ollama: FakeOllama, llm: LLMClient) -> None:
    ollama.fail_embed = "drop"
    with pytest.raises(BackendUnavailable):
        await llm.embed(["x", "y"])


async def test_nothing_listening_is_backend_unavailable() -> None:
    client = LLMClient(
        host=closed_port_url(),
        chat_model="llama3.2",
        embed_model="nomic-embed-text",
        timeout_s=1.0,
        num_ctx=2048,
        keep_alive="5m",
    )
    async with client:
        for call in (client.chat(USER), client.embed(["x"]), client.list_models(), client.has_model("llama3.2")):
            with pytest.raises(BackendUnavailable) as info:
                await call
            assert "could not be reached" in info.value.user_message
            assert "ollama serve" in info.value.user_message and "OLLAMA_HOST" in info.value.user_message


async def test_credentials_in_host_stay_out_of_messages() -> None:
    host = closed_port_url().replace("http://", "http://user:s3cret@")
    async with LLMClient(
        host=host, chat_model="m", embed_model="e", timeout_s=1.0, num_ctx=2048, keep_alive="5m"
    ) as client:
        with pytest.raises(BackendUnavailable) as info:
            await client.list_models()
    assert "s3cret" not in info.value.user_message


# -- early close -----------------------------------------------------------------------------------------


async def test_closing_the_stream_early_closes_the_connection(ollama: FakeOllama) -> None:
    ollama.responder = lambda body: ANSWER * 20
    ollama.tokens_per_s = 200
    tasks_before = asyncio.all_tasks()
    async with make_client(ollama) as client:
        async with aclosing(client.chat_stream(USER)) as stream:
            received = [await anext(stream), await anext(stream)]
        assert len(received) == 2
        # The server sees the connection go away and stops generating; nothing is left open or running.
        assert await wait_until(lambda: ollama.active_requests == 0 and ollama.open_connections == 0)
    assert await wait_until(lambda: asyncio.all_tasks() <= tasks_before)


async def test_cancelling_the_consumer_closes_the_connection(ollama: FakeOllama) -> None:
    ollama.responder = lambda body: ANSWER * 20
    ollama.tokens_per_s = 200
    first = asyncio.Event()

    async def consume(client: LLMClient) -> None:
        async for _ in client.chat_stream(USER):
            first.set()

    async with make_client(ollama) as client:
        task = asyncio.create_task(consume(client))
        await asyncio.wait_for(first.wait(), 2.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await wait_until(lambda: ollama.active_requests == 0 and ollama.open_connections == 0)


async def test_stop_does_not_hang_with_requests_open() -> None:
    fake = FakeOllama()
    await fake.start()
    fake.fail_chat = "hang"
    client = make_client(fake, timeout_s=30)
    task = asyncio.create_task(client.chat(USER))
    assert await wait_until(lambda: fake.active_requests == 1)
    start = time.monotonic()
    await fake.stop()
    assert time.monotonic() - start < 3.0
    with pytest.raises(BackendUnavailable):
        await task
    await client.close()


# -- the fake speaks Ollama to the real client -----------------------------------------------------------


async def test_fake_answers_the_real_client(ollama: FakeOllama) -> None:
    client = ollama_lib.AsyncClient(host=ollama.url, timeout=2)
    try:
        response = await client.chat(model="llama3.2", messages=USER, stream=False)
        assert response.message.content == "You said: hello there"
        assert (
            response.done
            and response.done_reason == "stop"
            and response.eval_count == len(split_tokens("You said: hello there"))
        )
        stream = await client.chat(model="llama3.2", messages=USER, stream=True)
        parts = [part async for part in stream]
        assert parts[-1].done and parts[-1].total_duration and parts[-1].prompt_eval_count
        assert not any(part.done for part in parts[:-1])
        show = await client.show("nomic-embed-text")
        assert show.modelinfo and show.modelinfo["nomic-bert.embedding_length"] == 256
        embedded = await client.embed(model="nomic-embed-text", input="one text")
        assert len(embedded.embeddings) == 1 and embedded.prompt_eval_count
        with pytest.raises(ollama_lib.ResponseError) as info:
            await client.chat(model="nope", messages=USER)
        assert info.value.status_code == 404 and info.value.error == 'model "nope" not found, try pulling it first'
        raw = await client._client.get("/")  # the root answers plain text, as Ollama does
        assert raw.text == "Ollama is running"
        assert (await client._client.get("/api/version")).json()["version"]
    finally:
        await client.close()


async def test_a_thinking_model_is_asked_to_think_and_its_thinking_kept_out_of_the_answer(ollama: FakeOllama) -> None:
    ollama.models.append("qwen3:4b")
    async with make_client(ollama, chat_model="qwen3:4b") as llm:
        thinking: list[str] = []
        answer = [delta async for delta in llm.chat_stream([{"role": "user", "content": "hi"}], thinking=thinking)]
        assert "".join(answer) == "You said: hi"
        assert "".join(thinking) == "Thinking it over: the member said hi."
        assert ollama.chat_requests[-1]["think"] is True
        assert await llm.chat([{"role": "user", "content": "again"}]) == "You said: again"  # dropped


async def test_think_blocks_of_an_older_template_are_taken_out_of_the_answer() -> None:
    async with FakeOllama(models=["deepseek-r1:old"], think_tag_models=["deepseek-r1:old"], tokens_per_s=0) as fake:
        async with make_client(fake, chat_model="deepseek-r1:old") as llm:
            thinking: list[str] = []
            deltas = [delta async for delta in llm.chat_stream([{"role": "user", "content": "hi"}], thinking=thinking)]
    assert "".join(deltas) == "You said: hi"
    assert "".join(thinking) == "Thinking it over: the member said hi."
    assert "think" not in fake.chat_requests[-1]  # no "thinking" capability: `think` would be refused


async def test_a_model_that_does_not_think_is_not_sent_think(ollama: FakeOllama, llm: LLMClient) -> None:
    assert await llm.chat([{"role": "user", "content": "hi"}]) == "You said: hi"
    assert "think" not in ollama.chat_requests[-1]
    with pytest.raises(ollama_lib.ResponseError, match='"llama3.2" does not support thinking'):
        await ollama_lib.AsyncClient(host=ollama.url).chat(model="llama3.2", messages=[], think=True)
