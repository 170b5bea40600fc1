"""Flood benchmark: many distinct members hammering the bot at once, as a hostile tester would.

The real bot runs against the sandbox with its default settings (cooldowns, length limits, a chat queue of
CHAT_QUEUE_MAX per channel, SESSION_MAX sessions); the Ollama stand-in runs in its own process, as Ollama
would, with a model delay (``--first-token-ms``, ``--tokens-per-s``). ``--members`` numbered members
(``member-1`` ...) each send ``--requests-per-member`` requests, all shuffled together (a fixed seed) and sent
at ``--rate`` per second over both text channels: /ask, /chat and mentions, some too long (a modified client
skips Discord's length check) or blank, and some admin commands (/docs reload, /reset) from these plain
members.

Reported: requests sent; what each member finally saw, by kind (answered, refused because the channel queue
or the LLM queue is full, cooldown, too long, blank, not admin, other); how many saw a queue notice first; the
time from the request to its first visible reply (the "thinking..." defer or a first message), p50 / p95 / max; whether
every request got a reply (none unanswered, none left "thinking...", streaming or queued); the process RSS
every second (start, peak, end: bot, sandbox and this driver share the process; the stand-in is not in it);
the bot's chat session map at the end against SESSION_MAX; sandbox errors (requests Discord would refuse) and
the bot's logged warnings and errors; Discord's rate limits (on, with the sandbox's defaults): the 429s the sandbox
served and the bot received, by scope, and the time they made the bot wait (``retry_after``: total, p50, max).

Usage: ``.venv/bin/python -m bench.flood [--members 2000] [--requests-per-member 3] [--rate 50]
[--first-token-ms 300] [--tokens-per-s 20]``; writes bench/results/flood.json (``--output``).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import collections
import json
import logging
import platform
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import OllamaProcess, percentile
from bot.streaming import CURSOR
from config import Settings, load_settings
from sandbox import Sandbox, SandboxError
from sandbox.bus import EVENT_HISTORY
from sandbox.guild import NUMBERED_MEMBER_MAX
from sandbox.server import MAX_INTERACTIONS, MAX_MESSAGES
from services.files import write_json_atomic
from tests.support.bot_harness import running_bot

try:  # the better probe when installed; /proc works on Linux without it
    import psutil
except ImportError:
    psutil = None

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "bench" / "results" / "flood.json"
CHANNELS = ("general", "random")
ANSWER_TASKS = ("chat", "ask", "mention")  # cogs/chat.py names each answer's task "<kind>:<id>"

# What a member can send, with its share of the flood.
MIX = {
    "ask": 0.30,  # /ask question
    "chat": 0.25,  # /chat message
    "mention": 0.25,  # @Assistant text
    "too_long": 0.06,  # /ask or /chat one character over the limit (a modified client)
    "blank": 0.06,  # /chat with only spaces, or a bare mention
    "admin": 0.08,  # /docs reload or /reset by a plain member
}

# What the member finally sees, recognised by the bot's sentences (cogs/chat.py, bot/tree.py, bot/state.py).
OUTCOMES = [
    ("answered", re.compile(r"^You said: ")),
    ("queue_full", re.compile(r"Too many messages are waiting")),
    ("llm_queue_full", re.compile(r"Too many requests are waiting for the assistant")),
    ("cooldown", re.compile(r"^(⚠️ )?Slow down")),
    ("too_long", re.compile(r"characters long; the limit is")),
    ("blank", re.compile(r"is blank|Ask me something after the mention")),
    ("not_admin", re.compile(r"Only admins|You need the .* permission")),
    ("waited_too_long", re.compile(r"waited too long")),
    ("internal_error", re.compile(r"Something went wrong on my side")),
]
QUEUED = re.compile(r"^⏳ Queued")
UNFINISHED = ("thinking", "streaming", "queued", "no_reply")
RETIRE_S = 60.0  # a finished request is summarised this long after it was sent (no event for it comes later)
LATE_CALLBACK = re.compile(r"POST /interactions/(\d+)/")  # an error event's route: the interaction it refused


def rss_mb() -> float:
    """Resident set size of this process in MiB (psutil, else /proc/self/status VmRSS)."""
    if psutil is not None:
        return psutil.Process().memory_info().rss / 2**20
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("cannot read the RSS: install psutil or run on Linux")




@dataclass(eq=False)  # hashed by identity: a key of Tracker.live
class Request:
    """One request of the flood and what its member saw of the bot's reply."""

    member: str
    kind: str
    channel: str
    sent_ms: int | None = None  # sandbox t_ms of the command / the member's message
    first_reply_ms: int | None = None  # sandbox t_ms of the first visible reply (defer or message)
    deferred: bool = False
    queued: bool = False  # a queue notice was shown before the final content
    contents: dict[int, str] = field(default_factory=dict)  # bot message id -> content now
    send_error: str | None = None
    interaction_id: int | None = None  # None for a mention
    message_id: int | None = None  # the mention's message
    expired: bool = False  # the bot answered after Discord's 3 s deadline: "The application did not respond"

    @property
    def content(self) -> str | None:
        """What the first reply message shows now (None: nothing posted yet)."""
        return self.contents[min(self.contents)] if self.contents else None

    def outcome(self) -> str:
        """The kind of reply the member sees now; 'thinking', 'streaming', 'queued' or 'no_reply' while unfinished."""
        if self.send_error is not None:
            return "send_failed"
        content = self.content
        if content is None and self.expired:
            return "expired"  # Discord's client shows "The application did not respond"
        if content is None:
            return "thinking" if self.deferred else "no_reply"
        if any(text.endswith(CURSOR) for text in self.contents.values()):
            return "streaming"
        if QUEUED.match(content):
            return "queued"
        return next((name for name, pattern in OUTCOMES if pattern.search(content)), "other")


