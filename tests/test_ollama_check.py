"""Is Ollama ready for the bot (services/chat/ollama_check.py): against the Ollama stand-in, a closed port and a server
that never answers. One line says what is missing and the command that fixes it."""

from __future__ import annotations

import socket

from services.chat.llm import LLMClient
from services.chat.ollama_check import check_ollama
from tests.fakes.ollama import FakeOllama


def client(host: str, timeout_s: float = 5.0) -> LLMClient:
    return LLMClient(host=host, chat_model="llama3.2", embed_model="nomic-embed-text", timeout_s=timeout_s,
                     num_ctx=2048, keep_alive="5m")


async def status_of(host: str, *, timeout_s: float = 5.0, chat: str = "llama3.2", embed: str = "nomic-embed-text"):
    async with client(host) as llm:
        return await check_ollama(llm, chat_model=chat, embed_model=embed, timeout_s=timeout_s)


async def test_everything_pulled_is_no_problem(ollama: FakeOllama) -> None:
    status = await status_of(ollama.url, chat="llama3.2:latest")  # with or without the tag, as Ollama resolves it
    assert status.error is None and status.model_count == 2 and status.missing == []
    assert status.problem() is None


async def test_a_missing_embedding_model_is_named_with_the_pull_command(ollama: FakeOllama) -> None:
    ollama.models = ["llama3.2"]
    assert (await status_of(ollama.url)).problem() == (
        f"Ollama at {ollama.url} does not have the embedding model `nomic-embed-text`; "
        "run `ollama pull nomic-embed-text`.")


async def test_both_missing_are_named_in_one_line(ollama: FakeOllama) -> None:
    ollama.models = ["llama3.2:1b"]  # another tag of the chat model is not the one configured
    problem = (await status_of(ollama.url)).problem()
    assert problem is not None and "\n" not in problem
    assert "the chat model `llama3.2` and the embedding model `nomic-embed-text`" in problem
    assert problem.endswith("run `ollama pull llama3.2 && ollama pull nomic-embed-text`.")


async def test_an_unreachable_ollama_says_how_to_start_it() -> None:
    with socket.socket() as closed:  # nothing listens there: connection refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    status = await status_of(f"http://127.0.0.1:{port}")
    assert status.models == () and status.error is not None
    problem = status.problem()
    assert problem is not None and "could not be reached" in problem and "`ollama serve`" in problem
    assert problem.endswith("; until then the bot cannot answer.")


async def test_a_silent_server_is_given_up_on_after_the_timeout(silent_server: int) -> None:
    status = await status_of(f"http://127.0.0.1:{silent_server}", timeout_s=0.3)
    assert status.error is not None and "did not answer within 0.3 s" in status.error
