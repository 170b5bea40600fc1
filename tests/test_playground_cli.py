"""`main.py playground` run as a person runs it (a subprocess, the Ollama stand-in): what its output shows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.fakes.ollama import FakeOllama

ROOT = Path(__file__).resolve().parent.parent
INTERRUPTED = "(interrupted"
LONG_ANSWER = " ".join(f"token{i}" for i in range(400))  # 20 s of streaming at 20 tokens/s


@contextlib.asynccontextmanager
async def playground(tmp_path: Path, ollama_url: str, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``main.py playground --json *args`` with DATA_DIR in ``tmp_path`` (stdin, stdout and stderr are pipes);
    killed on exit if it is still running."""
    env = {
        **os.environ,
        "OLLAMA_HOST": ollama_url,
        "DATA_DIR": str(tmp_path / "data"),
        "DOCUMENTS_DIR": str(tmp_path / "documents"),
        "STREAM_EDIT_INTERVAL_S": "0.3",
        "SHUTDOWN_TIMEOUT_S": "5",
    }
    env.pop("DISCORD_TOKEN", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "main.py"), "playground", "--json", *args, cwd=tmp_path, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def read_until(process: asyncio.subprocess.Process, seen: list[dict[str, Any]], predicate: Any) -> None:
    """Read JSON events from ``process`` into ``seen`` until one matches ``predicate`` (within 60 s)."""
    assert process.stdout is not None

    async def read() -> None:
        async for raw in process.stdout:  # type: ignore[union-attr]
            seen.append(json.loads(raw))
            if predicate(seen[-1]):
                return
        raise AssertionError(f"the playground ended before the awaited event; last events: {seen[-3:]}")

    await asyncio.wait_for(read(), timeout=60)


async def finish(process: asyncio.subprocess.Process, seen: list[dict[str, Any]]) -> str:
    """Wait for ``process`` to exit (within 60 s), adding its remaining events to ``seen``; returns stderr."""
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    seen += [json.loads(line) for line in stdout.decode().splitlines()]
    return stderr.decode()


def streaming(event: dict[str, Any]) -> bool:
    return event["event"] == "edit" and "token5" in event["content"]


def interrupted_edits(seen: list[dict[str, Any]]) -> list[str]:
    edits = [e for e in seen if e["event"] == "edit" and e["author"] == "Assistant"]
    return [e["content"] for e in edits if INTERRUPTED in e["content"]]


async def test_a_second_run_on_the_same_data_dir_still_has_the_commands(tmp_path, ollama):
    script = tmp_path / "ask.txt"
    script.write_text("/ask question: is anyone there?\n")
    for run in ("first", "second"):
        seen: list[dict[str, Any]] = []
        async with playground(tmp_path, ollama.url, "--script", str(script)) as process:
            stderr = await finish(process, seen)
        assert process.returncode == 0, (run, seen[-3:], stderr[-2000:])
        assert not [e for e in seen if e["event"] in ("usage_error", "error")], (run, seen)
        answers = [e["content"] for e in seen if e["event"] in ("message", "edit") and e["author"] == "Assistant"]
        assert answers and answers[-1].startswith("You said:"), (run, answers)


async def test_sigterm_while_an_answer_streams_shows_the_interrupted_edit(tmp_path, ollama: FakeOllama):
    ollama.tokens_per_s = 20
    ollama.responder = lambda body: LONG_ANSWER
    script = tmp_path / "story.txt"
    script.write_text("/chat message: tell me a very long story\nwait 60\n")
    seen: list[dict[str, Any]] = []
    async with playground(tmp_path, ollama.url, "--script", str(script)) as process:
        await read_until(process, seen, streaming)
        process.send_signal(signal.SIGTERM)
        stderr = await finish(process, seen)
    assert process.returncode == 0, stderr[-2000:]
    [edit] = interrupted_edits(seen)
    assert edit.startswith("token0 token1 token2 token3 token4 token5")


async def test_interactive_json_prints_ready_and_shows_the_interrupted_edit_after_end_of_input(tmp_path, ollama):
    ollama.tokens_per_s = 20
    ollama.responder = lambda body: LONG_ANSWER
    seen: list[dict[str, Any]] = []
    async with playground(tmp_path, ollama.url) as process:
        assert process.stdin is not None
        # A program driving the playground waits for "ready" before it types.
        await read_until(process, seen, lambda event: True)
        assert seen[0]["event"] == "ready", seen
        process.stdin.write(b"/chat message: tell me a very long story\n")
        await process.stdin.drain()
        await read_until(process, seen, streaming)
        process.stdin.close()  # end of input (Ctrl-D): the playground stops the bot
        stderr = await finish(process, seen)
    assert process.returncode == 0, stderr[-2000:]
    [edit] = interrupted_edits(seen)
    assert edit.startswith("token0 token1 token2 token3 token4 token5")
