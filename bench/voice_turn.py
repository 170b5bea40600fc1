"""Voice turn benchmark: from the end of a member's speech to the first audio of the bot's answer, for two voice
pipelines side by side, and whether either answers members who have not finished.

A pipeline is a set of Settings overrides (``PIPELINES``; ``--set new:NAME=VALUE`` adds or changes one), so the
same real bot runs against the same sandbox with only its settings changed. For each pipeline the real bot listens
through the sandbox: a member speaks a question said by the bundled Piper voice (Opus, DAVE-encrypted, paced as
Discord relays it, nothing sent during silences); the bot endpoints it, transcribes it (the bundled Whisper
tiny.en), asks the Ollama stand-in (its own process; first token after ``--first-token-ms``, then
``--tokens-per-s``; a fixed two-sentence answer) and speaks with the bundled Piper voice. Measured:

- end of speech (the sandbox's ``member_speech`` event, published when the member's last packet is sent) to the
  first answer frame at the sandbox: p50 and p95 over the whole-question turns;
- the bot's breakdown of each turn (``services.voice.turn.TurnReport``: endpoint wait, transcription asked,
  waiting for and transcribing, LLM to the first sentence, that sentence's time from the end of speech, TTS of it,
  and the bot's own overhead: from its audio being ready to its playback);
- CPU seconds per turn: ``time.process_time()`` of this whole process (bot and sandbox; the stand-in runs
  elsewhere, as Ollama would) from the first packet of the question until the answer has played;
- the share of speculative work discarded, when the bot exposes it (null otherwise);
- the paused set (``tests/support/paused_speech.py``): 48 questions said with a 300-800 ms pause mid-sentence, the
  24 the end-of-turn rule was written against and 24 held out (rates for each). The halves are cut out of one
  reading of the whole question (``--halves cut``, the default: the first half breaks off with the intonation of a
  sentence going on) or read separately (``--halves separate``: each half sounds finished). An answer is premature
  when a transcript is posted or an answer frame arrives before the member's last packet; every question should
  get exactly one answer (a posted "🔊" line): misses and doubles are counted.

Pipelines run in alternating blocks (new, current, current, new, ...), each block a fresh bot and sandbox with the
speech models shared, so that the machine's load (it is shared) hits both alike.

Usage: ``.venv/bin/python -m bench.voice_turn [--rounds 4] [--set new:ENDPOINT_SILENCE_MS=250]``; writes
bench/results/voice_turn.json.

``--engine real`` runs the new pipeline twice instead, side by side: against the stand-in (``stand-in``: a GPU-class
model server) and against a real model on this machine's CPU (``real``: llama.cpp with SmolLM2-135M on one thread,
in this process, ``tests/fakes/llama_engine.py``; its CPU time then counts in cpu_s), reporting for ``real`` the
prompt tokens the engine read and took from its cache on each turn of the voice conversation. E.g.
``--engine real --rounds 1 --runs 5 --paused 0`` (writes bench/results/voice_turn_real.json).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import OllamaProcess, machine, percentile
from config import Settings, load_settings
from sandbox import Sandbox
from services.files import write_json_atomic
from services.speech.stt import create_transcriber
from services.speech.tts import Synthesizer, create_synthesizer
from tests.fakes.llama_engine import MODEL_NAME, LlamaOllama
from tests.support.bot_harness import running_bot
from tests.support.paused_speech import (
    PAUSED_QUESTIONS,
    PausedQuestion,
    SentenceCutter,
    paused_question_set,
    paused_utterance,
)

RESULTS = Path(__file__).resolve().parent / "results" / "voice_turn.json"
REAL_RESULTS = Path(__file__).resolve().parent / "results" / "voice_turn_real.json"
BOT = "Assistant"
ANSWER = "It is sunny today. Enjoy your day outside."
WARM_UP = "Hello there, can you hear me?"

# Each pipeline: Settings overrides on top of the defaults. "current" is the acceptance baseline of issue 9: a fixed
# 600 ms of silence ends the utterance, then transcription (Whisper's 30 s window, a beam of 5), the LLM and Piper run
# one after the other (each answer sentence spoken as soon as it is complete). "new" is the bot's default pipeline,
# each technique of issue 9 named by its setting.
PIPELINES: dict[str, dict[str, Any]] = {
    "new": {"ENDPOINT_SPECULATE_MS": 150, "ENDPOINT_CHECK_MS": 20, "ENDPOINT_COMPLETE_MS": 650,
            "ENDPOINT_INCOMPLETE_MS": 1300, "ENDPOINT_SILENCE_MS": 850, "ENDPOINT_SURE_NO_SPEECH_PROB": 0.08,
            "VOICE_FIRST_CLAUSE_WORDS": 4,
            "STT_SHORT_WINDOW": True, "VOICE_STREAM_ANSWERS": True},
    "current": {"ENDPOINT_SPECULATE_MS": 0, "ENDPOINT_CHECK_MS": 50, "ENDPOINT_SILENCE_MS": 600,
                "VOICE_FIRST_CLAUSE_WORDS": 0, "STT_SHORT_WINDOW": False, "VOICE_STREAM_ANSWERS": True},
}


@dataclass
class Results:
    """What one pipeline measured, over all its blocks."""

    first_audio_ms: list[float] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    paused: list[dict[str, Any]] = field(default_factory=list)
    speculation: list[tuple[int, int]] = field(default_factory=list)  # (started, discarded) per block
    engine_turns: list[dict[str, Any]] = field(default_factory=list)  # a real engine's figures, per turn


def speculation_counts(session: Any) -> tuple[int, int] | None:
    """(started, discarded) speculative turns (transcription and LLM begun before the end of the turn was
    confirmed) of a listening session, from its conversation's ``speculation`` (or, in a tree from before the voice
    conversation, ``listening.speculation.stats``); None when the bot has no speculation (turned off, or not in this
    tree)."""
    listening = getattr(session, "listening", None)
    conversation = getattr(listening, "conversation", None)
    if conversation is not None:
        stats = conversation.speculation if conversation.endpointer.speculate_s else None
    else:
        stats = getattr(getattr(listening, "speculation", None), "stats", None)
    return None if stats is None else (stats.started, stats.discarded)


async def say(synthesizer: Synthesizer, text: str) -> bytes:
    return (await synthesizer.synthesize(text)).pcm


async def prepare_paused(synthesizer: Synthesizer, cutter: SentenceCutter | None, question: PausedQuestion) -> bytes:
    """The question's two halves and its pause: cut out of one reading (``cutter``) or, without one, read apart."""
    if cutter is None:
        first, second = await say(synthesizer, question.first), await say(synthesizer, question.second)
    else:
        first, second = await asyncio.to_thread(cutter.halves, question.first, question.second)
    return paused_utterance(first, second, question.pause_ms)


