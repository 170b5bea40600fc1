"""``Sandbox``: a local Discord (gateway + REST + attachment CDN) on 127.0.0.1 for the real discord.py client.

Typical use (tests, the playground, ``main.py`` without a token; more in docs/sandbox.md)::

    async with Sandbox(interaction_deadline_s=3.0) as sb:  # start() + install(); on exit uninstall() + stop()
        bot = MyBot(..., connector=sb.client_connector())  # trusts the sandbox's voice TLS certificate
        bot_task = asyncio.create_task(bot.start(sb.bot_token))
        await sb.wait_ready()
        handle = await sb.invoke("alice", "ask", {"question": "what is X"})
        ev = await sb.wait_for(lambda e: e["event"] == "message" and e["author"] == "Assistant", since=handle)
        ...
        await bot.close()

``start()`` binds 127.0.0.1 on random ports (HTTP and gateway, the wss:// voice gateway, UDP); ``install()``
points discord.py's REST base and gateway URL here.

What members see is published as *events* (plain dicts with ``event`` and ``t_ms``, milliseconds since
``start()``; also what the playground prints with ``--json``): their kinds and fields are listed in
docs/sandbox.md.

Voice: the bot's op 4 gets VOICE_STATE_UPDATE + VOICE_SERVER_UPDATE pointing at a wss:// voice gateway
(v8, DAVE end-to-end encryption on unless ``Sandbox(dave=False)``) and a UDP endpoint on 127.0.0.1
(``sandbox.voice``); the TLS certificate comes from a CA made at ``start()``, which clients trust through
``client_connector()`` / ``ssl_context``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import logging
import secrets
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import discord.gateway
import discord.http
import yarl
from aiohttp import web

from bot.opus import OpusUnavailable

from . import guild, messages
from .bus import EventBus
from .gateway import HEARTBEAT_INTERVAL_MS, Gateway, GatewayHooks
from .guild import SimChannel, SimUser, UnknownName
from .interactions import build_options, find_component, interaction_payload, mark_focused, read_upload
from .model import UPLOAD_LIMIT_BYTES, Event, InteractionRecord, InvokeHandle, SandboxError, StoredMessage, Upload
from .ratelimits import RateLimiter, RateLimitSettings
from .rest import RestApi
from .state import RestoredState, StateUnreadable, read_state, restore, set_aside, snapshot, write_state
from .threads import PUBLIC_THREAD, THREAD_NAME_MAX, SimThread, thread_channel, thread_delete_payload, thread_payload
from .voice.server import SandboxVoice, VoiceHooks, VoiceRefused
from .voice.speech import SpeechError, SpeechPlan, plan_speech, read_speech
from .wire import WireLog

_log = logging.getLogger(__name__)

DISCORD_EPOCH_MS = 1_420_070_400_000
MAX_MESSAGES = 5000  # messages kept (oldest dropped)
# Interactions kept (oldest dropped). Discord honours a token for 15 minutes; under a flood of 200 commands/s a
# /chat waiting in its channel's queue still edits its reply after thousands of newer interactions (bench/flood.py).
MAX_INTERACTIONS = 10_000
MAX_ATTACHMENT_BYTES = 256 * 1024 * 1024  # total attachment bytes kept in memory
CLICK_MIN_DELAY_S = 0.1  # earliest a component can be used after its message was shown or edited
STATE_SAVE_DELAY_S = 1.0  # with a state file: a change is on disk within this many seconds (one write per period)


class Sandbox:
    """A local Discord for one bot: the fixed guild of ``sandbox.guild`` served on 127.0.0.1.

    ``interaction_deadline_s``: seconds the bot has to answer an interaction callback (Discord: 3.0); a
    later callback gets 404 code 10062 "Unknown interaction" and an error event. ``dave``: voice is end-to-end
    encrypted (DAVE protocol version 1), as Discord requires since March 2026; False runs version 0.
    ``record_dir``: a folder (created if missing) where each talk spurt the voice server receives is also written as
    a WAV file, named in its ``voice_audio`` event's ``file``. ``message_content_intent``: whether the application
    is granted the privileged Message Content intent (its Developer Portal toggle); without it, as on Discord, an
    IDENTIFY asking for it is closed with 4014, the application's flags lack it, and messages reach the bot (REST
    and gateway) with blank content unless it sent them, they mention it or they are DMs
    (``messages.as_seen_by_bot``). ``rate_limits``: Discord's HTTP rate limits (``sandbox.ratelimits``): True (the
    default) applies the default ``RateLimitSettings``, False none, or the settings to apply;
    ``Sandbox.rate_limits`` is the limiter (its ``settings`` can be changed at any time; its ``served_429`` and
    ``hits`` are the 429s served). ``wire``: a ``WireLog`` that records every REST exchange and gateway dispatch
    (also settable later, ``sandbox.wire = WireLog()``; None records nothing). Raises SandboxError when
    ``record_dir`` cannot be a folder.

    ``state_path``: a JSON file (``sandbox.state``) where the sandbox keeps its state across runs, as the playground
    does (``DATA_DIR/sandbox.json``): ``start()`` loads it (unless ``fresh``), every change is written within
    ``STATE_SAVE_DELAY_S`` and ``stop()`` writes it a last time. A file that cannot be used is renamed aside and the
    sandbox starts empty, saying why in ``state_problem``. None (the default, for tests and benchmarks): the sandbox
    starts empty and writes nothing.
    """

    def __init__(
        self,
        *,
        interaction_deadline_s: float = 3.0,
        heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS,
        dave: bool = True,
        record_dir: str | Path | None = None,
        message_content_intent: bool = True,
        rate_limits: RateLimitSettings | bool = True,
        state_path: str | Path | None = None,
        fresh: bool = False,
        wire: WireLog | None = None,
    ):
        self.interaction_deadline_s = interaction_deadline_s
        self.message_content_intent = message_content_intent
        if isinstance(rate_limits, bool):
            rate_limits = RateLimitSettings(enabled=rate_limits)
        self.rate_limits = RateLimiter(rate_limits)
        self.wire = wire
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self.dave = dave
        self.record_dir = Path(record_dir).expanduser() if record_dir is not None else None
        if self.record_dir is not None:
            try:
                self.record_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SandboxError(f"cannot record into {str(self.record_dir)!r}: {exc.strerror or exc}") from None
        bot_id = base64.urlsafe_b64encode(str(guild.BOT_USER_ID).encode()).decode().rstrip("=")
        self.bot_token = f"{bot_id}.{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(27)}"
        self.guild_id = guild.GUILD_ID
        self.bot_user_id = guild.BOT_USER_ID
        self.application_id = guild.APPLICATION_ID
        self.bus = EventBus()
        self.errors: list[Event] = []
        self.sync_count = 0
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self._command_ids: dict[tuple[int | None, str, int], int] = {}
        self.messages: OrderedDict[int, StoredMessage] = OrderedDict()
        self.interactions: OrderedDict[int, InteractionRecord] = OrderedDict()
        self.attachments: OrderedDict[int, Upload] = OrderedDict()
        self.threads: OrderedDict[int, SimThread] = OrderedDict()
        self._attachment_bytes = 0
        self._snowflake_seq = itertools.count()
        self._last_snowflake = 0
        self.state_path = Path(state_path).expanduser() if state_path is not None else None
        self.fresh = fresh
        self.state_problem: str | None = None  # why the state file could not be used (one line), after start()
        self.state_summary: str | None = None  # what came back from it, after start()
        self._state_saving = False  # True once the state file is loaded (or may be overwritten)
        self._save_timer: asyncio.Task[None] | None = None
        self._save_seq = 0
        self._written_seq = 0
        self._write_lock = threading.Lock()  # writes run in threads: the newest snapshot always wins
        self._save_failed = False
        self._runner: web.AppRunner | None = None
        self._gateway: Gateway | None = None
        self._voice: SandboxVoice | None = None
        self._ready = asyncio.Event()
        self._t0 = 0.0
        self.port = 0
        self._saved_route: tuple[str, yarl.URL] | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind 127.0.0.1 on a random port and serve; raises OSError if the socket cannot be bound."""
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        if self.state_path is not None:
            await self._load_state()
        api = RestApi(self)
        app = web.Application(client_max_size=4 * UPLOAD_LIMIT_BYTES, middlewares=[api.middleware])
        app.router.add_get("/gateway", self._gateway_handler)
        api.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        voice_hooks = VoiceHooks(
            dispatch=self._dispatch, publish=self.publish, record_error=self.record_error,
            gateway_session_id=self._gateway_session_id, t_ms_at=self._t_ms_at,
        )  # fmt: skip
        self._voice = SandboxVoice(voice_hooks, dave=self.dave, record_dir=self.record_dir)
        await self._voice.start()
        hooks = GatewayHooks(
            on_ready=self._on_gateway_ready,
            on_resumed=self._on_gateway_resumed,
            on_new_session=self._voice.reset_bot,
            on_voice_state_update=self._voice.on_bot_op4,
            voice_states=self._voice.guild_create_states,
            threads=lambda: [thread_payload(t) for t in self.threads.values() if not (t.archived or t.deleted)],
            on_dispatch=lambda payload: self.wire.dispatches.append(payload) if self.wire is not None else None,
        )
        self._gateway = Gateway(
            token=self.bot_token, url=self.gateway_url, hooks=hooks, heartbeat_interval_ms=self._heartbeat_interval_ms,
            granted_intents=guild.granted_intents(message_content=self.message_content_intent),
            application_flags=guild.application_flags(message_content=self.message_content_intent),
        )
        _log.info(
            "sandbox Discord listening on %s (voice: wss://%s, UDP %s, DAVE %s)",
            self.base_url, self._voice.gateway.endpoint, self._voice.udp.port, "on" if self.dave else "off",
        )  # fmt: skip

    async def __aenter__(self) -> Sandbox:
        """``start()`` then ``install()``; a sandbox that fails to start is stopped again before the error rises."""
        try:
            await self.start()
            self.install()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """``uninstall()`` then ``stop()``."""
        self.uninstall()
        await self.stop()

    async def stop(self) -> None:
        """Close the voice server (websockets, UDP, open spurts), the gateway sockets and the HTTP server, then
        (with a ``state_path``) write the state a last time; safe to call twice."""
        if self._voice is not None:
            await self._voice.stop()
        if self._gateway is not None:
            await self._gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.uninstall()
        if self._save_timer is not None:
            self._save_timer.cancel()
            await asyncio.gather(self._save_timer, return_exceptions=True)
            self._save_timer = None
        if self._state_saving:
            await self.save_state()
            self._state_saving = False

    # ----------------------------------------------------------------- state across runs

    async def _load_state(self) -> None:
        """Load ``state_path`` (unless ``fresh``); a file that cannot be used is renamed aside (``state_problem``
        says so) and the sandbox starts empty. Saving is enabled unless such a file could not be moved away."""
        path = self.state_path
        assert path is not None
        if self.fresh:
            _log.info("local Discord starts empty (fresh); %s will be overwritten", path)
            self._state_saving = True
            return
        try:
            data = await asyncio.to_thread(read_state, path)
            restored = restore(data, loop_time=asyncio.get_running_loop().time()) if data is not None else None
        except StateUnreadable as exc:
            try:
                aside = await asyncio.to_thread(set_aside, path)
            except OSError as err:
                self.state_problem = (f"the local Discord's saved state {path} cannot be used: {exc}; it could not "
                                      f"be renamed aside either ({err.strerror or err}), so the local Discord starts "
                                      "empty and will not save over it")
                return
            self.state_problem = (f"the local Discord's saved state {path} cannot be used: {exc}; it was renamed to "
                                  f"{aside.name} and the local Discord starts empty")
            self._state_saving = True
            return
        if restored is not None:
            self.adopt_state(restored)
            self.state_summary = restored.summary()
            _log.info("local Discord restored from %s: %s", path, self.state_summary)
        self._state_saving = True

    def adopt_state(self, restored: RestoredState) -> None:
        """Take the stores of a restored state (``sandbox.state.restore``) in place of the current ones; call it
        before the bot connects."""
        self.global_commands, self.guild_commands = restored.global_commands, restored.guild_commands
        self._command_ids = restored.command_ids
        self.threads, self.messages, self.interactions = restored.threads, restored.messages, restored.interactions
        self._last_snowflake = max(self._last_snowflake, restored.last_snowflake)

    async def save_state(self) -> bool:
        """Write the state to ``state_path`` now (atomically, in a thread); returns False when there is no state
        file or it could not be written (logged once until a write succeeds again)."""
        if self.state_path is None or not self._state_saving:
            return False
        self._save_seq += 1
        seq, state = self._save_seq, snapshot(self, loop_time=asyncio.get_running_loop().time())
        try:
            await asyncio.to_thread(self._write_state, seq, state)
        except (OSError, TypeError, ValueError) as exc:
            if not self._save_failed:
                _log.warning("could not save the local Discord's state to %s: %s", self.state_path, exc)
            self._save_failed = True
            return False
        self._save_failed = False
        return True

    def _write_state(self, seq: int, state: dict[str, Any]) -> None:
        """Write snapshot number ``seq`` unless a newer one is already on disk (blocking, in a thread)."""
        assert self.state_path is not None
        with self._write_lock:
            if seq > self._written_seq:
                write_state(self.state_path, state)
                self._written_seq = seq

    def _state_changed(self) -> None:
        """Something changed: with a state file, have it written within ``STATE_SAVE_DELAY_S``."""
        if not self._state_saving or self._save_timer is not None:
            return
        self._save_timer = asyncio.get_running_loop().create_task(self._save_later(), name="sandbox-state-save")

    async def _save_later(self) -> None:
        await asyncio.sleep(STATE_SAVE_DELAY_S)
        self._save_timer = None  # a change from now on schedules the next write
        await self.save_state()

    def install(self) -> None:
        """Point discord.py at the sandbox: ``Route.BASE`` (REST, webhooks, interaction callbacks) and
        ``DiscordWebSocket.DEFAULT_GATEWAY`` (a non-sharded Client never asks GET /gateway/bot)."""
        if self._saved_route is None:
            self._saved_route = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)

    def uninstall(self) -> None:
        """Restore what ``install`` changed; no-op if not installed."""
        if self._saved_route is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved_route
            self._saved_route = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """REST base, e.g. 'http://127.0.0.1:PORT/api/v10'."""
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            raise SandboxError("the sandbox is not started; use it as `async with Sandbox() as sb:`")
        return self._gateway

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """Client-side TLS context trusting (only) the sandbox's CA, for the wss:// voice gateway."""
        tls = self.voice.tls
        if tls is None:
            raise SandboxError("the sandbox is not started; use it as `async with Sandbox() as sb:`")
        return tls.client_context

    def client_connector(self) -> aiohttp.TCPConnector:
        """A connector for ``discord.Client(connector=...)`` that trusts the sandbox's voice certificate (call it
        inside the running loop; the client closes it). That is discord.py's documented hook for its HTTP and
        websocket connections, so nothing else about TLS changes."""
        return aiohttp.TCPConnector(ssl=self.ssl_context)

    @property
    def voice(self) -> SandboxVoice:
        """The voice part (states, voice gateway, UDP, recorder); see ``sandbox.voice``."""
        if self._voice is None:
            raise SandboxError("the sandbox is not started; use it as `async with Sandbox() as sb:`")
        return self._voice

    def _gateway_session_id(self) -> str | None:
        return self._gateway.session.session_id if self._gateway and self._gateway.session else None

    async def _gateway_handler(self, request: web.Request) -> web.StreamResponse:
        return await self.gateway.handle(request)

    async def wait_ready(self, timeout: float = 10) -> None:  # noqa: ASYNC109 - public API name
        """Wait until the bot IDENTIFYed and got GUILD_CREATE; raises TimeoutError."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    async def _on_gateway_ready(self) -> None:
        self._ready.set()
        self.publish({"event": "ready", "guild_id": guild.GUILD_ID})

    async def _on_gateway_resumed(self) -> None:
        self.publish({"event": "resumed"})

    async def send_reconnect(self, *, wait: bool = True, timeout: float = 10) -> None:  # noqa: ASYNC109
        """Send RECONNECT (op 7); with ``wait``, return once the bot has RESUMEd (raises TimeoutError)."""
        await self.gateway.send_reconnect()
        if wait:
            async with asyncio.timeout(timeout):
                await self.gateway.resumed.wait()

    # ----------------------------------------------------------------- events

    def t_ms(self) -> int:
        return int((asyncio.get_running_loop().time() - self._t0) * 1000)

    def _t_ms_at(self, loop_time: float) -> int:
        """``t_ms`` of an instant given in the loop's clock (``loop.time()`` / ``time.monotonic()`` seconds)."""
        return int((loop_time - self._t0) * 1000)

    def publish(self, event: Event) -> Event:
        event["t_ms"] = self.t_ms()
        self._state_changed()  # what members see changed; so did the state, or part of it
        if event["event"] == "error":
            self.errors.append(event)
        self.bus.publish(event)
        return event

    def record_error(self, route: str, code: int, message: str) -> None:
        """Publish an error event: the bot made a request Discord would reject."""
        _log.warning("sandbox rejected %s: %s (code %s)", route, message, code)
        self.publish({"event": "error", "route": route, "code": code, "message": message})

    def subscribe(self) -> asyncio.Queue[Event]:
        """A queue receiving every event from now on; ``unsubscribe`` it when done."""
        return self.bus.subscribe()

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self.bus.unsubscribe(queue)

    @property
    def event_position(self) -> int:
        """Position of the next event; pass as ``since=`` to ``wait_for`` to include events from here on."""
        return self.bus.position

    async def wait_for(
        self,
        predicate: Callable[[Event], bool],
        timeout: float = 10,  # noqa: ASYNC109 - public API name
        *,
        since: InvokeHandle | int | None = None,
    ) -> Event:
        """The next event matching ``predicate`` (from now, or from ``since``: a position or an InvokeHandle,
        which avoids missing an event that came before this call); raises TimeoutError after ``timeout`` s."""
        position = since.event_index if isinstance(since, InvokeHandle) else since
        return await self.bus.wait_for(predicate, timeout, position)

    def events(self, since: InvokeHandle | int = 0) -> list[Event]:
        """Events still in the (bounded) history from position ``since``."""
        return self.bus.since(since.event_index if isinstance(since, InvokeHandle) else since)

    # ----------------------------------------------------------------- ids, commands

    def snowflake(self) -> int:
        """A new snowflake with the current time in it, greater than every id this sandbox (or the state it
        loaded) gave before, even if the clock went back."""
        ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000) - DISCORD_EPOCH_MS
        new = max((ms << 22) | (1 << 17) | (next(self._snowflake_seq) & 0xFFF), self._last_snowflake + 1)
        self._last_snowflake = new
        return new

    @property
    def last_snowflake(self) -> int:
        """The greatest id given so far (0: none)."""
        return self._last_snowflake

    @property
    def command_ids(self) -> dict[tuple[int | None, str, int], int]:
        """Application command ids by (guild id or None, name, type): stable across syncs (and saved runs)."""
        return self._command_ids

    @property
    def commands(self) -> list[dict[str, Any]]:
        """Registered application commands (global, then guild), as stored after the bot's PUTs."""
        return self.global_commands + [c for cmds in self.guild_commands.values() for c in cmds]

    def store_commands(self, guild_id: int | None, payload: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replace the global (``guild_id`` None) or guild command set; returns the commands as Discord does
        (``guild.command_payload``): ids stay stable per (name, type), each PUT gives a new ``version``."""
        stored = []
        for cmd in payload:
            key = (guild_id, cmd["name"], int(cmd.get("type", 1)))
            cmd_id = self._command_ids.setdefault(key, self.snowflake())
            stored.append(guild.command_payload(cmd, command_id=cmd_id, application_id=self.application_id,
                                                version=self.snowflake(), guild_id=guild_id))
        if guild_id is None:
            self.global_commands = stored
        else:
            self.guild_commands[guild_id] = stored
        self.sync_count += 1
        self._state_changed()
        return stored

    def find_command(self, name: str) -> dict[str, Any]:
        """The registered chat-input command ``name`` (a guild command wins over a global one)."""
        for cmd in self.guild_commands.get(guild.GUILD_ID, []) + self.global_commands:
            if cmd["name"] == name and int(cmd.get("type", 1)) == 1:
                return cmd
        known = sorted({c["name"] for c in self.commands if int(c.get("type", 1)) == 1})
        raise SandboxError(f"unknown command /{name}; registered: {', '.join('/' + k for k in known) or 'none'}")

    # ----------------------------------------------------------------- member side

    async def invoke(
        self,
        user: str,
        command: str,
        options: Mapping[str, Any] | None = None,
        *,
        channel: str = "general",
        validate: bool = True,
    ) -> InvokeHandle:
        """Member ``user`` runs slash command ``command`` ("ask", "docs reload", "/docs add") in ``channel``.

        ``options`` maps option names to values: str/int/float/bool (strings are converted per the schema, so
        "true" and "3" work), a member/channel/role name for those types, and for attachment options a local
        path (str or Path) or ``(filename, bytes)``, uploaded and served by the sandbox. ``validate=False``
        skips required/choices/range/length checks, like a modified client would.
        Raises SandboxError for unknown member/channel/command/option or a bad value, and when no bot has
        connected. As with the Discord client, ``default_member_permissions`` is not enforced here, so the
        bot's own runtime check is what decides.
        """
        member, chan, path, cmd = self._command_target(user, channel, command)
        resolved: dict[str, dict[str, Any]] = {}
        opts = await build_options(cmd, path[1:], dict(options or {}), validate, resolved, self.store_upload, chan)
        data: dict[str, Any] = {"id": cmd["id"], "name": cmd["name"], "type": 1, "options": opts}
        if "guild_id" in cmd:
            data["guild_id"] = cmd["guild_id"]
        if resolved:
            data["resolved"] = resolved
        record = self._new_interaction(member, chan, " ".join(path))
        shown = {k: (str(v) if isinstance(v, Path | tuple | bytes) else v) for k, v in (options or {}).items()}
        event = {"event": "command", "user": member.name, "channel": chan.name, "command": record.command_name}
        return await self._send_interaction(record, data, {**event, "options": shown})

    def _command_target(
        self, user: str, channel: str, command: str
    ) -> tuple[SimUser, SimChannel, list[str], dict[str, Any]]:
        """(member, channel, command path words, registered command) for ``user`` using ``command`` in ``channel``;
        SandboxError for an unknown member, channel or command, or an empty name."""
        path = command.strip().lstrip("/").split()
        member, chan = self._member(user), self._channel(channel)
        if not path:
            raise SandboxError("empty command name")
        return member, chan, path, self.find_command(path[0])

    async def autocomplete(
        self,
        user: str,
        command: str,
        options: Mapping[str, Any] | None = None,
        *,
        focused: str,
        channel: str = "general",
        timeout: float = 5.0,  # noqa: ASYNC109 - public API name
    ) -> list[dict[str, Any]]:
        """Member ``user`` types in option ``focused`` of ``command`` ("settings model") in ``channel``: the bot
        gets an APPLICATION_COMMAND_AUTOCOMPLETE interaction (type 4) with the options filled so far (``options``,
        not checked, as while typing; ``options[focused]`` is the text typed, "" when absent) and the focused
        one marked; returns the choices it answers with (``[{"name", "value"}, ...]``, response type 8).

        Raises SandboxError for an unknown member/channel/command/option or an option without autocomplete, and
        TimeoutError when the bot does not answer within ``timeout`` s (Discord would show nothing after 3 s).
        """
        member, chan, path, cmd = self._command_target(user, channel, command)
        values = dict(options or {})
        typed = str(values.pop(focused, ""))
        opts = await build_options(cmd, path[1:], values, False, {}, self.store_upload, chan)
        mark_focused(opts, cmd, focused, typed)
        data: dict[str, Any] = {"id": cmd["id"], "name": cmd["name"], "type": 1, "options": opts}
        if "guild_id" in cmd:
            data["guild_id"] = cmd["guild_id"]
        record = self._new_interaction(member, chan, " ".join(path), kind=4)
        event = {"event": "autocomplete", "user": member.name, "channel": chan.name, "command": record.command_name,
                 "option": focused, "typed": typed}
        handle = await self._send_interaction(record, data, event)
        answer = await self.wait_for(
            lambda e: e["event"] == "choices" and e["interaction_id"] == record.id, timeout, since=handle)
        return answer["choices"]

    async def click(
        self, user: str, message_id: int, custom_id: str, *, values: list[str] | None = None
    ) -> InvokeHandle:
        """Member ``user`` uses the component ``custom_id`` (a button, or a select with ``values``) of the
        bot's message ``message_id``. Raises SandboxError if the message or component does not exist."""
        member = self._member(user)
        stored = self.messages.get(int(message_id))
        if stored is None or stored.deleted:
            raise SandboxError(f"no message {message_id}")
        component = find_component(stored.payload.get("components") or [], custom_id)
        if component is None:
            raise SandboxError(f"message {message_id} has no component with custom_id {custom_id!r}")
        # A person cannot click before the message is on screen; the bot may not have registered the view
        # yet in the instant between our MESSAGE_CREATE and its HTTP response arriving.
        delay = CLICK_MIN_DELAY_S - (asyncio.get_running_loop().time() - stored.shown_at)
        if delay > 0:
            await asyncio.sleep(delay)
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if values is not None:
            data["values"] = list(values)
        record = self._new_interaction(member, stored.channel, custom_id, kind=3, message_id=stored.id)
        event = {"event": "click", "user": member.name, "channel": stored.channel.name, "custom_id": custom_id}
        return await self._send_interaction(record, data, {**event, "message_id": stored.id}, message=stored.payload)

    def _new_interaction(
        self, member: SimUser, chan: SimChannel, name: str, *, kind: int = 2, message_id: int | None = None
    ) -> InteractionRecord:
        record = InteractionRecord(
            id=self.snowflake(),
            token="aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48),
            user=member,
            channel=chan,
            command_name=name,
            created=0.0,
            kind=kind,
            component_message_id=message_id,
        )
        self._remember(self.interactions, record.id, record, MAX_INTERACTIONS)
        return record

    async def _send_interaction(
        self, record: InteractionRecord, data: dict[str, Any], event: Event, message: dict[str, Any] | None = None
    ) -> InvokeHandle:
        """Publish ``event`` (command/click), then dispatch INTERACTION_CREATE; the deadline starts now."""
        payload = interaction_payload(record, data, self.application_id)
        if message is not None:
            payload["message"] = message
        position = self.bus.position
        self.publish({**event, "interaction_id": record.id})
        record.created = asyncio.get_running_loop().time()
        await self._dispatch("INTERACTION_CREATE", payload)
        return InvokeHandle(
            record.id, record.token, record.command_name, record.user.name, record.channel.name, position
        )

    async def send_message(
        self,
        user: str,
        channel: str,
        content: str,
        *,
        mention_bot: bool = False,
        reply_to: int | Mapping[str, Any] | None = None,
        attachments: Sequence[str | Path | tuple[str, bytes] | Upload] = (),
    ) -> dict[str, Any]:
        """Member ``user`` posts ``content`` in ``channel`` (a channel or thread name); ``mention_bot`` prefixes
        ``<@bot>``; ``reply_to`` (a message id or a message dict) makes it a reply, which pings the replied author as
        the client does; ``attachments`` (local paths, ``(filename, bytes)`` or Uploads) are uploaded with it, each up
        to the upload limit. Posting in an archived thread unarchives it first (THREAD_UPDATE), as Discord does for
        a member who may send there. Returns the message as ``channel_messages`` shows it. Raises SandboxError for
        unknown names/ids, a locked thread or an unreadable or too large file."""
        member = self._member(user)
        chan = self._channel(channel)
        uploads = []
        for raw in attachments:
            try:
                upload = await read_upload(raw)
            except OSError as exc:
                raise SandboxError(f"cannot attach {raw!r}: {exc.strerror or exc}") from None
            if len(upload.data) > UPLOAD_LIMIT_BYTES:
                raise SandboxError(f"{upload.filename} is over the {UPLOAD_LIMIT_BYTES} byte upload limit")
            uploads.append(upload)
        await self.reopen_thread(chan)
        if mention_bot:
            content = f"<@{self.bot_user_id}> {content}"
        reference = None
        if reply_to is not None:
            ref_id = int(reply_to["id"] if isinstance(reply_to, Mapping) else reply_to)
            reference = self.messages.get(ref_id)
            if reference is None or reference.deleted or reference.ephemeral:
                raise SandboxError(f"cannot reply to message {ref_id}: it does not exist or is not visible")
        stored = await self.create_message(member, chan, {"content": content},
                                           [self.store_upload(chan, u) for u in uploads], reference=reference)
        return self.message_view(stored)

    def channel_messages(self, channel: str) -> list[dict[str, Any]]:
        """Messages of ``channel`` as currently visible (after edits and deletes, thinking placeholders left
        out), oldest first: dicts with id, channel, author, content, embeds, attachments, ephemeral,
        interaction_id, reference_id, edited."""
        chan = self._channel(channel)
        return [
            self.message_view(m)
            for m in self.messages.values()
            if m.channel.id == chan.id and not m.deleted and not m.loading
        ]

    def message_view(self, stored: StoredMessage) -> dict[str, Any]:
        """``stored`` as ``channel_messages`` shows it."""
        return messages.message_view(stored)

    def _member(self, name: str) -> SimUser:
        try:
            return guild.member_by_name(name)
        except UnknownName as exc:
            raise SandboxError(str(exc)) from None

    def _channel(self, name: str) -> SimChannel:
        """The channel called ``name``, else the newest thread of that name that was not deleted."""
        try:
            return guild.channel_by_name(name)
        except UnknownName as exc:
            thread = self.thread_named(name)
            if thread is None:
                raise SandboxError(str(exc)) from None
            return thread.channel

    # ----------------------------------------------------------------- threads

    def find_channel(self, channel_id: int) -> SimChannel | None:
        """The guild channel or the (not deleted) thread with this id, or None."""
        thread = self.threads.get(channel_id)
        if thread is not None:
            return None if thread.deleted else thread.channel
        return guild.channel_by_id(channel_id)

    def thread_named(self, name: str) -> SimThread | None:
        """The newest thread called ``name`` (case-insensitive, a leading ``#`` ignored) not deleted, or None."""
        key = name.strip().lstrip("#").lower()
        return next((t for t in reversed(self.threads.values()) if t.name.lower() == key and not t.deleted), None)

    def _thread(self, name: str) -> SimThread:
        thread = self.thread_named(name)
        if thread is None:
            known = ", ".join(t.name for t in self.threads.values() if not t.deleted) or "none"
            raise SandboxError(f"no thread named {name!r}; threads: {known}")
        return thread

    async def create_thread(
        self, creator: SimUser, parent: SimChannel, name: str, *, message: StoredMessage | None = None,
        kind: int = PUBLIC_THREAD, auto_archive_duration: int = 1440,
    ) -> SimThread:
        """A new thread in text channel ``parent``, named ``name`` (1..100 characters, checked by the caller),
        from ``message`` (the thread takes its id, as on Discord) or without one; publishes a "thread" event
        (action "create") and dispatches THREAD_CREATE (``newly_created``)."""
        thread_id = message.id if message is not None else self.snowflake()
        thread = SimThread(thread_channel(thread_id, name, parent, kind), creator,
                           auto_archive_duration=auto_archive_duration)
        self._remember(self.threads, thread_id, thread, None)
        self.publish({"event": "thread", "action": "create", "thread": name, "thread_id": thread_id,
                      "parent": parent.name, "by": creator.name, "message_id": message.id if message else None})
        await self._dispatch("THREAD_CREATE", thread_payload(thread, newly_created=True))
        return thread

    async def archive_thread(self, name: str, *, archived: bool = True, locked: bool = False) -> None:
        """A moderator (or Discord's inactivity timer) archives (or unarchives) the thread ``name``: THREAD_UPDATE
        and a "thread" event (action "archive" / "unarchive"). Raises SandboxError for an unknown thread."""
        thread = self._thread(name)
        await self._set_archived(thread, archived, locked=locked)

    async def _set_archived(self, thread: SimThread, archived: bool, *, locked: bool = False) -> None:
        thread.archived, thread.locked = archived, locked and archived
        thread.archive_timestamp = dt.datetime.now(dt.UTC).isoformat()
        self.publish({"event": "thread", "action": "archive" if archived else "unarchive", "thread": thread.name,
                      "thread_id": thread.id, "parent": thread.parent.name, "locked": thread.locked})
        await self._dispatch("THREAD_UPDATE", thread_payload(thread))

    async def reopen_thread(self, channel: SimChannel) -> None:
        """Before a message is sent in ``channel``: an archived thread is unarchived, as Discord does on send;
        a locked one refuses (SandboxError; REST turns it into 403 50083 itself)."""
        thread = self.threads.get(channel.id)
        if thread is None or not thread.archived:
            return
        if thread.locked:
            raise SandboxError(f"thread {thread.name!r} is locked")
        await self._set_archived(thread, False)

    async def delete_thread(self, name: str) -> None:
        """Delete the thread ``name`` and its messages: THREAD_DELETE and a "thread" event (action "delete")."""
        thread = self._thread(name)
        thread.deleted = True
        for stored in self.messages.values():
            if stored.channel.id == thread.id:
                stored.deleted = True
        self.publish({"event": "thread", "action": "delete", "thread": thread.name, "thread_id": thread.id,
                      "parent": thread.parent.name})
        await self._dispatch("THREAD_DELETE", thread_delete_payload(thread))

    def thread_name_error(self, name: Any) -> str | None:
        """Why ``name`` cannot name a thread (Discord: 1..100 characters), or None."""
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= THREAD_NAME_MAX:
            return f"Must be between 1 and {THREAD_NAME_MAX} in length."
        return None

    # ----------------------------------------------------------------- voice

    async def join_voice(self, member: str, channel: str = "Lounge") -> None:
        """Member ``member`` joins (or moves to) voice ``channel``: the bot gets VOICE_STATE_UPDATE (and, when its
        voice session is in that channel, CLIENTS_CONNECT); a voice_state event is published. Permissions are not
        checked, so members can be put in Quiet or Private. Raises SandboxError for an unknown member/channel or
        a text channel."""
        try:
            await self.voice.join(self._member(member), self._channel(channel))
        except VoiceRefused as exc:
            raise SandboxError(str(exc)) from None

    async def leave_voice(self, member: str) -> None:
        """Member ``member`` leaves voice (no-op when not in voice); raises SandboxError for an unknown member."""
        await self.voice.leave(self._member(member))

    @property
    def voice_states(self) -> dict[str, str]:
        """Who is in voice now: member or bot name ("Assistant") -> voice channel name."""
        return self.voice.names()

    async def disconnect_bot_voice(self) -> None:
        """Disconnect the bot from voice as an admin would: VOICE_STATE_UPDATE with channel_id null, and its voice
        websocket closed with 4014. Raises SandboxError when the bot is not in voice."""
        try:
            await self.voice.disconnect_bot()
        except VoiceRefused as exc:
            raise SandboxError(str(exc)) from None

    async def move_bot_voice(self, channel: str) -> None:
        """Drag the bot to voice ``channel`` as an admin would: VOICE_STATE_UPDATE, VOICE_SERVER_UPDATE, its voice
        websocket closed with 4014 (discord.py reconnects). Raises SandboxError when the bot is not in voice,
        the channel is not a voice channel or the bot lacks Connect there."""
        try:
            await self.voice.move_bot(self._channel(channel))
        except VoiceRefused as exc:
            raise SandboxError(str(exc)) from None

    def voice_spurts(self, member: str = guild.BOT_NAME) -> list[dict[str, Any]]:
        """The voice_audio events (talk spurts) received from ``member`` so far, oldest first (last 1000)."""
        return self.voice.recorder.spurts(self._voice_name(member))

    def voice_totals(self, member: str = guild.BOT_NAME) -> dict[str, Any]:
        """Everything received from ``member``, the open spurt included: ``{"seconds": float, "frames": int,
        "rms": float (0..1), "gap_p99_ms": float, "spurts": int, "silence_frames": int}``."""
        return self.voice.recorder.summary(self._voice_name(member))

    async def speak(self, member: str, audio: str | Path | bytes, *, channel: str | None = None) -> Event:
        """Member ``member`` speaks ``audio`` into their voice channel, as Discord relays it to the bot.

        audio: a path to an audio file (WAV or anything soundfile reads; any rate and channel count, resampled to
            48 kHz stereo), or bytes of raw 48 kHz stereo s16le PCM; at most 600 s (``voice.speech.MAX_SPEECH_S``).
        channel: a voice channel the member joins (or moves to) first, as ``join_voice`` does; None: where they are.
        The bot's voice session gets SPEAKING (op 5: user_id, ssrc) the first time this member's SSRC reaches it,
        then one Opus packet per 20 ms of speech, paced in real time; pauses longer than 100 ms (frames under
        -50 dBFS, see ``sandbox.voice.speech``) are not sent at all, so a pause splits the audio into talk
        spurts with no packets in between. Returns once the last packet is sent, with the ``member_speech`` event
        it published. Raises SandboxError for an unknown member/channel, unreadable or too long audio, a member
        not in voice, without Speak there or already speaking, or a bot without a ready voice connection in that
        channel. A self-deafened bot receives nothing (the frames are counted in ``frames_dropped``).
        """
        user = self._member(member)
        if channel is not None:
            await self.join_voice(user.name, channel)
        try:
            self.voice.check_can_speak(user)  # fail fast, before reading and encoding the audio
            plan = await asyncio.to_thread(_prepare_speech, audio)
            result, where = await self.voice.speak(user, plan)
        except (VoiceRefused, SpeechError) as exc:
            raise SandboxError(str(exc)) from None
        except OpusUnavailable as exc:
            raise SandboxError(exc.user_message) from None
        if result.stopped:
            raise SandboxError(f"the sandbox stopped while {user.name} was speaking")
        return self.publish(
            {
                "event": "member_speech",
                "member": user.name,
                "channel": where.name,
                "seconds": round(plan.seconds, 3),
                "frames_sent": result.frames_sent,
                "spurts": plan.spurts,
                "frames_dropped": result.frames_dropped,
                "corrupted": result.corrupted,
            }
        )

    def corrupt_next_frames(self, member: str, frames: int) -> None:
        """The next ``frames`` packets ``member`` sends (in this or later ``speak`` calls) carry a damaged payload
        inside valid transport encryption: with DAVE on, a DAVE frame that fails to decrypt (its ciphertext is
        altered); without, an Opus frame no decoder accepts. Raises SandboxError for an unknown member or
        ``frames`` < 1."""
        user = self._member(member)
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise SandboxError(f"corrupt_next_frames needs a positive number of frames, got {frames!r}")
        self.voice.speakers.corrupt_next(user.id, frames)

    def _voice_name(self, name: str) -> str:
        if name.strip().lstrip("@").lower() == guild.BOT_NAME.lower():
            return guild.BOT_NAME
        return self._member(name).name

    # ----------------------------------------------------------------- messages (both sides)

    def store_upload(self, channel: SimChannel, upload: Upload) -> dict[str, Any]:
        """Keep ``upload`` and return its Discord attachment object, served at ``/attachments/...``."""
        att_id = self.snowflake()
        self._remember(self.attachments, att_id, upload, None)
        self._attachment_bytes += len(upload.data)
        while self._attachment_bytes > MAX_ATTACHMENT_BYTES and len(self.attachments) > 1:
            _, old = self.attachments.popitem(last=False)
            self._attachment_bytes -= len(old.data)
        return messages.attachment_payload(att_id, channel, upload, self.base_url)

    async def create_message(
        self,
        author: SimUser,
        channel: SimChannel,
        data: Mapping[str, Any],
        attachments: list[dict[str, Any]],
        *,
        reference: StoredMessage | None = None,
        interaction: InteractionRecord | None = None,
        ephemeral: bool = False,
        loading: bool = False,
        message_id: int | None = None,
    ) -> StoredMessage:
        """Store a new message (already validated), publish its event and dispatch MESSAGE_CREATE.

        ``data`` holds the body fields (content, embeds, components, flags, allowed_mentions, tts). A ``loading``
        message (a deferred interaction response, flag 128) is created and dispatched at once, as Discord does, but
        its "message" event waits until it is filled (``edit_message``): members see "is thinking..." until then.
        """
        msg_id = message_id or self.snowflake()
        payload = messages.message_payload(
            msg_id, author, channel, data, attachments, application_id=self.application_id,
            reference=reference, interaction=interaction, ephemeral=ephemeral, loading=loading,
        )  # fmt: skip
        stored = StoredMessage(
            payload,
            author,
            channel,
            ephemeral=ephemeral,
            interaction_id=interaction.id if interaction else None,
            loading=loading,
        )
        stored.shown_at = asyncio.get_running_loop().time()
        self._remember(self.messages, msg_id, stored, MAX_MESSAGES)
        if (thread := self.threads.get(channel.id)) is not None:
            thread.message_count += 1
        if not loading:
            self.publish(messages.message_event("message", stored))
        if not ephemeral:  # a deferred response's "thinking" message exists from the defer on, as on Discord
            await self._dispatch("MESSAGE_CREATE", self._gateway_message(stored))
        return stored

    async def edit_message(
        self, stored: StoredMessage, data: Mapping[str, Any], attachments: list[dict[str, Any]] | None
    ) -> None:
        """Apply an edit (already validated): content/embeds/components/flags replaced where given.

        Filling a deferred ("thinking") original response publishes "message" (what members see first) and
        dispatches MESSAGE_UPDATE without ``edited_timestamp``; any other edit publishes "edit" and dispatches
        MESSAGE_UPDATE.
        """
        p = stored.payload
        for key in ("content", "embeds", "components"):
            if key in data:
                p[key] = data[key] if data[key] is not None else ("" if key == "content" else [])
        if "components" in data:
            p["components"] = messages.with_component_ids(p["components"])
        if attachments is not None:
            p["attachments"] = attachments
        stored.shown_at = asyncio.get_running_loop().time()
        if "allowed_mentions" in data or "content" in data:
            p["mentions"] = messages.mentions(p["content"], data.get("allowed_mentions"), None)
        if stored.loading:
            stored.loading = False
            p["flags"] = int(p["flags"]) & ~128
            self.publish(messages.message_event("message", stored))
            if not stored.ephemeral:
                await self._dispatch("MESSAGE_UPDATE", self._gateway_message(stored))
            return
        p["edited_timestamp"] = dt.datetime.now(dt.UTC).isoformat()
        self.publish(messages.message_event("edit", stored))
        if not stored.ephemeral:
            await self._dispatch("MESSAGE_UPDATE", self._gateway_message(stored))

    async def delete_message(self, stored: StoredMessage) -> None:
        """Mark deleted, publish "delete", dispatch MESSAGE_DELETE (non-ephemeral only)."""
        stored.deleted = True
        self.publish(messages.message_event("delete", stored))
        if not stored.ephemeral:
            data = {"id": str(stored.id), "channel_id": str(stored.channel.id), "guild_id": str(guild.GUILD_ID)}
            await self._dispatch("MESSAGE_DELETE", data)

    def rest_message(self, stored: StoredMessage) -> dict[str, Any]:
        """``stored`` as REST returns it to the bot: blanked per ``messages.as_seen_by_bot`` when the application
        lacks the Message Content intent (REST follows the application's grant; the gateway, the session's
        intents)."""
        return messages.as_seen_by_bot(stored.payload, stored.channel, content_intent=self.message_content_intent,
                                       bot_user_id=self.bot_user_id)

    def _gateway_message(self, stored: StoredMessage) -> dict[str, Any]:
        return messages.gateway_message(stored, self.gateway.intents, self.bot_user_id)

    async def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        gateway = self.gateway
        if event.startswith("MESSAGE_") and not gateway.intents & guild.INTENT_GUILD_MESSAGES:
            return  # no GUILD_MESSAGES intent: Discord sends no guild message events at all
        if event == "VOICE_STATE_UPDATE" and not gateway.intents & guild.INTENT_GUILD_VOICE_STATES:
            return
        try:
            await gateway.dispatch(event, data)
        except RuntimeError as exc:
            if event == "INTERACTION_CREATE":
                raise SandboxError(str(exc)) from None
            _log.debug("not dispatching %s: %s", event, exc)

    @staticmethod
    def _remember(store: OrderedDict, key: int, value: Any, cap: int | None) -> None:
        store[key] = value
        if cap is not None:
            while len(store) > cap:
                store.popitem(last=False)


def _prepare_speech(audio: str | Path | bytes) -> SpeechPlan:
    """Read (and resample) ``audio`` and plan its talk spurts; CPU work for a thread. Raises SpeechError, or
    OpusUnavailable without libopus."""
    return plan_speech(read_speech(audio))
