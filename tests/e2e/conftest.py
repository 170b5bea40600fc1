"""End-to-end harness: the real bot (real discord.py client) against the sandbox and the Ollama stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.client import AssistantBot
from bot.streaming import CURSOR
from config import Settings, load_settings
from sandbox import Sandbox
from sandbox.wire import WireLog
from services.speech.stt import FasterWhisperTranscriber
from services.speech.tts import PiperSynthesizer
from tests.fakes.ollama import FakeOllama
from tests.support.bot_harness import running_bot

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FIXTURE_DOCS = FIXTURES / "docs"
TTS_SETTINGS = {"PIPER_VOICE", "MODELS_DIR"}
STT_SETTINGS = {"WHISPER_MODEL", "MODELS_DIR", "WHISPER_COMPUTE_TYPE", "STT_MAX_NO_SPEECH_PROB", "STT_MIN_AVG_LOGPROB"}
ADMINS_ONLY = "Only admins (Manage Server permission or an admin role) can use this command."


def make_settings(tmp_path: Path, ollama_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "DISCORD_TOKEN": None,
        "OLLAMA_HOST": ollama_url,
        "DATA_DIR": tmp_path / "data",
        "DOCUMENTS_DIR": tmp_path / "documents",
        "STREAM_EDIT_INTERVAL_S": 0.2,
        "CHAT_COOLDOWN_S": 0,
        "DOCS_COOLDOWN_S": 0,
        "ADMIN_COOLDOWN_S": 0,
        "SETTINGS_COOLDOWN_S": 0,
        "LLM_TIMEOUT_S": 5,
        "SHUTDOWN_TIMEOUT_S": 5,
        "SHUTDOWN_GRACE_S": 1,  # a test that leaves an answer streaming does not wait 10 s for it at the end
        "VOICE_COOLDOWN_S": 0,
        "MODELS_DIR": tmp_path / "models",
    }
    values.update(overrides)
    return load_settings(**values)


RELOAD_PROGRESS = "Indexing…"  # /docs reload's progress line (cogs/documents.py), edited into its report at the end


def being_written(content: str | None) -> bool:
    """Whether a reply is still being written: an answer streaming (its cursor) or a reload's progress, which a busy
    machine may leave unchanged for longer than ``Harness.settle``'s quiet period (the first file of a reload)."""
    return bool(content) and (content.endswith(CURSOR) or content.startswith(RELOAD_PROGRESS))


@dataclass
class Harness:
    sandbox: Sandbox
    bot: AssistantBot
    ollama: FakeOllama
    settings: Settings
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    async def command(self, member: str, name: str, options: dict[str, Any] | None = None,
                      channel: str = "general") -> int:
        """Invoke a slash command; returns the interaction id."""
        handle = await self.sandbox.invoke(member, name, options or {}, channel=channel)
        return handle.interaction_id

    async def settle(self, quiet_s: float = 0.6, timeout: float = 20.0,
                     interaction_id: int | None = None) -> list[dict[str, Any]]:
        """Collect events until the bot has visibly answered (the interaction, when given), none arrives
        for ``quiet_s`` and no visible message is still being written (``being_written``)."""
        seen: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"the bot did not settle within {timeout} s; events: {seen[-5:]}")
            try:
                seen.append(await asyncio.wait_for(self.events.get(), timeout=min(quiet_s, remaining)))
            except TimeoutError:
                streaming = any(
                    being_written(message["content"])
                    for message in self.sandbox.channel_messages("general") + self.sandbox.channel_messages("random")
                )
                answered = any(
                    event["event"] in ("message", "edit") and event.get("author") == "Assistant"
                    and (interaction_id is None or event.get("interaction_id") == interaction_id)
                    for event in seen
                )
                if answered and not streaming:
                    return seen

    def bot_messages(self, interaction_id: int | None = None, channel: str = "general") -> list[dict[str, Any]]:
        """Visible messages of the bot in ``channel`` (for one interaction when given), oldest first."""
        return [
            message for message in self.sandbox.channel_messages(channel)
            if message["author"] == "Assistant"
            and (interaction_id is None or message.get("interaction_id") == interaction_id)
        ]

    async def answer(self, member: str, name: str, options: dict[str, Any] | None = None,
                     channel: str = "general", timeout: float = 20.0) -> tuple[int, list[dict[str, Any]]]:
        """Invoke a command and wait for its answer; returns the interaction id and the events seen."""
        interaction_id = await self.command(member, name, options, channel)
        events = await self.settle(timeout=timeout, interaction_id=interaction_id)
        return interaction_id, events