class Summary:
    """What the finished requests came to, folded in as they finish so that the driver's memory stays flat."""

    def __init__(self) -> None:
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.mix: collections.Counter[str] = collections.Counter()
        self.queued = 0
        self.latencies: dict[str, array.array] = {"interaction": array.array("i"), "mention": array.array("i")}
        self.examples: dict[str, str | None] = {}

    def add(self, request: Request) -> None:
        outcome = request.outcome()
        self.outcomes[outcome] += 1
        self.by_kind[request.kind][outcome] += 1
        self.mix[request.kind] += 1
        self.queued += request.queued
        if request.first_reply_ms is not None and request.sent_ms is not None:
            path = "mention" if request.interaction_id is None else "interaction"
            self.latencies[path].append(request.first_reply_ms - request.sent_ms)
        if outcome in ("other", "send_failed") and len(self.examples) < 10:
            self.examples[f"{request.kind} by {request.member}"] = request.send_error or request.content


class Tracker:
    """Follows the sandbox's events and files each under the request it answers.

    A request whose reply is final is retired into ``summary`` RETIRE_S seconds after it was sent (a bot event
    for it after that would be counted in ``others``, which stays 0 when the window is long enough).
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.summary = Summary()
        self.live: dict[Request, float] = {}  # request -> loop time it was sent
        self.by_interaction: dict[int, Request] = {}
        self.by_message: dict[int, Request] = {}  # a mention's message id -> its request
        self.by_reply: dict[int, Request] = {}  # a bot message id -> the request it answers
        self.early: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)  # before the request is known
        self.others = 0  # bot messages that answer no live request
        self.errors: collections.Counter[str] = collections.Counter()
        self._queue = sandbox.subscribe()
        self._task = asyncio.create_task(self._run(), name="flood-tracker")

    def add(self, request: Request) -> None:
        self.live[request] = asyncio.get_running_loop().time()
        if request.send_error is not None:
            return
        key = request.interaction_id if request.interaction_id is not None else request.message_id
        assert key is not None
        (self.by_interaction if request.interaction_id is not None else self.by_message)[key] = request
        for event in self.early.pop(key, []):
            self._file(event)

    def unfinished(self) -> collections.Counter[str]:
        """Outcomes of the live requests that are not final yet."""
        return collections.Counter(o for r in self.live if (o := r.outcome()) in UNFINISHED)

    def retire(self, *, older_than_s: float = RETIRE_S, everything: bool = False) -> None:
        """Fold the finished requests sent more than ``older_than_s`` ago (``everything``: all) into the summary."""
        now = asyncio.get_running_loop().time()
        for request, sent in list(self.live.items()):
            if everything or (now - sent > older_than_s and request.outcome() not in UNFINISHED):
                del self.live[request]
                self.summary.add(request)
                self.by_interaction.pop(request.interaction_id or 0, None)
                self.by_message.pop(request.message_id or 0, None)
                for reply_id in request.contents:
                    self.by_reply.pop(reply_id, None)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.sandbox.unsubscribe(self._queue)

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            if event["event"] == "error":
                self.errors[f"{event['code']} {event['message']}"] += 1
            self._file(event)

    def _file(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "error":
            late = LATE_CALLBACK.match(event["route"]) if event["code"] == 10062 else None
            if late is not None:
                key = int(late.group(1))
                if key in self.by_interaction:
                    self.by_interaction[key].expired = True
                else:
                    self.early[key].append(event)
            return
        if kind == "command" or (kind == "message" and event["author"] != "Assistant"):
            key = event["interaction_id"] if kind == "command" else event["message_id"]
            request = (self.by_interaction if kind == "command" else self.by_message).get(key)
            if request is None:
                self.early[key].append(event)
            else:
                request.sent_ms = event["t_ms"]
            return
        if kind not in ("deferred", "message", "edit") or event.get("author", "Assistant") != "Assistant":
            return
        request, key = self._request_of(event)
        if request is None:
            if key is not None:
                self.early[key].append(event)
            else:
                self.others += 1
            return
        if request.first_reply_ms is None:
            request.first_reply_ms = event["t_ms"]
        if kind == "deferred":
            request.deferred = True
            return
        self.by_reply[event["message_id"]] = request
        request.contents[event["message_id"]] = event["content"]
        if QUEUED.match(event["content"]):
            request.queued = True

    def _request_of(self, event: dict[str, Any]) -> tuple[Request | None, int | None]:
        """The request a bot event answers, or (None, the key to wait for) when it is not known yet."""
        if event.get("interaction_id") is not None:
            key = event["interaction_id"]
            return self.by_interaction.get(key), key
        if event["message_id"] in self.by_reply:
            return self.by_reply[event["message_id"]], None
        key = event.get("reference_id")
        if key is None:
            return None, None
        return self.by_message.get(key), key


def plan(members: int, per_member: int, seed: int) -> list[int]:
    """The order of the flood: request numbers 0 .. members * per_member - 1, shuffled with ``seed``."""
    order = list(range(members * per_member))
    random.Random(seed).shuffle(order)
    return order


def make_request(index: int, per_member: int, seed: int, settings: Settings) -> tuple[Request, dict[str, Any]]:
    """Request number ``index`` (member ``index // per_member + 1``): the request and how to send it. Made when
    it is sent, from its own seeded generator, so that the flood needs no memory of its own beforehand."""
    rng = random.Random(seed * 1_000_003 + index)
    member, turn = f"member-{index // per_member + 1}", index % per_member
    kind = rng.choices(list(MIX), list(MIX.values()))[0]
    channel = rng.choice(CHANNELS)
    words = f"question {turn} from {member} in #{channel}"
    if kind == "ask":
        how: dict[str, Any] = {"command": "ask", "options": {"question": words}}
    elif kind == "chat":
        how = {"command": "chat", "options": {"message": words}}
    elif kind == "mention":
        how = {"mention": words}
    elif kind == "too_long":  # validate=False: past the max_length Discord's client enforces
        option = rng.choice(["question", "message"])
        limit = settings.ASK_MAX_CHARS if option == "question" else settings.CHAT_MAX_CHARS
        how = {"command": "ask" if option == "question" else "chat", "options": {option: "x" * (limit + 1)},
               "validate": False}
    elif kind == "blank" and rng.random() < 0.5:
        how = {"command": "chat", "options": {"message": "   "}}
    elif kind == "blank":
        how = {"mention": ""}
    else:
        how = {"command": rng.choice(["docs reload", "reset"]), "options": {}}
    return Request(member, kind, channel), how


async def send(sandbox: Sandbox, tracker: Tracker, request: Request, how: dict[str, Any]) -> None:
    try:
        if "mention" in how:
            message = await sandbox.send_message(request.member, request.channel, how["mention"], mention_bot=True)
            request.message_id = message["id"]
        else:
            handle = await sandbox.invoke(request.member, how["command"], how["options"], channel=request.channel,
                                          validate=how.get("validate", True))
            request.interaction_id = handle.interaction_id
    except SandboxError as exc:
        request.send_error = str(exc)
    tracker.add(request)


class LogCounter(logging.Handler):
    """Counts the bot's (and libraries') warnings and errors and keeps a few distinct examples."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname] += 1
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        text = text[:300]
        text = re.sub(r"\d{3,}", "N", text)  # ids and numbers: group alike messages
        if text in self.examples or len(self.examples) < 30:
            self.examples[text] = self.examples.get(text, 0) + 1


