"""What the benchmarks share: percentiles, and the Ollama stand-in run in its own process."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    """Where a benchmark ran: CPUs usable by this process, the CPU model (/proc/cpuinfo), Python, and the load
    average at the time of the call (the machine may be shared: a high load means other work competed)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return {"cpus": cpus, "cpu_model": model, "python": python, "system": f"{platform.system()} {platform.machine()}",
            "load_average_1_5_15_min": load}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class OllamaProcess:
    """The Ollama stand-in (``tests/fakes/ollama.py``) in its own process, as a real Ollama would be: its work
    never competes for the benchmark's GIL, loop or RSS. ``args``: its command-line options."""

    def __init__(self, *args: str) -> None:
        self.args = list(args)
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> str:
        """Start it on a free loopback port; returns its URL. Raises RuntimeError when it does not answer in 30 s."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.fakes.ollama", "--port", str(port), *self.args, cwd=REPO_ROOT,
            stdout=asyncio.subprocess.DEVNULL,
        )
        for _ in range(600):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return f"http://127.0.0.1:{port}"
        raise RuntimeError("the Ollama stand-in did not start within 30 s")

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            await self._process.wait()
