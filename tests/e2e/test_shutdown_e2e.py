"""Shutdown: SIGTERM lets the answers the model already works on finish within SHUTDOWN_GRACE_S, then exits
cleanly within the deadline, history saved; every member whose message was being answered or waiting is told, and
waiting messages are kept for after the restart (answered then: ``test_kept_questions_e2e.py``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.streaming import INTERRUPTED, KEPT

ROOT = Path(__file__).resolve().parents[2]


async def sigterm_when(tmp_path: Path, ollama_url: str, ready: Callable[[list[dict[str, Any]]], bool],
                      grace_s: float) -> tuple[float, list[dict[str, Any]], list[tuple[str, str]]]:
    """Run the playground (alice: ``/chat message: tell me a very long story``), send SIGTERM as soon as ``ready``
    (given the JSON events printed so far, checked every 20 ms) is true, and let it exit, which it must do with exit
    code 0. Returns the seconds from SIGTERM to its exit, the events it printed and the stored history (role,
    content)."""
    script = tmp_path / "script.txt"
    script.write_text("as alice\n/chat message: tell me a very long story\nwait 60\n")
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "OLLAMA_HOST": ollama_url,
        "DATA_DIR": str(data_dir),
        "DOCUMENTS_DIR": str(tmp_path / "documents"),
        "STREAM_EDIT_INTERVAL_S": "0.3",
        "SHUTDOWN_TIMEOUT_S": "5",
        "SHUTDOWN_GRACE_S": str(grace_s),
    }
    env.pop("DISCORD_TOKEN", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "main.py"), "playground", "--script", str(script), "--json",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    events: list[dict[str, Any]] = []
    async def read() -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            events.append(json.loads(raw))

    reader = asyncio.create_task(read())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not ready(events):
            assert loop.time() < deadline and not reader.done(), events
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert process.stderr is not None
        stderr = await asyncio.wait_for(process.stderr.read(), timeout=30)
        await asyncio.wait_for(process.wait(), timeout=5)
        elapsed = time.monotonic() - sent
        await reader
    finally:
        reader.cancel()
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()[-2000:]
    with sqlite3.connect(data_dir / "bot.sqlite3") as db:
        rows = db.execute("SELECT role, content FROM messages ORDER BY id").fetchall()
    return elapsed, events, rows


@pytest.mark.timing  # within the deadlines
async def test_sigterm_during_a_streamed_answer_exits_cleanly_with_history_saved(tmp_path, ollama):
    ollama.tokens_per_s = 20
    ollama.responder = lambda body: " ".join(f"token{i}" for i in range(400))  # 20 s of streaming

    def streaming(events: list[dict[str, Any]]) -> bool:
        return any(event["event"] == "edit" and "token5" in event["content"] for event in events)

    elapsed, _, rows = await sigterm_when(tmp_path, ollama.url, streaming, grace_s=1)
    assert elapsed < 1 + 5 + 1, elapsed  # the grace period, then the shutdown deadline
    assert rows[0] == ("user", "tell me a very long story")
    assert rows[1][0] == "assistant" and rows[1][1].startswith("token0 token1") and rows[1][1].endswith("[interrupted]")


@pytest.mark.timing  # within the grace period
async def test_sigterm_while_the_model_prepares_an_answer_lets_it_finish_within_the_grace_period(tmp_path, ollama):
    answer = " ".join(f"word{i}" for i in range(30))
    ollama.first_token_latency_s, ollama.tokens_per_s = 3.0, 20  # 3 s to the first token, then 1.5 s of streaming
    ollama.responder = lambda body: answer

    def asked(events: list[dict[str, Any]]) -> bool:  # the model has the question, and no word of it is shown yet
        return bool(ollama.chat_requests)

    elapsed, events, rows = await sigterm_when(tmp_path, ollama.url, asked, grace_s=10)
    assert elapsed < 10, elapsed
    assert not any("word0" in (event.get("content") or "") for event in events[:1])
    shown = [event["content"] for event in events if event["event"] in ("message", "edit")]
    assert shown[-1] == answer  # the whole answer, not cut: no "interrupted" note
    assert rows == [("user", "tell me a very long story"), ("assistant", answer)]


async def test_messages_waiting_in_a_channel_queue_are_kept_at_shutdown_and_their_members_told(make_harness):
    harness = await make_harness(LLM_TIMEOUT_S=60)
    harness.ollama.tokens_per_s = 10
    harness.ollama.responder = lambda body: " ".join(f"word{i}" for i in range(600))  # a minute of streaming
    first = await harness.sandbox.invoke("alice", "chat", {"message": "tell me a long story"})
    await harness.sandbox.wait_for(
        lambda e: e["event"] == "edit" and e.get("interaction_id") == first.interaction_id
        and "word3" in e["content"], since=first, timeout=30)
    waiting = []
    for ahead, member in enumerate(("bob", "owner"), start=1):
        handle = await harness.sandbox.invoke(member, "chat", {"message": f"and me, {member}"})
        await harness.sandbox.wait_for(
            lambda e, handle=handle, ahead=ahead: e.get("interaction_id") == handle.interaction_id
            and f"Queued: {ahead} ahead of you" in (e.get("content") or ""), since=handle, timeout=20)
        waiting.append(handle)
    await harness.bot.close()
    [answer] = harness.bot_messages(first.interaction_id)
    assert answer["content"].startswith("word0 word1") and answer["content"].endswith(INTERRUPTED)
    for handle in waiting:
        assert [m["content"] for m in harness.bot_messages(handle.interaction_id)] == [KEPT]
    assert len(harness.ollama.chat_requests) == 1
    with sqlite3.connect(harness.settings.db_path) as db:
        assert db.execute("SELECT kind, question FROM waiting_questions ORDER BY queued_at").fetchall() == [
            ("chat", "and me, bob"), ("chat", "and me, owner")]


@pytest.mark.voice
async def test_shutdown_while_speaking_stops_and_leaves_the_voice_channel(make_harness):
    harness = await make_harness()
    await harness.sandbox.join_voice("alice", "Lounge")
    await harness.answer("alice", "join")
    text = " ".join(f"This is sentence number {n} of a long announcement." for n in range(1, 19))
    await harness.answer("alice", "speak", {"text": text})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not harness.sandbox.voice_totals("Assistant").get("frames"):  # speech has started
        assert loop.time() < deadline, "the bot never started speaking"
        await asyncio.sleep(0.05)
    await harness.bot.close()
    deadline = loop.time() + 10
    while "Assistant" in harness.sandbox.voice_states:  # Discord sees the bot leave
        assert loop.time() < deadline, "the bot stayed in the voice channel after shutting down"
        await asyncio.sleep(0.05)
    assert harness.bot.voice_sessions.all() == []
