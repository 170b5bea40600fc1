"""Voice turn benchmark: from the end of a member's speech to the first audio of the bot's answer.

The real bot listens through the sandbox: a member speaks a synthesized question (Opus, encrypted, paced as
Discord relays it); the bot detects the end of speech (ENDPOINT_SILENCE_MS), transcribes it (the bundled Whisper
tiny.en), asks the Ollama stand-in (first token after ``--first-token-ms``, then ``--tokens-per-s``), synthesizes
the first sentence (the bundled Piper voice, en_US-joe-medium, which also says the question) and plays it.
Measured at the sandbox: end of the member's last packet -> first answer frame; and the bot's own breakdown
(services.voice_turns.TurnReport).
Streaming (each sentence spoken as soon as it is complete) and non-streaming (whole answer, then speech) run
side by side in one invocation.

Usage: ``.venv/bin/python -m bench.voice_turn [--runs 4]``; writes bench/results/voice_turn.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

from config import load_settings
from sandbox import Sandbox
from services.files import write_json_atomic
from services.tts import PiperSynthesizer
from tests.fakes.ollama import FakeOllama
from tests.support.bot_harness import running_bot

RESULTS = Path(__file__).resolve().parent / "results" / "voice_turn.json"
QUESTION = "what is the weather like today"
ANSWER = " ".join([
    "It is sunny today.", "The temperature will reach twenty degrees in the afternoon.",
    "A light wind comes from the west.", "Clouds may arrive in the evening.",
    "Tomorrow looks much the same.", "Enjoy your day outside.",
])


async def run_mode(stream: bool, runs: int, first_token_ms: float, tokens_per_s: float,
                   question_pcm: bytes) -> dict[str, Any]:
    fake = FakeOllama(first_token_latency_s=first_token_ms / 1000, tokens_per_s=tokens_per_s)
    fake.responder = lambda body: ANSWER
    await fake.start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-turn-"))
    settings = load_settings(
        DISCORD_TOKEN=None, OLLAMA_HOST=fake.url, DATA_DIR=tmp / "data", DOCUMENTS_DIR=tmp / "documents",
        VOICE_COOLDOWN_S=0, VOICE_STREAM_ANSWERS=stream,
        ENDPOINT_SILENCE_MS=600,
    )
    reports: list[dict[str, Any]] = []
    first_audio_ms: list[float] = []
    try:
        async with Sandbox() as sandbox, running_bot(sandbox, settings, ready_timeout_s=30) as bot:
            for member in ("alice", "bob"):
                await sandbox.join_voice(member, "Lounge")
            position = sandbox.event_position
            await sandbox.invoke("alice", "join", {})
            await sandbox.wait_for(lambda ev: ev["event"] in ("message", "edit")
                                   and (ev.get("content") or "").startswith("Joined"), timeout=30, since=position)
            await sandbox.invoke("alice", "listen", {})
            await asyncio.to_thread(bot.transcriber.load)
            session = bot.voice_sessions.get(sandbox.guild_id)
            for _ in range(runs + 1):  # the first run warms up (model load, first decoder) and is not counted
                spoken = len(sandbox.voice_spurts("Assistant"))
                previous_turn = session.last_turn
                speech = await sandbox.speak("bob", question_pcm)
                await sandbox.wait_for(lambda ev, before=spoken: ev["event"] == "voice_audio"
                                       and len(sandbox.voice_spurts("Assistant")) > before, timeout=120, since=0)
                answer = sandbox.voice_spurts("Assistant")[spoken]
                first_audio_ms.append(answer["start_t_ms"] - speech["t_ms"])
                for _ in range(1200):  # the turn's report is made once its whole answer has played
                    if session.last_turn is not previous_turn:
                        break
                    await asyncio.sleep(0.05)
                reports.append(dataclasses.asdict(session.last_turn))  # type: ignore[call-overload]
                await asyncio.sleep(0.5)
    finally:
        await fake.stop()
    first_audio_ms, reports = first_audio_ms[1:], reports[1:]

    def median(key: str) -> float:
        return round(statistics.median(report[key] for report in reports), 1)

    breakdown = {key: median(key) for key in reports[0]}
    model_and_wait = sum(breakdown[key] for key in ("endpoint_ms", "stt_ms", "llm_first_sentence_ms",
                                                    "tts_first_sentence_ms"))
    return {
        "mode": "streaming" if stream else "whole answer first",
        "end_of_speech_to_first_answer_audio_ms": {"p50": round(statistics.median(first_audio_ms), 1),
                                                   "max": round(max(first_audio_ms), 1)},
        "breakdown_p50_ms": breakdown,
        "bot_overhead_p50_ms": round(breakdown["to_playback_ms"] - model_and_wait, 1),
    }


async def run(runs: int, first_token_ms: float, tokens_per_s: float) -> dict[str, Any]:
    question = (await PiperSynthesizer().synthesize(QUESTION)).pcm
    streaming = await run_mode(True, runs, first_token_ms, tokens_per_s, question)
    whole = await run_mode(False, runs, first_token_ms, tokens_per_s, question)
    ratio = (streaming["end_of_speech_to_first_answer_audio_ms"]["p50"]
             / whole["end_of_speech_to_first_answer_audio_ms"]["p50"])
    return {
        "runs": runs,
        "llm_stand_in": {"first_token_ms": first_token_ms, "tokens_per_s": tokens_per_s,
                         "answer_sentences": 6},
        "stt": "whisper tiny.en (bundled)", "tts": "piper en_US-joe-medium (bundled)", "endpoint_silence_ms": 600,
        "streaming": streaming,
        "whole_answer_first": whole,
        "streaming_to_whole_ratio": round(ratio, 3),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--first-token-ms", type=float, default=200.0)
    parser.add_argument("--tokens-per-s", type=float, default=50.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.runs, args.first_token_ms, args.tokens_per_s))
    print(json.dumps(result, indent=2))
    write_json_atomic(RESULTS, result)


if __name__ == "__main__":
    main()