class Block:
    """One fresh sandbox and bot with a pipeline's settings, listening in Lounge with alice and bob there."""

    def __init__(self, sandbox: Sandbox, bot: Any) -> None:
        self.sandbox = sandbox
        self.bot = bot

    @property
    def session(self) -> Any:
        return self.bot.voice_sessions.get(self.sandbox.guild_id)

    async def listen(self) -> None:
        for member in ("alice", "bob"):
            await self.sandbox.join_voice(member, "Lounge")
        position = self.sandbox.event_position
        await self.sandbox.invoke("alice", "join", {})
        await self.sandbox.wait_for(lambda ev: ev["event"] in ("message", "edit")
                                    and (ev.get("content") or "").startswith("Joined"), timeout=30, since=position)
        position = self.sandbox.event_position
        await self.sandbox.invoke("alice", "listen", {})
        # The reply says so once the conversation is listening (and its turns can be read).
        await self.sandbox.wait_for(lambda ev: ev["event"] in ("message", "edit")
                                    and (ev.get("content") or "").startswith("🎙️ Listening in"), timeout=30,
                                    since=position)
        await asyncio.to_thread(self.bot.transcriber.load)

    async def turn(self, pcm: bytes) -> tuple[float, dict[str, Any], float]:
        """bob says ``pcm``; returns (end of speech -> first answer frame ms, the turn's report, CPU seconds)."""
        sandbox, session = self.sandbox, self.session
        spoken = len(sandbox.voice_spurts(BOT))
        conversation = session.listening.conversation
        previous = conversation.last_report
        cpu = time.process_time()
        speech = await sandbox.speak("bob", pcm)
        await sandbox.wait_for(lambda ev: ev["event"] == "voice_audio" and len(sandbox.voice_spurts(BOT)) > spoken,
                               timeout=120, since=0)
        first_audio = sandbox.voice_spurts(BOT)[spoken]["start_t_ms"] - speech["t_ms"]
        for _ in range(1200):  # the turn's report is made once its whole answer has played
            if conversation.last_report is not previous:
                break
            await asyncio.sleep(0.05)
        cpu = time.process_time() - cpu
        await self.quiet()
        return first_audio, dataclasses.asdict(conversation.last_report), cpu

    async def paused(self, question: PausedQuestion, pcm: bytes) -> dict[str, Any]:
        """bob says a paused question; whether the bot answered before he finished, and how many answers came."""
        sandbox = self.sandbox
        since = sandbox.event_position
        speech = await sandbox.speak("bob", pcm)
        try:
            await sandbox.wait_for(lambda ev: ev["event"] == "message" and ev["content"].startswith("🔊"),
                                   timeout=30, since=since)
        except TimeoutError:
            pass
        await self.quiet()
        events = sandbox.events(since)
        end = speech["t_ms"]
        posts = [ev for ev in events if ev["event"] == "message" and ev["author"] == BOT]
        transcripts = [ev for ev in posts if ev["content"].startswith("🎙️")]
        answers = [ev for ev in posts if ev["content"].startswith("🔊")]
        early_frames = [ev for ev in events if ev["event"] == "voice_audio" and ev.get("member") == BOT
                        and ev["start_t_ms"] < end]
        early_posts = [ev for ev in transcripts if ev["t_ms"] < end]
        return {"text": question.text, "split_after": question.first, "pause_ms": question.pause_ms,
                "held_out": question.held_out,
                "premature": bool(early_frames or early_posts), "answers": len(answers),
                "transcripts": [ev["content"].split(": ", 1)[-1] for ev in transcripts]}

    async def quiet(self, quiet_s: float = 2.0, timeout_s: float = 60.0) -> None:
        """Wait until the bot has neither posted nor sent audio for ``quiet_s`` seconds (a queued second turn
        would post its transcript well within that)."""
        sandbox = self.sandbox
        deadline = time.monotonic() + timeout_s
        state = None
        since = time.monotonic()
        position = sandbox.event_position
        while time.monotonic() < deadline:
            posts = sum(ev["event"] == "message" and ev["author"] == BOT for ev in sandbox.events(position))
            now_state = (posts, sandbox.voice_totals(BOT)["frames"])
            if now_state != state:
                state, since = now_state, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            await asyncio.sleep(0.1)


