"""The sandbox's Discord gateway: one websocket endpoint speaking gateway v10 (JSON encoding).

Protocol as discord.py uses it:

- on connect the server sends HELLO (op 10, ``heartbeat_interval`` in ms);
- HEARTBEAT (op 1) is answered with HEARTBEAT_ACK (op 11);
- IDENTIFY (op 2) with the right token starts a new session: READY then GUILD_CREATE; a wrong token
  closes the socket with 4004 (Authentication failed), and intents with a privileged one the application is not
  granted (``granted_intents``: Message Content unless the sandbox grants it) with 4014 (Disallowed intent(s));
- RESUME (op 6) re-attaches a known session, replays the dispatches after the client's ``seq`` and sends
  RESUMED; an unknown session gets INVALID_SESSION (op 9, ``d: false``);
- REQUEST_GUILD_MEMBERS (op 8) is answered with one GUILD_MEMBERS_CHUNK (by ids, by name prefix, or every
  fixed member; see ``sandbox.guild``);
- VOICE_STATE_UPDATE (op 4) goes to ``GatewayHooks.on_voice_state_update`` (the sandbox's voice, which
  dispatches VOICE_STATE_UPDATE / VOICE_SERVER_UPDATE back);
- ``send_reconnect`` sends RECONNECT (op 7), which makes the client reconnect and RESUME.

Transport compression follows the ``compress`` query parameter: ``zlib-stream`` (one zlib stream per
connection, each message ending with a Z_SYNC_FLUSH), ``zstd-stream`` (when a zstd module is importable)
or none. Dispatches sent while the client is disconnected are kept (bounded) and replayed on RESUME.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from . import guild

_log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_MS = 41_250
REPLAY_BUFFER = 1000  # dispatches kept per session for RESUME

try:  # the same optional dependency discord.py uses for zstd-stream
    import zstandard  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    zstandard = None


class _Encoder:
    """Turns one JSON text into one websocket frame payload (str: text frame, bytes: binary frame)."""

    def __init__(self, compress: str | None) -> None:
        self._zlib = zlib.compressobj() if compress == "zlib-stream" else None
        self._zstd = None
        if compress == "zstd-stream":
            if zstandard is None:
                raise ValueError("zstd-stream requested but the zstandard module is not installed")
            self._zstd = zstandard.ZstdCompressor().compressobj()
        elif compress not in (None, "", "zlib-stream"):
            raise ValueError(f"unknown compress type {compress!r}")

    def encode(self, text: str) -> str | bytes:
        raw = text.encode()
        if self._zlib is not None:
            return self._zlib.compress(raw) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
        if self._zstd is not None:
            return self._zstd.compress(raw) + self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        return text


class _Connection:
    """One websocket; sends are serialised because a compression stream must see frames in order."""

    def __init__(self, ws: web.WebSocketResponse, encoder: _Encoder) -> None:
        self.ws = ws
        self._encoder = encoder
        self._lock = asyncio.Lock()

    async def send(self, payload: dict[str, Any]) -> None:
        async with self._lock:
            frame = self._encoder.encode(json.dumps(payload, separators=(",", ":")))
            if isinstance(frame, bytes):
                await self.ws.send_bytes(frame)
            else:
                await self.ws.send_str(frame)


@dataclass
class Session:
    """A gateway session: created by IDENTIFY, survives reconnects, resumable while it is known."""

    session_id: str
    intents: int
    seq: int = 0
    sent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=REPLAY_BUFFER))
    conn: _Connection | None = None


@dataclass
class GatewayHooks:
    """Callbacks into the sandbox: ``on_ready`` after GUILD_CREATE, ``on_resumed`` after RESUMED; optionally
    ``on_new_session`` when an IDENTIFY starts a session (before READY), ``on_voice_state_update(d)`` for op 4,
    ``voice_states()`` for GUILD_CREATE's ``voice_states``, ``threads()`` for its active ``threads`` and
    ``on_dispatch(payload)`` for every dispatch as it is sent (or buffered)."""

    on_ready: Callable[[], Awaitable[None]]
    on_resumed: Callable[[], Awaitable[None]]
    on_new_session: Callable[[], None] | None = None
    on_voice_state_update: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    voice_states: Callable[[], list[dict[str, Any]]] | None = None
    threads: Callable[[], list[dict[str, Any]]] | None = None
    on_dispatch: Callable[[dict[str, Any]], None] | None = None


class Gateway:
    """The gateway endpoint; ``handle`` is the aiohttp handler for the websocket route."""

    def __init__(
        self, *, token: str, url: str, hooks: GatewayHooks, heartbeat_interval_ms: int,
        granted_intents: int = guild.PRIVILEGED_INTENTS, application_flags: int | None = None,
    ) -> None:
        """``granted_intents``: the privileged intents the application may ask for (bits of
        ``guild.PRIVILEGED_INTENTS``); ``application_flags``: READY's ``application.flags`` (default: those of an
        application granted every privileged intent)."""
        self._token = token
        self._granted_intents = granted_intents
        self._application_flags = (
            guild.application_flags(message_content=True) if application_flags is None else application_flags
        )
        self.url = url  # ws://127.0.0.1:PORT/gateway, also given as resume_gateway_url
        self._hooks = hooks
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self.session: Session | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self.resumed = asyncio.Event()

    @property
    def intents(self) -> int:
        """Intents of the current session (0 before the first IDENTIFY)."""
        return self.session.intents if self.session else 0

    @property
    def connected(self) -> bool:
        """Whether a client is attached to the current session right now."""
        return self.session is not None and self.session.conn is not None

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send dispatch ``event`` (e.g. "MESSAGE_CREATE") to the session; buffered while it is disconnected.

        Raises RuntimeError when no client has IDENTIFYed yet (there is nobody to deliver to).
        """
        session = self.session
        if session is None:
            raise RuntimeError("no bot has connected to the sandbox gateway yet")
        session.seq += 1
        payload = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.sent.append(payload)
        if self._hooks.on_dispatch is not None:
            self._hooks.on_dispatch(payload)
        await self._send(session, payload)

    async def send_reconnect(self) -> None:
        """Send RECONNECT (op 7) to the attached client; raises RuntimeError if none is attached."""
        session = self.session
        if session is None or session.conn is None:
            raise RuntimeError("no bot is connected to the sandbox gateway")
        self.resumed.clear()
        await session.conn.send({"op": 7, "d": None})

    async def close(self) -> None:
        """Close every open websocket (code 1001, going away)."""
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"sandbox stopping")

    async def _send(self, session: Session, payload: dict[str, Any]) -> None:
        conn = session.conn
        if conn is None:
            return  # kept in session.sent, replayed on RESUME
        try:
            await conn.send(payload)
        except (ConnectionResetError, RuntimeError) as exc:
            # The client went away mid-send; it will RESUME and get this dispatch from the buffer.
            _log.info("gateway send failed (%s); keeping seq %s for resume", exc, payload.get("s"))
            if session.conn is conn:
                session.conn = None

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """aiohttp handler: runs one websocket connection until it closes."""
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        try:
            encoder = _Encoder(request.query.get("compress"))
        except ValueError as exc:
            await ws.close(code=4000, message=str(exc).encode())
            return ws
        if request.query.get("encoding", "json") != "json":
            await ws.close(code=4002, message=b"Error while decoding payload: only json is supported")
            return ws
        conn = _Connection(ws, encoder)
        self._sockets.add(ws)
        try:
            await conn.send({"op": 10, "d": {"heartbeat_interval": self._heartbeat_interval_ms}})
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                await self._on_message(conn, json.loads(msg.data))
        finally:
            self._sockets.discard(ws)
            if self.session is not None and self.session.conn is conn:
                self.session.conn = None
        return ws

    async def _on_message(self, conn: _Connection, msg: dict[str, Any]) -> None:
        op, data = msg.get("op"), msg.get("d")
        if op == 1:
            await conn.send({"op": 11})
        elif op == 2:
            await self._identify(conn, data)
        elif op == 6:
            await self._resume(conn, data)
        elif op == 8:
            await self._request_members(data)
        elif op == 3:
            pass  # presence updates have no visible effect in the sandbox
        elif op == 4:
            if self._hooks.on_voice_state_update is None:
                _log.info("voice state update ignored (no voice in this sandbox): %s", data)
            else:
                await self._hooks.on_voice_state_update(data or {})
        else:
            _log.warning("gateway: unhandled op %s", op)

    async def _identify(self, conn: _Connection, data: dict[str, Any]) -> None:
        if data.get("token") != self._token:
            _log.warning("gateway: IDENTIFY with an invalid token; closing with 4004")
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & guild.PRIVILEGED_INTENTS & ~self._granted_intents:
            _log.warning("gateway: IDENTIFY asked for intents %#x, not granted to the application (%#x); closing "
                         "with 4014", intents & guild.PRIVILEGED_INTENTS, self._granted_intents)
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        if self.session is not None and self.session.conn is not None and self.session.conn is not conn:
            await self.session.conn.ws.close(code=4000, message=b"replaced by a new session")
        session = Session(session_id=secrets.token_hex(16), intents=intents, conn=conn)
        self.session = session
        if self._hooks.on_new_session is not None:
            self._hooks.on_new_session()
        ready = {
            "v": 10,
            "user": {**guild.user_payload(guild.BOT), "verified": True, "mfa_enabled": False},
            "guilds": [{"id": str(guild.GUILD_ID), "unavailable": True}],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.url,
            "application": {"id": str(guild.APPLICATION_ID), "flags": self._application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["local"],
            "user_settings": {},
            "_trace": ['["sandbox-gateway"]'],
        }
        if "shard" in data:
            ready["shard"] = data["shard"]
        await self.dispatch("READY", ready)
        voice_states = self._hooks.voice_states() if self._hooks.voice_states is not None else []
        threads = self._hooks.threads() if self._hooks.threads is not None else []
        await self.dispatch("GUILD_CREATE", guild.guild_create_payload(session.intents, voice_states, threads))
        await self._hooks.on_ready()

    async def _resume(self, conn: _Connection, data: dict[str, Any]) -> None:
        session = self.session
        if data.get("token") != self._token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        if session is None or data.get("session_id") != session.session_id:
            await conn.send({"op": 9, "d": False})
            return
        after = int(data.get("seq") or 0)
        if session.sent and after < session.sent[0]["s"] - 1:
            await conn.send({"op": 9, "d": False})  # too far behind: the replay buffer lost events
            return
        session.conn = conn
        for payload in list(session.sent):
            if payload["s"] > after:
                await conn.send(payload)
        await self.dispatch("RESUMED", {"_trace": ['["sandbox-gateway"]']})
        self.resumed.set()
        await self._hooks.on_resumed()

    async def _request_members(self, data: dict[str, Any]) -> None:
        limit = int(data.get("limit") or 0)
        user_ids = data.get("user_ids")
        not_found: list[str] = []
        if user_ids is not None:
            wanted = user_ids if isinstance(user_ids, list) else [user_ids]
            users = [guild.user_by_id(int(u)) for u in wanted]
            not_found = [str(u) for u, user in zip(wanted, users, strict=True) if user is None]
            members = [guild.member_payload(user) for user in users if user is not None]
        elif data.get("query"):  # Discord answers a name search with at most `limit` (at most 100) members
            found = itertools.islice(guild.members_named_like(str(data["query"])), min(limit or 100, 100))
            members = [guild.member_payload(user) for user in found]
        else:  # every member: the fixed ones (see sandbox.guild on the numbered ones)
            members = guild.all_member_payloads()
        if limit:
            members = members[:limit]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.GUILD_ID),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": not_found,
        }
        if data.get("presences"):
            chunk["presences"] = []
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk)
