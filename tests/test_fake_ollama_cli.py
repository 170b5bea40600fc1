"""The Ollama stand-in's command line: each --fail-chat / --fail-embed mode does what its help says, and
--num-parallel makes further chat requests wait like Ollama's OLLAMA_NUM_PARALLEL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.ollama import FAIL_MODES, FAULTS_HELP, FakeOllama

ROOT = Path(__file__).resolve().parent.parent
ANSWER_TIMEOUT = httpx.Timeout(10.0)
NO_ANSWER_TIMEOUT = httpx.Timeout(10.0, read=3.0)  # "no byte for 3 s" is how a hang or stall shows itself
CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hello there, how are you"}]}
EMBED = {"model": "nomic-embed-text", "input": ["hello there"]}


@contextlib.asynccontextmanager
async def stand_in(*args: str) -> AsyncIterator[str]:
    """``python -m tests.fakes.ollama --port 0 *args`` as a subprocess; yields its URL, stops it on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.ollama", "--port", "0", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        banner = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        url = re.search(r"listening on (http://127\.0\.0\.1:\d+)", banner)
        assert url, banner
        yield url.group(1)
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), timeout=10)


async def stream_chat(http: httpx.AsyncClient, url: str) -> list[dict]:
    """POST a streamed /api/chat and read its NDJSON lines; the lines read so far are on the raised error."""
    lines: list[dict] = []
    try:
        async with http.stream("POST", f"{url}/api/chat", json=CHAT) as response:
            async for line in response.aiter_lines():
                lines.append(json.loads(line))
    except httpx.HTTPError as exc:
        exc.lines = lines  # type: ignore[attr-defined]
        raise
    return lines


def test_the_help_names_every_mode():
    for mode in FAIL_MODES:
        assert re.search(rf"^  {mode} ", FAULTS_HELP, re.MULTILINE), mode


async def test_answer_sets_the_chat_answer():
    async with stand_in("--answer", "It is sunny today. Enjoy.") as url, httpx.AsyncClient(
        timeout=ANSWER_TIMEOUT
    ) as http:
        lines = await stream_chat(http, url)
    assert "".join(line["message"]["content"] for line in lines) == "It is sunny today. Enjoy."


@pytest.mark.parametrize("status", ["404", "500"])
async def test_error_answers(status):
    async with stand_in("--fail-chat", status, "--fail-embed", status) as url, httpx.AsyncClient(
        timeout=ANSWER_TIMEOUT
    ) as http:
        chat = await http.post(f"{url}/api/chat", json=CHAT)
        embed = await http.post(f"{url}/api/embed", json=EMBED)
    assert (chat.status_code, embed.status_code) == (int(status), int(status))
    if status == "404":  # Ollama's words for a model that is not pulled
        assert chat.json() == {"error": 'model "llama3.2" not found, try pulling it first'}
        assert embed.json() == {"error": 'model "nomic-embed-text" not found, try pulling it first'}
    else:
        assert chat.json()["error"] and embed.json()["error"]


async def test_hang_never_answers():
    async with stand_in("--fail-chat", "hang", "--fail-embed", "hang") as url, httpx.AsyncClient(
        timeout=NO_ANSWER_TIMEOUT
    ) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"{url}/api/chat", json=CHAT)
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"{url}/api/embed", json=EMBED)
        assert (await http.get(f"{url}/api/version")).status_code == 200  # the server itself still answers


async def test_drop_closes_the_connection_mid_stream():
    async with stand_in("--fail-chat", "drop", "--fail-embed", "drop") as url, httpx.AsyncClient(
        timeout=ANSWER_TIMEOUT
    ) as http:
        with pytest.raises(httpx.RemoteProtocolError) as dropped:
            await stream_chat(http, url)
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(f"{url}/api/embed", json=EMBED)
    lines = dropped.value.lines  # type: ignore[attr-defined]
    assert lines and not any(line["done"] for line in lines)


async def test_stall_sends_some_tokens_then_nothing_on_an_open_connection():
    async with stand_in("--fail-chat", "stall", "--fail-embed", "stall") as url, httpx.AsyncClient(
        timeout=NO_ANSWER_TIMEOUT
    ) as http:
        with pytest.raises(httpx.ReadTimeout) as stalled:
            await stream_chat(http, url)
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"{url}/api/embed", json=EMBED)
    lines = stalled.value.lines  # type: ignore[attr-defined]
    assert lines and not any(line["done"] for line in lines)
    assert lines[0]["message"]["content"] == "You"


async def timed_chat(http: httpx.AsyncClient, url: str, clock: list[tuple[str, int, str]], number: int,
                     started: asyncio.Event | None = None) -> None:
    """Stream one chat, noting ("first", number, created_at) for its first line and ("done", number, created_at) for
    its last; created_at is when the server wrote the line (RFC 3339, sortable), which a busy client may read late."""
    async with http.stream("POST", f"{url}/api/chat", json=CHAT) as response:
        async for line in response.aiter_lines():
            chunk = json.loads(line)
            event = "done" if chunk["done"] else "first"
            if event == "done" or not any(seen[:2] == ("first", number) for seen in clock):
                clock.append((event, number, chunk["created_at"]))
            if started is not None:
                started.set()


async def test_num_parallel_makes_further_chats_wait_for_a_free_slot():
    clock: list[tuple[str, int, str]] = []
    async with stand_in("--num-parallel", "1", "--tokens-per-s", "50") as url, httpx.AsyncClient(
        timeout=ANSWER_TIMEOUT
    ) as http:
        started = asyncio.Event()
        first = asyncio.create_task(timed_chat(http, url, clock, 1, started))
        await started.wait()
        await asyncio.gather(first, timed_chat(http, url, clock, 2))
    # The second answer only starts once the first is complete: one answer generated at a time (in the server's
    # order: the client reads two streams at once and, busy, may take the second's first line before the first's end).
    clock.sort(key=lambda seen: seen[2])
    assert [seen[:2] for seen in clock] == [("first", 1), ("done", 1), ("first", 2), ("done", 2)]


@pytest.mark.parametrize("num_parallel", [1, 2])
async def test_num_parallel_bounds_the_answers_generated_at_once(num_parallel):
    async with FakeOllama(tokens_per_s=100, num_parallel=num_parallel) as fake, httpx.AsyncClient(
        timeout=ANSWER_TIMEOUT
    ) as http:
        answers = await asyncio.gather(*(stream_chat(http, fake.url) for _ in range(4)))
    assert all(lines[-1]["done"] for lines in answers)
    assert fake.peak_generating == num_parallel
