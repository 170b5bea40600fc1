"""Voice capacity: how many members speaking at once these CPUs serve before utterances queue past 1 s or are
dropped, with the bundled Whisper tiny.en.

The bot runs with a pipeline's settings (``bench.voice_turn.PIPELINES``): "new", the bot's defaults (speculative
transcription on a 150 ms silence, Whisper's short window), by default; ``--pipeline current`` for the old baseline
(600 ms of silence, then the 30 s window with a beam of 5). The transcriber decodes in the pipeline's window
(STT_SHORT_WINDOW). The wait of an utterance is how long its transcription waited for the transcriber's one worker
thread before its work began, as the transcriber measures it (``Transcript.queued_s``).

- **One guild** (the real bot through the sandbox): N numbered members in Lounge each say a different question at
  the same moment; the bot answers them one turn at a time, as it does. Wait = the turn's
  ``TurnReport.stt_wait_ms`` (with speculation, the speculative transcription's wait, which may fall before the end
  of speech is confirmed); dropped = utterances the full queue (STT_QUEUE_MAX) refused
  (``EndpointingStats.delivery_dropped``). Also the end of speech (the member's last packet reaching the bot) to
  the start of the answer's playback (``TurnReport.to_playback_ms``): it grows with N by design, as each member is
  answered after the ones before, each answer played in full.
- **Across guilds**: each guild has its own turn worker, so N guilds transcribe at once on the shared model. The
  sandbox simulates one guild, so this part calls the bot's transcriber as N guild workers would
  (``Transcriber.transcribe``, N calls at once); wait = each transcript's ``queued_s``. Nothing is dropped there
  (each guild's queue holds one utterance).

Levels ramp 1, 2, 3, 4, 5, 6, 8, 10, ...; a level passes when its wait p95 is at most 1 s and nothing was dropped
(and every member got a turn); the ramp stops after the first failing level. Each level is measured once.
Usage: ``.venv/bin/python -m bench.voice_capacity [--pipeline new|current] [--max-level 12]``; writes
bench/results/voice_capacity.json (``voice_capacity-current.json`` for the current pipeline).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import OllamaProcess, machine, percentile
from bench.voice_turn import ANSWER, PIPELINES, Block, parse_sets, say, settings_for
from sandbox import Sandbox
from services.files import write_json_atomic
from services.speech.audio import to_mono_16k
from services.speech.stt import create_transcriber
from services.speech.tts import create_synthesizer
from tests.support.bot_harness import running_bot
from tests.support.paused_speech import RULE_QUESTIONS

RESULTS = Path(__file__).resolve().parent / "results" / "voice_capacity.json"
LEVELS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32)
LIMIT_MS = 1000.0


class TurnLog(logging.Handler):
    """Collects the TurnReport of every voice turn the bot logs (``services.voice.conversation``: "guild %s: voice
    turn %s")."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.reports: list[Any] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "guild %s: voice turn %s" and isinstance(record.args, tuple):
            self.reports.append(record.args[1])


def questions(n: int) -> list[str]:
    texts = [f"{first} {second}" for first, second in RULE_QUESTIONS[::2]]
    return [texts[i % len(texts)] for i in range(n)]


async def one_guild(level: int, speech: dict[str, bytes], overrides: dict[str, Any], url: str,
                    models: tuple[Any, Any]) -> dict[str, Any]:
    settings = settings_for(overrides, url, Path(tempfile.mkdtemp(prefix="bench-capacity-")))
    turns = TurnLog()
    listening_log = logging.getLogger("services.voice.conversation")
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
            conversation = block.session.listening.conversation
            heard = conversation.endpointer.stats.utterances  # the warm-up's, not counted
            speculated = conversation.speculation
            texts = questions(level)
            started = time.monotonic()
            await asyncio.gather(*(sandbox.speak(m, speech[t]) for m, t in zip(members, texts, strict=True)))
            deadline = time.monotonic() + 20 + 10 * level
            while time.monotonic() < deadline:
                dropped = conversation.endpointer.stats.delivery_dropped
                if len(turns.reports) + dropped >= level:
                    break
                await asyncio.sleep(0.1)
            stats = conversation.endpointer.stats
            reports = turns.reports
            result = {"members": level, "turns": len(reports), "dropped": stats.delivery_dropped,
                      "utterances": stats.utterances - heard,
                      "stt_queue_wait_ms": summary([r.stt_wait_ms for r in reports]),
                      "stt_ms": summary([r.stt_ms for r in reports]),
                      "end_of_speech_to_answer_playback_ms": summary(
                          [r.to_playback_ms for r in reports if r.to_playback_ms is not None]),
                      "wall_s": round(time.monotonic() - started, 1),
                      "reports": [dataclasses.asdict(r) for r in reports]}
            if conversation.endpointer.speculate_s:  # speculation is on
                now = conversation.speculation
                result["speculative_started"] = now.started - speculated.started
                result["speculative_discarded"] = now.discarded - speculated.discarded
            return result
    finally:
        listening_log.removeHandler(turns)


async def across_guilds(level: int, samples: dict[str, Any], transcriber: Any) -> dict[str, Any]:
    texts = questions(level)
    transcripts = await asyncio.gather(*(transcriber.transcribe(samples[t]) for t in texts))
    return {"guilds": level, "dropped": 0, "stt_queue_wait_ms": summary([t.queued_s * 1000 for t in transcripts]),
            "stt_ms": summary([t.transcribe_s * 1000 for t in transcripts])}


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 1), "p95": round(percentile(values, 95), 1),
            "max": round(max(values, default=0.0), 1), "n": len(values)}