def with_window(transcriber: Any, settings: Settings) -> Any:
    """The shared, loaded ``transcriber`` decoding with the pipeline's STT_SHORT_WINDOW (the model not copied)."""
    transcriber = copy.copy(transcriber)
    transcriber.short_window = settings.STT_SHORT_WINDOW
    return transcriber


def settings_for(overrides: dict[str, Any], ollama_url: str, tmp: Path) -> Settings:
    return load_settings(DISCORD_TOKEN=None, OLLAMA_HOST=ollama_url, DATA_DIR=tmp / "data",
                         DOCUMENTS_DIR=tmp / "documents", VOICE_COOLDOWN_S=0, **overrides)


async def run_block(name: str, overrides: dict[str, Any], ollama_url: str, models: tuple[Any, Any],
                    questions: list[bytes], paused: list[tuple[PausedQuestion, bytes]], warm_up: bytes,
                    results: Results, engine: LlamaOllama | None = None) -> None:
    synthesizer, transcriber = models
    settings = settings_for(overrides, ollama_url, Path(tempfile.mkdtemp(prefix=f"bench-turn-{name}-")))
    transcriber = with_window(transcriber, settings)
    async with Sandbox() as sandbox, running_bot(sandbox, settings, ready_timeout_s=60, synthesizer=synthesizer,
                                                 transcriber=transcriber) as bot:
        block = Block(sandbox, bot)
        await block.listen()
        await block.turn(warm_up)  # a fresh bot's first turn opens its connections: not counted
        for pcm in questions:
            first_audio, report, cpu = await block.turn(pcm)
            results.first_audio_ms.append(first_audio)
            results.reports.append(report)
            results.cpu_s.append(cpu)
            if engine is not None and engine.timings:
                timing = engine.timings[-1]
                results.engine_turns.append({
                    "turn": len(results.engine_turns) + 1, "prompt_tokens": timing.prompt_tokens,
                    "cached_tokens": timing.cached_tokens, "read_tokens": timing.read_tokens,
                    "engine_ttft_ms": round(timing.ttft_ms or 0.0, 1), "first_audio_ms": round(first_audio, 1)})
            print(f"  {name}: {first_audio:.0f} ms to first answer audio, {report}", flush=True)
        for question, pcm in paused:
            outcome = await block.paused(question, pcm)
            results.paused.append(outcome)
            print(f"  {name}: paused {outcome}", flush=True)
        counts = speculation_counts(block.session)
        if counts is not None:
            results.speculation.append(counts)