def rate_limit_report(sandbox: Sandbox, received: int) -> dict[str, Any]:
    """The 429s of the run: served by the sandbox (by scope), received by the bot, and the seconds they told the bot
    to wait (each one's ``retry_after``: every member whose reply it was waited that long more)."""
    hits = list(sandbox.rate_limits.hits)
    waits = [hit.retry_after_s for hit in hits]
    settings = sandbox.rate_limits.settings
    return {
        "limits": {"messages_per_channel": f"{settings.message_limit} per {settings.message_window_s} s",
                   "per_interaction_token": f"{settings.webhook_limit} per {settings.webhook_window_s} s",
                   "global": f"{settings.global_limit} per {settings.global_window_s} s"},
        "served_429": sandbox.rate_limits.served_429,
        "received_429_by_bot": received,
        "by_scope": dict(collections.Counter(hit.scope for hit in hits)),
        "by_route": dict(collections.Counter(re.sub(r"\d{6,}", "<id>", hit.route) for hit in hits).most_common(5)),
        "waited_s": {"total": round(sum(waits), 3), "p50": percentile(waits, 50),
                     "max": max(waits, default=0)},
    }


async def sample_rss(samples: list[tuple[float, float]], started: float) -> None:
    while True:
        samples.append((round(time.perf_counter() - started, 1), round(rss_mb(), 1)))
        await asyncio.sleep(1.0)