def passes(level: dict[str, Any], expected: int) -> bool:
    return (level["dropped"] == 0 and level["stt_queue_wait_ms"]["n"] == expected
            and level["stt_queue_wait_ms"]["p95"] <= LIMIT_MS)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    overrides = parse_sets([f"{args.pipeline}:{s}" for s in args.set])[args.pipeline]
    ollama = OllamaProcess("--first-token-ms", str(args.first_token_ms), "--tokens-per-s", str(args.tokens_per_s),
                           "--answer", ANSWER)
    url = await ollama.start()
    settings = settings_for(overrides, url, Path(tempfile.mkdtemp(prefix="bench-capacity-")))
    synthesizer, transcriber = create_synthesizer(settings), create_transcriber(settings)
    await asyncio.gather(asyncio.to_thread(synthesizer.load), asyncio.to_thread(transcriber.load))
    texts = list(dict.fromkeys(questions(12))) + ["Hello there, can you hear me?"]
    speech = {text: await say(synthesizer, text) for text in texts}
    samples = {text: to_mono_16k(pcm) for text, pcm in speech.items()}
    solo_ms: dict[str, float] = {}  # a lone transcription of each question, for scale
    for text in texts:
        solo_ms[text] = statistics.median([(await transcriber.transcribe(samples[text])).transcribe_s * 1000
                                           for _ in range(3)])
    started = machine()
    guild_levels: list[dict[str, Any]] = []
    guilds_levels: list[dict[str, Any]] = []
    try:
        for level in (n for n in LEVELS if n <= args.max_level):
            result = await across_guilds(level, samples, transcriber)
            guilds_levels.append(result)
            print("across guilds", json.dumps(result), flush=True)
            if not passes(result, level):
                break
        for level in (n for n in LEVELS if n <= args.max_level):
            result = await one_guild(level, speech, overrides, url, (synthesizer, transcriber))
            guild_levels.append(result)
            print("one guild", json.dumps({k: v for k, v in result.items() if k != "reports"}), flush=True)
            if not passes(result, level):
                break
    finally:
        await ollama.stop()

    def capacity(levels: list[dict[str, Any]], key: str) -> int:
        return max((lv[key] for lv in levels if passes(lv, lv[key])), default=0)

    return {
        "pipeline": args.pipeline, "settings": {**overrides, "STT_QUEUE_MAX": settings.STT_QUEUE_MAX},
        "stt": f"faster-whisper {transcriber.plan}, {settings.WHISPER_COMPUTE_TYPE}, "
               f"{'short window, greedy' if settings.STT_SHORT_WINDOW else '30 s window, beam 5'}",
        "limit": f"STT queue wait p95 <= {LIMIT_MS:.0f} ms and nothing dropped",
        "solo_stt_ms": {"p50": round(statistics.median(solo_ms.values()), 1), "max": round(max(solo_ms.values()), 1)},
        "capacity_one_guild_members": capacity(guild_levels, "members"),
        "capacity_across_guilds": capacity(guilds_levels, "guilds"),
        "one_guild": guild_levels, "across_guilds": guilds_levels,
        "llm_stand_in": {"first_token_ms": args.first_token_ms, "tokens_per_s": args.tokens_per_s, "answer": ANSWER},
        "machine": {**started, "load_average_at_end": machine()["load_average_1_5_15_min"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", choices=list(PIPELINES), default="new",
                        help="the bot's settings: new (its defaults, the default) or current (the old baseline)")
    parser.add_argument("--max-level", type=int, default=32, help="most speakers tried (default 32)")
    parser.add_argument("--first-token-ms", type=float, default=200.0)
    parser.add_argument("--tokens-per-s", type=float, default=50.0)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting of the bot over the pipeline's, e.g. ENDPOINT_SILENCE_MS=250 (repeatable)")
    parser.add_argument("--output", type=Path, default=None,
                        help="default bench/results/voice_capacity.json (voice_capacity-PIPELINE.json but for new)")
    args = parser.parse_args()
    if args.output is None:
        args.output = RESULTS if args.pipeline == "new" else RESULTS.with_name(f"voice_capacity-{args.pipeline}.json")
    result = asyncio.run(run(args))
    print(json.dumps({k: v for k, v in result.items() if k not in ("one_guild", "across_guilds")}, indent=2))
    write_json_atomic(args.output, result)


if __name__ == "__main__":
    main()
