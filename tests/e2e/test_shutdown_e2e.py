"""The whole program: SIGTERM during a streamed answer exits cleanly, within the deadline, history saved."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def test_sigterm_during_a_streamed_answer_exits_cleanly_with_history_saved(tmp_path, ollama):
    ollama.tokens_per_s = 20
    ollama.responder = lambda body: " ".join(f"token{i}" for i in range(400))  # 20 s of streaming
    script = tmp_path / "script.txt"
    script.write_text("as alice\n/chat message: tell me a very long story\nwait 60\n")
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "OLLAMA_HOST": ollama.url,
        "DATA_DIR": str(data_dir),
        "DOCUMENTS_DIR": str(tmp_path / "documents"),
        "STREAM_EDIT_INTERVAL_S": "0.3",
        "SHUTDOWN_TIMEOUT_S": "5",
    }
    env.pop("DISCORD_TOKEN", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "main.py"), "playground", "--script", str(script), "--json",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        # Wait until the answer is visibly streaming, then send SIGTERM.
        async def streaming() -> None:
            assert process.stdout is not None
            async for raw in process.stdout:
                event = json.loads(raw)
                if event["event"] == "edit" and "token5" in event["content"]:
                    return

        await asyncio.wait_for(streaming(), timeout=60)
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=15)
        elapsed = time.monotonic() - sent
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert elapsed < 5 + 1, elapsed
    with sqlite3.connect(data_dir / "bot.sqlite3") as db:
        rows = db.execute("SELECT role, content FROM messages ORDER BY id").fetchall()
    assert rows[0] == ("user", "tell me a very long story")
    assert rows[1][0] == "assistant" and rows[1][1].startswith("token0 token1") and rows[1][1].endswith("[interrupted]")
