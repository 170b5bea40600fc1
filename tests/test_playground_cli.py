"""`main.py playground` run as a person runs it (a subprocess, the Ollama stand-in): what its output shows."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from typing import Any

import pytest

from tests.fakes.ollama import FakeOllama
from tests.support.playground import finish, playground, read_until

pytestmark = pytest.mark.e2e  # the real bot through the sandbox, in a subprocess

INTERRUPTED = "(interrupted"
LONG_ANSWER = " ".join(f"token{i}" for i in range(400))  # 20 s of streaming at 20 tokens/s


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


async def test_without_the_message_content_intent_the_playground_exits_1_with_one_line(tmp_path, ollama):
    script = tmp_path / "hello.txt"
    script.write_text("@bot hello\n")
    seen: list[dict[str, Any]] = []
    async with playground(tmp_path, ollama.url, "--no-message-content-intent", "--script", str(script)) as process:
        stderr = await finish(process, seen)
    assert process.returncode == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert "Message Content intent" in line and "Developer Portal" in line and "Privileged Gateway Intents" in line
    assert stderr.endswith(line + "\n")  # the last thing printed
    assert not [e for e in seen if e["event"] == "ready"]


async def test_the_playground_prints_what_ollama_lacks(tmp_path, ollama: FakeOllama):
    ollama.models = ["llama3.2"]
    script = tmp_path / "wait.txt"
    script.write_text("wait 2\n")
    seen: list[dict[str, Any]] = []
    async with playground(tmp_path, ollama.url, "--script", str(script)) as process:
        stderr = await finish(process, seen)
    assert process.returncode == 0, stderr[-2000:]
    [warning] = [e for e in seen if e["event"] == "warning"]
    assert warning["text"].endswith("run `ollama pull nomic-embed-text`.")


def said_by_bot(seen: list[dict[str, Any]], channel: str) -> list[str]:
    return [e["content"] for e in seen if e["event"] in ("message", "edit") and e["author"] == "Assistant"
            and e["channel"] == channel]


async def test_a_thread_opened_in_one_playground_is_answered_without_a_mention_in_the_next(tmp_path, ollama):
    histories: list[list[str]] = []
    ollama.responder = lambda body: (histories.append([m["content"] for m in body["messages"]]), "Noted.")[1]
    first = tmp_path / "first.txt"
    first.write_text("/chat message: remember the word apple thread: true\n")
    seen: list[dict[str, Any]] = []
    async with playground(tmp_path, ollama.url, "--script", str(first)) as process:
        stderr = await finish(process, seen)
    assert process.returncode == 0, (seen[-3:], stderr[-2000:])
    [opened] = [e for e in seen if e["event"] == "thread" and e["action"] == "create"]
    assert said_by_bot(seen, opened["thread"])[-1] == "Noted."

    second = tmp_path / "second.txt"
    second.write_text(f"in thread {opened['thread']}\nsay which word was it?\n")  # no mention
    seen = []
    async with playground(tmp_path, ollama.url, "--script", str(second)) as process:
        stderr = await finish(process, seen)
    assert process.returncode == 0, (seen[-3:], stderr[-2000:])
    assert said_by_bot(seen, opened["thread"])[-1] == "Noted."
    assert any("remember the word apple" in text for text in histories[-1])  # the thread's conversation goes on
    assert "local Discord restored" in stderr
    assert "application commands unchanged; not syncing" in stderr
    assert "registered application commands differ" not in stderr


async def test_fresh_starts_an_empty_local_discord_and_overwrites_the_saved_one(tmp_path, ollama):
    from sandbox import CHANNELS, MEMBERS, Sandbox

    state = tmp_path / "data" / "sandbox.json"
    async with Sandbox(state_path=state) as earlier:  # a local Discord left with a thread
        await earlier.create_thread(MEMBERS["alice"], CHANNELS["general"], "old thread")
    script = tmp_path / "fresh.txt"
    script.write_text("in thread old thread\n")
    seen: list[dict[str, Any]] = []
    async with playground(tmp_path, ollama.url, "--fresh", "--script", str(script)) as process:
        stderr = await finish(process, seen)
    assert process.returncode == 1, stderr[-2000:]  # the line could not be run: there is no such thread
    [problem] = [e for e in seen if e["event"] == "usage_error"]
    assert "old thread" in problem["message"]
    assert re.search(r"synced \d+ application commands", stderr)  # none were registered
    saved = json.loads(await asyncio.to_thread(state.read_text))
    assert saved["threads"] == [] and saved["commands"]["global"]


async def test_a_state_file_that_cannot_be_read_is_set_aside_with_one_line(tmp_path, ollama):
    state = tmp_path / "data" / "sandbox.json"
    state.parent.mkdir()
    state.write_text("{half a file")
    script = tmp_path / "wait.txt"
    script.write_text("wait 0\n")
    seen: list[dict[str, Any]] = []
    async with playground(tmp_path, ollama.url, "--script", str(script)) as process:
        stderr = await finish(process, seen)
    assert process.returncode == 0, stderr[-2000:]
    [line] = [line for line in stderr.splitlines() if "sandbox.json" in line]
    [aside] = await asyncio.to_thread(lambda: list(state.parent.glob("sandbox.json.unreadable-*")))
    assert line.startswith("warning: ") and "not valid JSON" in line and aside.name in line and "starts empty" in line
    assert await asyncio.to_thread(aside.read_text) == "{half a file"
    assert json.loads(await asyncio.to_thread(state.read_text))["commands"]["global"]  # a good state in its place