def summarize(name: str, overrides: dict[str, Any], results: Results) -> dict[str, Any]:
    def stats(values: list[float], digits: int = 1) -> dict[str, float]:
        return {"p50": round(percentile(values, 50), digits), "p95": round(percentile(values, 95), digits),
                "max": round(max(values, default=0.0), digits), "n": len(values)}

    reports = results.reports
    keys = list(reports[0]) if reports else []
    # From the first sentence's audio being ready to its playback (the stages before it overlap when speculating).
    overhead = [r["to_playback_ms"] - r["first_sentence_at_ms"] - r["tts_first_sentence_ms"]
                for r in reports if r["to_playback_ms"] and r["first_sentence_at_ms"] and r["tts_first_sentence_ms"]]
    paused = results.paused

    def premature_rate(outcomes: list[dict[str, Any]]) -> float | None:
        return round(sum(p["premature"] for p in outcomes) / len(outcomes), 3) if outcomes else None

    started, discarded = (sum(column) for column in zip(*results.speculation, strict=True)) if results.speculation \
        else (0, 0)
    return {
        "settings": overrides,
        "end_of_speech_to_first_answer_audio_ms": stats(results.first_audio_ms),
        "breakdown_p50_ms": {k: round(percentile([r[k] for r in reports if r[k] is not None], 50), 1) for k in keys},
        "breakdown_p95_ms": {k: round(percentile([r[k] for r in reports if r[k] is not None], 95), 1) for k in keys},
        "bot_overhead_ms": stats(overhead),
        "cpu_s_per_turn": stats(results.cpu_s, 3),
        "engine_turns": results.engine_turns or None,
        "speculative_started": started if results.speculation else None,
        "speculative_discarded_share": round(discarded / started, 3) if started else None,
        "paused_set": {
            "utterances": len(paused),
            "premature_answer_rate": premature_rate(paused),
            "premature_answer_rate_rule_questions": premature_rate([p for p in paused if not p["held_out"]]),
            "premature_answer_rate_held_out_questions": premature_rate([p for p in paused if p["held_out"]]),
            "answered_once": sum(p["answers"] == 1 for p in paused),
            "missed": sum(p["answers"] == 0 for p in paused),
            "answered_twice_or_more": sum(p["answers"] > 1 for p in paused),
            "premature": [f"{p['split_after']} ... ({p['pause_ms']} ms)" for p in paused if p["premature"]],
            "details": paused,
        },
    }