def ephemeral_replies(events: list[dict[str, Any]]) -> list[str]:
    return [event["content"] for event in events if event["event"] in ("message", "edit") and event["ephemeral"]]


class HeldAnswer:
    """A responder like the stand-in's default ("You said: ..."), except that the answer to "first" is held:
    ``arrived`` is set when that request reaches the model, and its answer comes once ``release`` is set."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, body: dict[str, Any]) -> str:
        said = body["messages"][-1]["content"]
        if said == "first":
            self.arrived.set()
            await self.release.wait()
        return f"You said: {said}"


def shown(handle, text: str):
    """Predicate: the bot showed ``text`` (a part of it) as the reply to ``handle``'s interaction."""
    return lambda event: (event["event"] in ("message", "edit") and event.get("interaction_id") == handle.interaction_id
                          and text in (event["content"] or ""))


HarnessFactory = Callable[..., Any]


@dataclass
class SpeechModels:
    """The bundled voice and speech model, shared by every bot of the test session: each loads once, on first use
    (in the bot's own loading thread), instead of once per test."""

    synthesizer: PiperSynthesizer
    transcriber: FasterWhisperTranscriber


@pytest.fixture(scope="session")
def speech_models() -> SpeechModels:
    return SpeechModels(PiperSynthesizer(), FasterWhisperTranscriber())


@pytest.fixture
async def make_harness(
    tmp_path: Path, ollama: FakeOllama, speech_models: SpeechModels
) -> AsyncIterator[HarnessFactory]:
    """Factory: ``await make_harness(docs=False, dave=True, record_dir=None, rate_limits=True, wire=None,
    **setting_overrides)``
    starts a sandbox (DAVE on unless ``dave=False``; Discord's rate limits on unless ``rate_limits=False``, which a
    test turns off only when it says why; writing each talk spurt it receives as a WAV file into ``record_dir`` when
    given, as the playground's ``--record``; recording what crosses the wire into ``wire``, a ``sandbox.wire.WireLog``,
    when given) and the bot (possibly more than once per test: a restart); all are stopped
    afterwards, the latest first (``install()`` nests). ``sandbox=harness.sandbox`` starts a new bot on a running
    sandbox instead (a restart: with the same settings it has the same DATA_DIR). The bot speaks and listens with the
    session's shared bundled models, unless the overrides configure other speech settings."""
    async with contextlib.AsyncExitStack() as stack:

        async def factory(docs: bool = False, dave: bool = True, record_dir: Path | None = None,
                          sandbox: Sandbox | None = None, rate_limits: bool = True, wire: WireLog | None = None,
                          **overrides: Any) -> Harness:
            settings = make_settings(tmp_path, ollama.url, **overrides)
            if docs:
                shutil.copytree(FIXTURE_DOCS, settings.DOCUMENTS_DIR / "global")
            # The shared models stand in for the bot's own only when they are what its settings would build.
            synthesizer = speech_models.synthesizer if not overrides.keys() & TTS_SETTINGS else None
            transcriber = speech_models.transcriber if not overrides.keys() & STT_SETTINGS else None
            if sandbox is None:
                sandbox = await stack.enter_async_context(Sandbox(dave=dave, record_dir=record_dir,
                                                                  rate_limits=rate_limits, wire=wire))
            bot = await stack.enter_async_context(
                running_bot(sandbox, settings, synthesizer=synthesizer, transcriber=transcriber))
            queue = sandbox.subscribe()
            stack.callback(sandbox.unsubscribe, queue)
            return Harness(sandbox, bot, ollama, settings, queue)

        yield factory
