"""The end of the bot and its ChromaDB worker: killed with SIGKILL, nothing it started outlives it; a shutdown
that cannot wait for the worker says so in the log.

The embedded ChromaDB runs in a worker process (services/knowledge/chroma_process.py) with multiprocessing's resource
tracker beside it. A bot that crashes, or is killed by the OOM killer or ``kill -9``, runs no cleanup; those
processes must still go with it, or they keep the index files open while the restarted bot opens them again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_DOCS = ROOT / "tests" / "fixtures" / "docs"


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0], ppid [1], start time [19]), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def descendants(root: int) -> dict[int, str]:
    """Every live descendant of ``root``: pid -> start time (to tell it from a later process given its pid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        fields = _stat(pid)
        if fields is not None:
            found[pid] = fields[19]
            todo.extend(children.get(pid, []))
    return found


def still_running(processes: dict[int, str]) -> list[int]:
    """The pids of ``processes`` that still run (a zombie has ended: only its exit status is left)."""
    alive = []
    for pid, started in processes.items():
        fields = _stat(pid)
        if fields is not None and fields[19] == started and fields[0] != "Z":
            alive.append(pid)
    return alive


def events(path: Path) -> list[dict]:
    """The playground's JSON events printed so far (a last line still being written is left out)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    return [json.loads(line) for line in lines if line.endswith("\n")]


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return f"{pid} (gone)"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")
async def test_sigkill_leaves_no_chroma_worker_or_resource_tracker_behind(tmp_path, ollama):
    shutil.copytree(FIXTURE_DOCS, tmp_path / "documents" / "global")
    script = tmp_path / "script.txt"
    script.write_text("as admin\n/docs reload\nwait 600\n")
    env = {**os.environ, "OLLAMA_HOST": ollama.url, "DATA_DIR": str(tmp_path / "data"),
           "DOCUMENTS_DIR": str(tmp_path / "documents"), "CHROMA_WORKER_PROCESS": "true"}
    env.pop("DISCORD_TOKEN", None)
    env.pop("CHROMA_HOST", None)
    # Output goes to a file, not a pipe: an orphaned worker would hold the pipe open and hang a reader for ever.
    output = tmp_path / "events.jsonl"
    with output.open("wb") as stdout:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "main.py"), "playground", "--script", str(script), "--json",
            cwd=tmp_path, env=env, stdout=stdout, stderr=asyncio.subprocess.DEVNULL,
        )
    left: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 90
        while not any("4 added" in (event.get("content") or "") for event in events(output)):
            assert process.returncode is None, "the bot exited before answering /docs reload"
            assert time.monotonic() < deadline, f"no answer to /docs reload; events: {events(output)[-3:]}"
            await asyncio.sleep(0.2)
        left = descendants(process.pid)  # collected before the kill: afterwards they are no longer its children
        assert left, "the bot started no ChromaDB worker process"

        process.kill()
        await process.wait()
        for _ in range(50):  # 5 s at least
            if not still_running(left):
                break
            await asyncio.sleep(0.1)
        alive = still_running(left)
        assert not alive, f"processes of the killed bot still running 5 s later: {[command(p) for p in alive]}"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for pid in still_running(left):  # what this test started and the bot left behind
            os.kill(pid, signal.SIGKILL)


async def test_index_close_that_times_out_says_so_in_the_log(make_harness, caplog):
    # 10 ms to shut down leaves each part 1 ms: too little to stop the ChromaDB worker the reload started.
    harness = await make_harness(docs=True, SHUTDOWN_TIMEOUT_S=0.01)
    await harness.answer("admin", "docs reload")
    with caplog.at_level(logging.WARNING, logger="bot.client"):
        await harness.bot.close()
    assert "closing index timed out after 0.001 s" in caplog.messages
