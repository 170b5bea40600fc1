"""Event-loop lag probe: how late a 5 ms ticker wakes up while other work runs on the loop."""

from __future__ import annotations

import asyncio
import statistics
import time


class LoopLagProbe:
    """Sleeps ``interval_s`` in a loop and records how much later than asked each wake-up came (ms)."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick(), name="loop-lag-probe")

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self.lags_ms.append(max(0.0, (time.perf_counter() - before - self.interval_s) * 1000))

    def stop(self) -> dict[str, float]:
        """Stop the probe; returns p50, p99 and max lag in ms (zeros when no tick was recorded)."""
        if self._task is not None:
            self._task.cancel()
        if not self.lags_ms:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0, "ticks": 0}
        ordered = sorted(self.lags_ms)
        return {
            "p50": round(statistics.median(ordered), 2),
            "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
            "max": round(ordered[-1], 2),
            "ticks": len(ordered),
        }
