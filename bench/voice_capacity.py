"""Voice capacity: how many members speaking at once these CPUs serve before utterances queue past 1 s or are
dropped, with the bundled Whisper tiny.en.

- **One guild** (the real bot through the sandbox, default settings but the given ones): N numbered members in
  Lounge each say a different question at the same moment; the bot answers them one turn at a time, as it does.
  STT queue wait of an utterance = from the end of speech being detected (ENDPOINT_SILENCE_MS after the member's
  last packet) to the start of its transcription = ``TurnReport.endpoint_ms - ENDPOINT_SILENCE_MS``; dropped =
  utterances the full queue (STT_QUEUE_MAX) refused (``EndpointingStats.delivery_dropped``).
- **Across guilds**: each guild has its own turn worker, so N guilds transcribe at once on the shared model. The
  sandbox simulates one guild, so this part calls the bot's transcriber as N guild workers would
  (``Transcriber.transcribe``, N at once through ``asyncio.to_thread``); the wait is the time beyond one lone
  transcription of the same question (median of 3).

Levels ramp 1, 2, 3, 4, 6, 8, ...; a level passes when its wait p95 is at most 1 s and nothing was dropped; the
ramp stops after the first failing level. Usage: ``.venv/bin/python -m bench.voice_capacity [--max-level 12]``;
writes bench/results/voice_capacity.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import OllamaProcess, machine, percentile
from bench.voice_turn import ANSWER, Block, parse_sets, say, settings_for
from sandbox import Sandbox
from services.audio import to_mono_16k
from services.files import write_json_atomic
from services.stt import create_transcriber
from services.tts import create_synthesizer
from tests.support.bot_harness import running_bot
from tests.support.paused_speech import PAUSED_QUESTIONS

RESULTS = Path(__file__).resolve().parent / "results" / "voice_capacity.json"
LEVELS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
LIMIT_MS = 1000.0


class TurnLog(logging.Handler):
    """Collects the TurnReport of every voice turn the bot logs (``bot.listening``: "guild %s: voice turn %s")."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.reports: list[Any] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "guild %s: voice turn %s" and isinstance(record.args, tuple):
            self.reports.append(record.args[1])


def questions(n: int) -> list[str]:
    texts = [f"{first} {second}" for first, second in PAUSED_QUESTIONS[::2]]
    return [texts[i % len(texts)] for i in range(n)]


async def one_guild(level: int, speech: dict[str, bytes], overrides: dict[str, Any], url: str,
                    models: tuple[Any, Any]) -> dict[str, Any]:
    settings = settings_for(overrides, url, Path(tempfile.mkdtemp(prefix="bench-capacity-")))
    turns = TurnLog()
    listening_log = logging.getLogger("bot.listening")
    listening_log.addHandler(turns)
    listening_log.setLevel(logging.INFO)
    try:
        async with Sandbox() as sandbox, running_bot(sandbox, settings, ready_timeout_s=60, synthesizer=models[0],
                                                     transcriber=models[1]) as bot:
            block = Block(sandbox, bot)
            await block.listen()
            await block.turn(speech["Hello there, can you hear me?"])  # warm-up, not counted
            turns.reports.clear()
            members = [f"member-{i + 1}" for i in range(level)]
            for member in members:
                await sandbox.join_voice(member, "Lounge")
            texts = questions(level)
            started = time.monotonic()
            await asyncio.gather(*(sandbox.speak(m, speech[t]) for m, t in zip(members, texts, strict=True)))
            deadline = time.monotonic() + 20 + 10 * level
            while time.monotonic() < deadline:
                dropped = block.session.listening.endpointer.stats.delivery_dropped
                if len(turns.reports) + dropped >= level:
                    break
                await asyncio.sleep(0.1)
            stats = block.session.listening.endpointer.stats
            waits = [r.endpoint_ms - settings.ENDPOINT_SILENCE_MS for r in turns.reports]
            return {"members": level, "turns": len(turns.reports), "dropped": stats.delivery_dropped,
                    "utterances": stats.utterances, "stt_queue_wait_ms": summary(waits),
                    "stt_ms": summary([r.stt_ms for r in turns.reports]),
                    "wall_s": round(time.monotonic() - started, 1)}
    finally:
        listening_log.removeHandler(turns)


