"""`main.py playground --json` as a person runs it: a subprocess with the Ollama stand-in, and its JSON events read
as they come (tests/test_playground_cli.py, tests/sandbox/test_playground_voice_cli.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent


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