async def flood(sandbox: Sandbox, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Send the flood at ``args.rate`` per second (0: as fast as possible), then wait for every reply to settle."""
    tracker = Tracker(sandbox)
    order = plan(args.members, args.requests_per_member, args.seed)
    loop = asyncio.get_running_loop()
    started = loop.time()
    next_retire = started + 1.0
    try:
        for number, index in enumerate(order):
            if args.rate > 0:
                delay = started + number / args.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await send(sandbox, tracker, *make_request(index, args.requests_per_member, args.seed, settings))
            if loop.time() >= next_retire:
                tracker.retire()
                next_retire = loop.time() + 1.0
        sent_s = loop.time() - started
        # Drain: until every member has a final reply, or nothing changed for drain_s seconds.
        last_change, last_state = loop.time(), None
        while True:
            state = tracker.unfinished()
            if not state and not tracker.early:
                break
            if state != last_state:
                last_change, last_state = loop.time(), state
            elif loop.time() - last_change > args.drain_s:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # a last look: nothing should move any more
        drained_s = loop.time() - started - sent_s
    finally:
        await tracker.close()
    tracker.retire(everything=True)
    summary = tracker.summary
    outcomes = summary.outcomes
    every = list(summary.latencies["interaction"]) + list(summary.latencies["mention"])
    return {
        "requests_sent": len(order) - outcomes["send_failed"],
        "send_seconds": round(sent_s, 1),
        "achieved_rate_per_s": round(len(order) / sent_s, 1) if sent_s else None,
        "drain_seconds": round(drained_s, 1),
        "mix": dict(summary.mix.most_common()),
        "outcomes": dict(outcomes.most_common()),
        "outcomes_by_request_kind": {kind: dict(summary.by_kind[kind].most_common()) for kind in MIX},
        "saw_queue_notice_first": summary.queued,
        "first_visible_reply_ms": {
            path: {"count": len(values), "p50": percentile(list(values), 50), "p95": percentile(list(values), 95),
                   "max": max(values, default=0)}
            for path, values in (("all", every), *summary.latencies.items())
        },  # interaction: to the defer or first message (Discord's deadline: 3 s); mention: to the first reply
        "unanswered": outcomes["no_reply"] + outcomes["send_failed"],
        "expired": outcomes["expired"],
        "left_thinking": outcomes["thinking"],
        "left_streaming": outcomes["streaming"],
        "left_queued": outcomes["queued"],
        "every_request_got_a_final_reply": not any(outcomes[k] for k in (*UNFINISHED, "send_failed", "expired")),
        "unmatched_bot_messages": tracker.others,
        "sandbox_errors": dict(tracker.errors.most_common()),
        "examples_of_other_replies": summary.examples,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stand_in = OllamaProcess("--first-token-ms", str(args.first_token_ms), "--tokens-per-s", str(args.tokens_per_s))
    url = await stand_in.start()
    logs = LogCounter()
    logging.getLogger().addHandler(logs)
    samples: list[tuple[float, float]] = []
    started = time.perf_counter()
    sampler = asyncio.create_task(sample_rss(samples, started), name="rss-sampler")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = load_settings(DISCORD_TOKEN=None, OLLAMA_HOST=url, DATA_DIR=Path(tmp) / "data",
                                     DOCUMENTS_DIR=Path(tmp) / "documents", MODELS_DIR=Path(tmp) / "models")
            async with Sandbox() as sandbox, running_bot(sandbox, settings, ready_timeout_s=60) as bot:
                await asyncio.sleep(1.0)  # settle after start-up (command sync) before the baseline
                rss_start = rss_mb()
                flood_started = round(time.perf_counter() - started, 1)
                report = await flood(sandbox, settings, args)
                report["rate_limits"] = rate_limit_report(sandbox, bot.rate_limits.received_429)
                rss_end = rss_mb()
                sessions = await bot.chat_sessions.size()
                guild = bot.get_guild(sandbox.guild_id)
                report["sandbox_stores_at_end"] = {  # bounded stores of the sandbox, also in this process
                    "messages": len(sandbox.messages), "messages_cap": MAX_MESSAGES,
                    "interactions": len(sandbox.interactions), "interactions_cap": MAX_INTERACTIONS,
                    "event_history": len(sandbox.events(0)), "event_history_cap": EVENT_HISTORY,
                }  # fmt: skip
                report.update(
                    chat_sessions={"at_end": sessions, "SESSION_MAX": settings.SESSION_MAX},
                    # chat:/ask:/mention: tasks answer one request each; the rest (an idle watch) live on purpose
                    answer_tasks_running_at_end=[n for n in bot.tasks.running if n.split(":")[0] in ANSWER_TASKS],
                    members_cached_by_discord_py=len(guild.members) if guild else None,
                )
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        logging.getLogger().removeHandler(logs)
        await stand_in.stop()
    during = [mb for t, mb in samples if t >= flood_started]
    return {
        "members": args.members,
        "requests_per_member": args.requests_per_member,
        "rate_per_s": args.rate,
        "model": {"first_token_ms": args.first_token_ms, "tokens_per_s": args.tokens_per_s},
        "settings": {name: getattr(settings, name) for name in (
            "CHAT_COOLDOWN_S", "CHAT_QUEUE_MAX", "CHAT_MAX_CHARS", "ASK_MAX_CHARS", "SESSION_MAX",
            "STREAM_EDIT_INTERVAL_S")},
        **report,
        "rss_mb": {
            "before_bot": samples[0][1] if samples else None,
            "start": round(rss_start, 1),
            "peak": max(during, default=rss_start),
            "end": round(rss_end, 1),
            "samples": samples,  # [seconds since the benchmark started, MiB]; the flood starts at flood_started_s
            "flood_started_s": flood_started,
            "probe": "psutil" if psutil is not None else "/proc/self/status VmRSS",
        },
        "log_records": {"counts": dict(logs.counts), "examples": logs.examples},
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2000, help=f"distinct members, 1..{NUMBERED_MEMBER_MAX}")
    parser.add_argument("--requests-per-member", type=int, default=3)
    parser.add_argument("--rate", type=float, default=50.0, help="requests sent per second; 0: as fast as possible")
    parser.add_argument("--first-token-ms", type=float, default=300.0, help="the stand-in model's first-token delay")
    parser.add_argument("--tokens-per-s", type=float, default=20.0, help="the stand-in model's generation rate")
    parser.add_argument("--drain-s", type=float, default=60.0,
                        help="after the last request, give up waiting when no reply changed for this long")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"the JSON written (default {RESULTS})")
    args = parser.parse_args()
    if not 1 <= args.members <= NUMBERED_MEMBER_MAX:
        parser.error(f"--members must be within 1..{NUMBERED_MEMBER_MAX}")
    if args.requests_per_member < 1 or args.rate < 0:
        parser.error("--requests-per-member must be at least 1 and --rate at least 0")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    result = asyncio.run(run(args))
    shown = {k: v for k, v in result.items() if k not in ("rss_mb",)}
    shown["rss_mb"] = {k: v for k, v in result["rss_mb"].items() if k != "samples"}
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    write_json_atomic(args.output, result)


if __name__ == "__main__":
    main()