async def across_guilds(level: int, samples: dict[str, Any], solo_ms: dict[str, float],
                        transcriber: Any) -> dict[str, Any]:
    texts = questions(level)

    async def guild_turn(text: str) -> tuple[float, float]:
        started = time.perf_counter()
        transcript = await transcriber.transcribe(samples[text])
        return (time.perf_counter() - started) * 1000, transcript.transcribe_s * 1000

    results = await asyncio.gather(*(guild_turn(t) for t in texts))
    waits = [total - solo_ms[t] for (total, _), t in zip(results, texts, strict=True)]
    return {"guilds": level, "dropped": 0, "stt_queue_wait_ms": summary(waits),
            "stt_ms": summary([stt for _, stt in results])}


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 1), "p95": round(percentile(values, 95), 1),
            "max": round(max(values, default=0.0), 1), "n": len(values)}


def passes(level: dict[str, Any], expected: int) -> bool:
    return (level["dropped"] == 0 and level["stt_queue_wait_ms"]["n"] == expected
            and level["stt_queue_wait_ms"]["p95"] <= LIMIT_MS)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    overrides = parse_sets([f"current:{s}" for s in args.set])["current"]
    ollama = OllamaProcess("--first-token-ms", str(args.first_token_ms), "--tokens-per-s", str(args.tokens_per_s),
                           "--answer", ANSWER)
    url = await ollama.start()
    settings = settings_for(overrides, url, Path(tempfile.mkdtemp(prefix="bench-capacity-")))
    synthesizer, transcriber = create_synthesizer(settings), create_transcriber(settings)
    await asyncio.gather(asyncio.to_thread(synthesizer.load), asyncio.to_thread(transcriber.load))
    texts = list(dict.fromkeys(questions(12))) + ["Hello there, can you hear me?"]
    speech = {text: await say(synthesizer, text) for text in texts}
    samples = {text: to_mono_16k(pcm) for text, pcm in speech.items()}
    solo_ms: dict[str, float] = {}
    for text in texts:
        solo_ms[text] = statistics.median([(await transcriber.transcribe(samples[text])).transcribe_s * 1000
                                           for _ in range(3)])
    started = machine()
    guild_levels: list[dict[str, Any]] = []
    guilds_levels: list[dict[str, Any]] = []
    try:
        for level in (n for n in LEVELS if n <= args.max_level):
            result = await across_guilds(level, samples, solo_ms, transcriber)
            guilds_levels.append(result)
            print("across guilds", json.dumps(result), flush=True)
            if not passes(result, level):
                break
        for level in (n for n in LEVELS if n <= args.max_level):
            result = await one_guild(level, speech, overrides, url, (synthesizer, transcriber))
            guild_levels.append(result)
            print("one guild", json.dumps(result), flush=True)
            if not passes(result, level):
                break
    finally:
        await ollama.stop()

    def capacity(levels: list[dict[str, Any]], key: str) -> int:
        return max((lv[key] for lv in levels if passes(lv, lv[key])), default=0)

    return {
        "stt": f"faster-whisper {transcriber.plan}, {settings.WHISPER_COMPUTE_TYPE}",
        "settings": overrides, "limit": f"STT queue wait p95 <= {LIMIT_MS:.0f} ms and nothing dropped",
        "solo_stt_ms": {"p50": round(statistics.median(solo_ms.values()), 1), "max": round(max(solo_ms.values()), 1)},
        "capacity_one_guild_members": capacity(guild_levels, "members"),
        "capacity_across_guilds": capacity(guilds_levels, "guilds"),
        "one_guild": guild_levels, "across_guilds": guilds_levels,
        "llm_stand_in": {"first_token_ms": args.first_token_ms, "tokens_per_s": args.tokens_per_s, "answer": ANSWER},
        "machine": {**started, "load_average_at_end": machine()["load_average_1_5_15_min"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-level", type=int, default=32, help="most speakers tried (default 32)")
    parser.add_argument("--first-token-ms", type=float, default=200.0)
    parser.add_argument("--tokens-per-s", type=float, default=50.0)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting of the bot, e.g. ENDPOINT_SILENCE_MS=250 (repeatable)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps({k: v for k, v in result.items() if k not in ("one_guild", "across_guilds")}, indent=2))
    write_json_atomic(args.output, result)


if __name__ == "__main__":
    main()