async def run(args: argparse.Namespace, pipelines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ollama = OllamaProcess("--first-token-ms", str(args.first_token_ms), "--tokens-per-s", str(args.tokens_per_s),
                           "--answer", ANSWER)
    url = await ollama.start()
    engine = LlamaOllama(threads=1, max_answer_tokens=40) if "real" in pipelines else None
    if engine is not None:
        await engine.start()
    urls = {name: engine.url if engine is not None and name == "real" else url for name in pipelines}
    settings = settings_for({}, url, Path(tempfile.mkdtemp(prefix="bench-turn-")))
    synthesizer, transcriber = create_synthesizer(settings), create_transcriber(settings)
    await asyncio.gather(asyncio.to_thread(synthesizer.load), asyncio.to_thread(transcriber.load))
    paused_set = paused_question_set()[: args.paused]
    # every other whole question first: as many of the rule's questions as of the held-out ones
    unique = list(dict.fromkeys(f"{first} {second}" for first, second in PAUSED_QUESTIONS))
    wholes = (unique[::2] + unique[1::2])[: args.runs]
    questions = [await say(synthesizer, text) for text in wholes]
    cutter = await asyncio.to_thread(SentenceCutter) if args.halves == "cut" else None
    paused = [(q, await prepare_paused(synthesizer, cutter, q)) for q in paused_set]
    warm_up = await say(synthesizer, WARM_UP)
    results = {name: Results() for name in pipelines}
    names = list(pipelines)
    started = machine()
    try:
        for round_ in range(args.rounds):
            order = names if round_ % 2 == 0 else names[::-1]  # ABBA: a drift in load hits both alike
            for name in order:
                print(f"round {round_ + 1}/{args.rounds}: {name}", flush=True)
                await run_block(name, pipelines[name], urls[name], (synthesizer, transcriber),
                                questions[round_::args.rounds], paused[round_::args.rounds], warm_up, results[name],
                                engine if name == "real" else None)
    finally:
        await ollama.stop()
        if engine is not None:
            await engine.stop()
    summary = {name: summarize(name, pipelines[name], results[name]) for name in pipelines}
    common = {
        "stt": f"faster-whisper {transcriber.plan}, {settings.WHISPER_COMPUTE_TYPE}",
        "tts": f"piper {synthesizer.plan}",
        "llm_stand_in": {"first_token_ms": args.first_token_ms, "tokens_per_s": args.tokens_per_s, "answer": ANSWER},
        "whole_questions_per_pipeline": len(questions), "rounds": args.rounds, "paused_halves": args.halves,
    }
    if engine is not None:  # stand-in and real engine side by side
        return {**common, "real_engine": "llama.cpp (xllamacpp), SmolLM2-135M-Instruct Q4_1, 1 thread, in process",
                "pipelines": summary,
                "machine": {**started, "load_average_at_end": machine()["load_average_1_5_15_min"]}}
    first = next(iter(summary))
    new, current = summary.get("new", summary[first]), summary.get("current", summary[first])
    return {
        **common,
        # The acceptance figures of issue 9 are the new pipeline's; both columns are under "pipelines".
        "streaming": {"pipeline": "new",
                      "end_of_speech_to_first_answer_audio_ms": new["end_of_speech_to_first_answer_audio_ms"]},
        "premature_answer_rate": new["paused_set"]["premature_answer_rate"],
        "new_to_current_p50_ratio": round(new["end_of_speech_to_first_answer_audio_ms"]["p50"]
                                          / (current["end_of_speech_to_first_answer_audio_ms"]["p50"] or 1), 3),
        "pipelines": summary,
        "machine": {**started, "load_average_at_end": machine()["load_average_1_5_15_min"]},
    }


def parse_sets(values: list[str], variants: list[str] = ()) -> dict[str, dict[str, Any]]:
    pipelines = {name: dict(overrides) for name, overrides in PIPELINES.items()}
    for variant in variants:  # a copy of "new" under another name, for --set to change
        pipelines.setdefault(variant, dict(PIPELINES["new"]))
    for value in values:
        name, _, assignment = value.partition(":")
        key, sep, raw = assignment.partition("=")
        if name not in pipelines or not sep or not key:
            raise SystemExit(f"--set takes PIPELINE:NAME=VALUE with PIPELINE one of {', '.join(pipelines)}; "
                             f"got {value!r}")
        pipelines[name][key] = raw  # pydantic converts "250" or "false" as it does from the environment
    return pipelines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="blocks per pipeline, alternating (default 4)")
    parser.add_argument("--runs", type=int, default=12, help="whole questions per pipeline (default 12, at most 24)")
    parser.add_argument("--paused", type=int, default=48, help="paused questions per pipeline (default 48, at most 48)")
    parser.add_argument("--halves", choices=("cut", "separate"), default="cut",
                        help="paused questions' halves cut out of one reading (default) or read separately")
    parser.add_argument("--first-token-ms", type=float, default=200.0)
    parser.add_argument("--tokens-per-s", type=float, default=50.0)
    parser.add_argument("--set", action="append", default=[], metavar="PIPELINE:NAME=VALUE",
                        help="a setting of one pipeline, e.g. new:ENDPOINT_SILENCE_MS=250 (repeatable)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME",
                        help="a third pipeline: a copy of new, changed with --set NAME:... (repeatable)")
    parser.add_argument("--engine", choices=("stand-in", "real"), default="stand-in",
                        help="real: the new pipeline against the stand-in and against a real CPU model, side by side")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    pipelines = parse_sets(args.set, args.variant)
    if args.engine == "real":
        pipelines = {"stand-in": pipelines["new"], "real": {**pipelines["new"], "CHAT_MODEL": MODEL_NAME}}
    args.output = args.output or (REAL_RESULTS if args.engine == "real" else RESULTS)
    for name, overrides in pipelines.items():
        settings_for(overrides, "http://127.0.0.1:11434", Path(tempfile.gettempdir()))  # fail fast on a bad value
        print(f"{name}: {overrides}")
    result = asyncio.run(run(args, pipelines))
    print(json.dumps({k: v for k, v in result.items() if k != "pipelines"}, indent=2))
    for name, summary in result["pipelines"].items():
        print(name, json.dumps({k: v for k, v in summary.items() if k != "paused_set"}),
              json.dumps({k: v for k, v in summary["paused_set"].items() if k != "details"}))
    write_json_atomic(args.output, result)


if __name__ == "__main__":
    main()
