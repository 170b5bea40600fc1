"""The Bot subclass: owns the services, the shared state and the task registry.

``setup_hook`` opens the services, loads each cog as an extension (one failing cog is logged and the
others still load), syncs the application commands when they changed, and once ready answers the questions kept
from before the last shutdown (``bot/kept_questions.py``). Meanwhile, in the background, it checks that Ollama answers
and has the chat and embedding models (``startup_check``: one warning line with the command that fixes what is
missing; the bot starts either way), and with VOICE_PRELOAD loads the voice. ``close`` shuts down in order:
refuse new commands, let the answers the model already works on finish (SHUTDOWN_GRACE_S), cancel and await the rest
of the running work (what still waited for the model is kept), close the services, then disconnect.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import discord
from discord.ext import commands

from bot.kept_questions import ResumeHandlers, resume_waiting_questions
from bot.listening import start_listening
from bot.ratelimits import RateLimits
from bot.state import ChatSessions
from bot.tasks import TaskRegistry
from bot.tree import AssistantTree
from bot.voice_manager import VoiceManager
from config import Settings
from services.chat.answering import Answering
from services.chat.chat_settings import ChatSettings, ChatSettingsStore
from services.chat.conversations import ConversationStore
from services.chat.llm import LLMClient
from services.chat.llm_queue import LLMQueue
from services.chat.ollama_check import check_ollama
from services.files import write_json_atomic
from services.knowledge.index import DocumentIndex
from services.speech.stt import Transcriber, create_transcriber
from services.speech.tts import Synthesizer, create_synthesizer
from services.storage.bot_threads import BotThreadStore
from services.storage.database import Database
from services.storage.guild_settings import GuildSettingsStore
from services.storage.waiting_questions import WaitingQuestionStore

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = ("cogs.chat", "cogs.documents", "cogs.voice", "cogs.listen", "cogs.settings", "cogs.forget")
STARTUP_CHECK_TIMEOUT_S = 10.0  # the start-up check of Ollama gives up after this; readiness never waits for it
T = TypeVar("T")


class AssistantBot(commands.Bot):
    """The assistant. Services are injected (tests pass their own settings, and may share loaded speech models
    between bots: a transcriber passed in is not closed by this bot); see module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        llm: LLMClient | None = None,
        synthesizer: Synthesizer | None = None,
        transcriber: Transcriber | None = None,
        extensions: Sequence[str] = DEFAULT_EXTENSIONS,
        connector: aiohttp.BaseConnector | None = None,
    ) -> None:
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: needed to read the text of mentions and replies
        # What Discord's X-RateLimit headers say about each bucket: streamed replies plan their edits with it.
        rate_limits = RateLimits()
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=AssistantTree,
            help_command=None,
            chunk_guilds_at_startup=False,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=False, replied_user=True),
            connector=connector,  # the sandbox passes one that trusts its local certificate authority
            http_trace=rate_limits.trace_config(),
        )
        self.rate_limits = rate_limits
        self.settings = settings
        self.llm = llm or LLMClient.from_settings(settings)
        # Every chat answer waits here for one of LLM_MAX_CONCURRENCY slots at Ollama, members taking turns.
        self.llm_queue = LLMQueue(max_concurrency=settings.LLM_MAX_CONCURRENCY, max_waiting=settings.LLM_QUEUE_MAX,
                                  fair=settings.LLM_QUEUE_FAIR, notice_interval_s=settings.STREAM_EDIT_INTERVAL_S)
        self.database = Database(settings.db_path)
        self.conversations = ConversationStore(self.database, max_messages=settings.HISTORY_MAX_MESSAGES)
        self.bot_threads = BotThreadStore(self.database, ttl_s=settings.THREAD_MEMORY_DAYS * 86400,
                                          max_threads=settings.THREADS_MAX)
        # Text questions still waiting at shutdown, answered after the restart (bot/kept_questions.py).
        self.waiting_questions = WaitingQuestionStore(self.database, max_rows=settings.LLM_QUEUE_MAX)
        self.resume_handlers = ResumeHandlers()  # kind -> the cog's handler, registered at cog_load
        self.index = DocumentIndex.from_settings(settings, self.llm)
        self.guild_settings = GuildSettingsStore(self.database)
        self.chat_settings = ChatSettingsStore(self.database, default_persona=settings.SYSTEM_PROMPT,
                                               default_model=settings.CHAT_MODEL)
        # The one answering use case: every text and spoken answer (services/chat/answering.py).
        self.answering = Answering(settings=settings, llm=self.llm, llm_queue=self.llm_queue,
                                   conversations=self.conversations, chat_settings=self.chat_settings,
                                   documents=self.index)
        self.synthesizer = synthesizer or create_synthesizer(settings)
        self._owns_transcriber = transcriber is None
        self.transcriber = transcriber or create_transcriber(settings)
        # The models load later, in threads; their loading logs what was loaded and whether it was verified.
        log.info("speech voice %s, speech recognition model %s", self.synthesizer.plan, self.transcriber.plan)
        self.chat_sessions = ChatSessions(max_sessions=settings.SESSION_MAX, ttl_s=settings.SESSION_TTL_S)
        self.tasks = TaskRegistry()
        self.voice_sessions = VoiceManager(
            settings, synthesizer=self.synthesizer, tasks=self.tasks, guild_settings=self.guild_settings,
            start_listening=lambda session, text_channel_id: start_listening(self, session, text_channel_id),
            bot_user_id=lambda: self.user.id if self.user is not None else None,
        )
        self.shutting_down = False
        self.failed_extensions: dict[str, str] = {}
        self._extensions_to_load = tuple(extensions)
        self._closing: asyncio.Task[None] | None = None
        self.startup_check: asyncio.Task[str | None] | None = None
        """The start-up check of Ollama (started by ``setup_hook``): its result is the line logged, or None."""

    async def setup_hook(self) -> None:
        # Background work first: none of it delays readiness.
        self.startup_check = self.tasks.start(self._check_ollama(), name="startup-check")
        if self.settings.VOICE_PRELOAD:
            self.voice_sessions.load_voice()
        await self.database.open()  # conversations and guild settings
        for name in self._extensions_to_load:
            try:
                await self.load_extension(name)
            except commands.ExtensionError as exc:
                self.failed_extensions[name] = str(exc.__cause__ or exc)
                log.exception("extension %s failed to load; the other cogs still run", name)
        await self.sync_commands()
        resume = resume_waiting_questions(self, keeping=self, handlers=self.resume_handlers, tasks=self.tasks,
                                          settings=self.settings, limits=self.rate_limits)
        self.tasks.start(resume, name="resume-waiting-questions")

    async def _check_ollama(self) -> str | None:
        """Whether Ollama answers and has CHAT_MODEL and EMBED_MODEL, within STARTUP_CHECK_TIMEOUT_S: when not, log
        one warning line with the command that fixes it (``ollama pull ...``) and return it; None when all is
        there."""
        status = await check_ollama(self.llm, chat_model=self.settings.CHAT_MODEL,
                                    embed_model=self.settings.EMBED_MODEL, timeout_s=STARTUP_CHECK_TIMEOUT_S)
        problem = status.problem()
        if problem is not None:
            log.warning("%s", problem)
        return problem

    async def sync_commands(self) -> bool:
        """Sync app commands to DEV_GUILD_ID (or globally) when they differ from the last sync.

        The last synced command set is remembered as a hash in DATA_DIR, per application and target,
        because Discord rate-limits syncs and a restart with the same commands needs none. The record
        cannot see commands deleted since (an owner who cleared them, a fresh local sandbox), so an
        unchanged record is confirmed with one GET of the registered commands. Returns True when a sync
        was sent; raises discord.HTTPException when the sync itself fails.
        """
        guild = discord.Object(self.settings.DEV_GUILD_ID) if self.settings.DEV_GUILD_ID else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        payload = [command.to_dict(self.tree) for command in self.tree.get_commands(guild=guild)]
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        target = f"{self.application_id}:{guild.id if guild else 'global'}"
        record_path = self.settings.DATA_DIR / "command_sync.json"
        record = await asyncio.to_thread(_read_json, record_path)
        if record.get(target) == digest and await self._commands_registered(guild, payload):
            log.info("application commands unchanged; not syncing")
            return False
        synced = await self.tree.sync(guild=guild)
        log.info("synced %d application commands to %s", len(synced), f"guild {guild.id}" if guild else "all guilds")
        record[target] = digest
        await asyncio.to_thread(write_json_atomic, record_path, record, sort_keys=True)
        return True

    async def _commands_registered(self, guild: discord.Object | None, payload: list[dict[str, Any]]) -> bool:
        """Whether ``guild`` (None: global) has exactly the commands of ``payload``, by name and type."""
        try:
            registered = await self.tree.fetch_commands(guild=guild)
        except discord.HTTPException as exc:
            log.warning("could not list the registered application commands (%s); syncing them", exc)
            return False
        wanted = {(command["name"], int(command.get("type", 1))) for command in payload}
        if {(command.name, command.type.value) for command in registered} == wanted:
            return True
        log.info("the registered application commands differ from ours (deleted since the last sync?)")
        return False

    async def chat_settings_of(self, guild_id: int | None, channel: Any) -> ChatSettings:
        """The effective persona, chat model and free-channel flag of ``channel`` (a channel or thread object, or
        an id): those of ``settings_channel_of``."""
        return await self.chat_settings.effective(guild_id, await self.settings_channel_of(channel))

    async def settings_channel_of(self, channel: Any) -> int:
        """The id of the channel whose settings apply in ``channel`` (a channel or thread object, or an id, looked up
        in the cache): a thread's parent, also when the cache does not know the thread (an archived thread) but the
        bot started it (``bot_threads``)."""
        if isinstance(channel, int):
            channel = self.get_channel(channel) or channel
        channel_id = settings_channel_id(channel)
        if not isinstance(channel, discord.Thread | discord.abc.GuildChannel):
            channel_id = await self.bot_threads.parent_of(channel_id) or channel_id
        return channel_id

    async def on_guild_remove(self, guild: discord.Guild, /) -> None:
        # Left (kicked, or the guild deleted): what is cached in memory for it goes too.
        self.index.forget_guild(guild.id)

    async def on_message(self, message: discord.Message, /) -> None:
        # No prefix commands: mentions are conversation, handled by the chat cog's listener.
        return

    async def run_tracked(self, coro: Coroutine[Any, Any, T], *, name: str) -> T:
        """Run ``coro`` as a registered task and wait for it, so shutdown can cancel and await it."""
        return await self.tasks.start(coro, name=name, awaited=True)

    async def close(self) -> None:
        """Shut down in order: stop taking new work, let the answers the model started on finish (within
        SHUTDOWN_GRACE_S), then cancel and await the rest and close the services (within SHUTDOWN_TIMEOUT_S); safe to
        call more than once."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close(), name="bot-close")
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self.shutting_down = True
        deadline = self.settings.SHUTDOWN_TIMEOUT_S
        # The model is asked nothing more; what it already works on may finish within the grace period. What still
        # waits for it is cancelled below, which keeps it for after the restart.
        self.llm_queue.close()
        await self.voice_sessions.close(timeout_s=deadline * 0.1)
        answering = self.llm_queue.answering
        if answering:
            grace = self.settings.SHUTDOWN_GRACE_S
            log.info("shutting down: letting %d answers under way finish, up to %.1f s", len(answering), grace)
            _, late = await asyncio.wait(answering, timeout=grace) if grace > 0 else (set(), answering)
            if late:
                log.warning("%d answers were not finished within SHUTDOWN_GRACE_S (%.1f s): they end marked"
                            " interrupted", len(late), grace)
        log.info("shutting down: waiting up to %.1f s for running work", deadline)
        await self.tasks.shutdown(timeout_s=deadline * 0.5)
        closers = [("database", self.database.close), ("index", self.index.close), ("llm", self.llm.close)]
        if self._owns_transcriber:
            closers.append(("transcriber", lambda: asyncio.to_thread(self.transcriber.close)))
        for name, closer in closers:
            try:
                await asyncio.wait_for(closer(), timeout=deadline * 0.1)
            except TimeoutError:  # its str() is empty: say what happened
                log.warning("closing %s timed out after %g s", name, deadline * 0.1)
            except (OSError, RuntimeError) as exc:
                log.warning("closing %s failed: %s", name, exc)
        await super().close()
        log.info("shutdown complete")


def settings_channel_id(channel: Any) -> int:
    """The channel whose settings apply in ``channel``: a thread's parent (``Thread.parent_id``), else the channel
    itself; ``channel`` may be a channel object or an id (0 when unknown)."""
    if isinstance(channel, int):
        return channel
    if isinstance(channel, discord.Thread):
        return channel.parent_id
    return getattr(channel, "id", 0)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return {}
