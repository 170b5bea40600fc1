"""The sandbox voice server's websocket: Discord voice gateway v8 over wss:// on 127.0.0.1, with DAVE.

discord.py 2.7.1 (``DiscordVoiceWebSocket``, ``VoiceConnectionState``) connects to ``wss://{endpoint}/?v=8``
with permessage-deflate and speaks JSON, plus binary messages for DAVE's MLS (end-to-end encryption, on by default as
on Discord since March 2026; ``external_sender=None`` turns it off). Client to server:

===========================  ===  ================================================================================
client -> server              op  server's answer
===========================  ===  ================================================================================
IDENTIFY                       0  READY (op 2: ssrc, ip, port, modes); a token/session that was not granted by a
                                  VOICE_SERVER_UPDATE closes with 4004, a second IDENTIFY with 4005; with DAVE on,
                                  a ``max_dave_protocol_version`` below 1 closes with 4017 (E2EE/DAVE required)
SELECT_PROTOCOL                1  SESSION_DESCRIPTION (op 4: mode, secret_key[32], dave_protocol_version 1, or 0
                                  with DAVE off), then with DAVE the external sender package (op 25, binary: it
                                  must follow op 4, as discord.py drops binary messages until op 4 made its DAVE
                                  session); a mode other than ``aead_xchacha20_poly1305_rtpsize`` closes with 4016
HEARTBEAT                      3  HEARTBEAT_ACK (op 6, ``{"t": nonce}``); v8's ``seq_ack`` is recorded
SPEAKING                       5  nothing; the flags go to the recorder (0 can end a talk spurt)
RESUME                         7  RESUMED (op 9) after replaying sequenced messages newer than ``seq_ack``, binary
                                  ones included; an unknown or revoked session closes with 4006
CLIENT_CONNECT                12  nothing (discord.py announces its audio SSRC)
DAVE_TRANSITION_READY         23  when every member of the new epoch is ready (or 2 s passed):
                                  DAVE_EXECUTE_TRANSITION (op 22) to them all
MLS_KEY_PACKAGE (binary)      26  a bare KeyPackage whose identity must be the user: Add proposals (op 27) to the
                                  group's members, or to the other pending members when there is no group yet
MLS_COMMIT_WELCOME (binary)   28  the commit, then a bare Welcome with no length prefix when it adds members; if it
                                  is for this epoch and covers exactly its proposals: MLS_ANNOUNCE_COMMIT_TRANSITION
                                  (op 29) to the members that stay, MLS_WELCOME (op 30, only their own secrets) to
                                  each new member; else an ``error`` event
MLS_INVALID_COMMIT_WELCOME    31  an ``error`` event (someone's commit or welcome was unusable); the member is
                                  removed and added again with the key package it sends next
===========================  ===  ================================================================================

Server to client, besides the answers: HELLO (op 8) on connect, CLIENTS_CONNECT (op 11) / CLIENT_DISCONNECT
(op 13) as members enter or leave the channel, SPEAKING from other users (op 5), and for DAVE the proposals of
members joining or leaving (op 27), DAVE_PREPARE_EPOCH (op 24, epoch 1) then DAVE_PREPARE_TRANSITION (op 21,
transition 0) to a member left alone in its group, which then starts again with a new key package. Those carry
v8's ``seq`` (binary messages: a u16 before the opcode) and are kept for RESUME. What the MLS group does is in
``sandbox.voice.dave``. A message before IDENTIFY closes with 4003, an unknown op with 4001. The server closes a
session with 4014 when the user is disconnected or moved on the main gateway (``revoke``), as Discord does;
discord.py then reconnects (move) or cleans up (disconnect).

TLS: ``LocalTls`` makes a throwaway CA (trustme) and a certificate for 127.0.0.1; clients trust it through
``LocalTls.client_context`` (passed to discord.py as ``Client(connector=aiohttp.TCPConnector(ssl=...))``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import ssl
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trustme
from aiohttp import WSMsgType, web

from ..guild import SimUser
from .dave import DAVE_PROTOCOL_VERSION as DAVE_VERSION
from .udp import MODE

_log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_MS = 13_750
REPLAY_BUFFER = 100  # sequenced messages kept per session for RESUME
SEQUENCED_OPS = frozenset({5, 11, 12, 13, 21, 22, 24})  # and every binary (DAVE) message
CLOSE_TIMEOUT_S = 2.0  # how long a server-side close waits for the client's close frame


class LocalTls:
    """A certificate authority made at start (never written to disk) and a server certificate for 127.0.0.1.

    ``server_context`` serves wss://; ``client_context`` trusts only this CA (plus nothing else), for clients.
    Creating one takes a few milliseconds (ECDSA keys); do it in a thread from async code.
    """

    def __init__(self) -> None:
        self.ca = trustme.CA(organization_name="Discord sandbox (local)")
        cert = self.ca.issue_cert("127.0.0.1")
        self.server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self.server_context)
        self.client_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=None)
        self.ca.configure_trust(self.client_context)


@dataclass(frozen=True)
class VoiceGrant:
    """Permission to open a voice session, issued with each VOICE_SERVER_UPDATE and revoked on leave/move."""

    user: SimUser
    token: str
    session_id: str  # the main gateway session that asked (VOICE_STATE_UPDATE's session_id)
    channel_id: int  # the voice channel it is for


@dataclass
class VoiceSession:
    """One voice connection: identified by IDENTIFY, keyed by SSRC, resumable while its grant holds."""

    grant: VoiceGrant
    ssrc: int
    ws: web.WebSocketResponse | None
    secret_key: bytes | None = None  # set by SELECT_PROTOCOL
    client_addr: tuple[str, int] | None = None  # the UDP address the client announced
    speaking: int = 0
    dave_version: int = 0  # the DAVE protocol version negotiated at IDENTIFY (0: no end-to-end encryption)
    seq: int = 0
    sent: deque[tuple[int, str | bytes]] = field(default_factory=lambda: deque(maxlen=REPLAY_BUFFER))  # for RESUME
    revoked: bool = False

    @property
    def ready(self) -> bool:
        """Whether the client has its key (after SESSION_DESCRIPTION) and may send audio."""
        return self.secret_key is not None


@dataclass
class VoiceGatewayHooks:
    """Callbacks into the voice controller.

    ``authorize(server_id, session_id, token)`` returns the live grant or None; ``on_ready(session)``
    runs after SESSION_DESCRIPTION (and op 25 when DAVE is on); ``on_speaking(session, flags)`` on each SPEAKING;
    ``on_dave(session, op, payload)`` on each DAVE op from the client (26 and 28: the binary payload after the
    opcode; 23 and 31: the JSON ``d``); ``on_ended(session)`` when a session is dropped for good (closed and not
    resumable).
    """

    authorize: Callable[[str, str, str], VoiceGrant | None]
    on_ready: Callable[[VoiceSession], Awaitable[None]]
    on_speaking: Callable[[VoiceSession, int], None]
    on_dave: Callable[[VoiceSession, int, bytes | dict[str, Any]], Awaitable[None]]
    on_ended: Callable[[VoiceSession], None]


class VoiceGateway:
    """The voice websocket server: ``start`` binds it with TLS; ``sessions`` maps SSRC -> VoiceSession.

    ``external_sender``: op 25's payload (the MLS external sender package) when DAVE is on, and then every client must
    support it; None runs DAVE protocol version 0 (no end-to-end encryption).
    """

    def __init__(
        self, hooks: VoiceGatewayHooks, tls: LocalTls, *, udp_port: int, external_sender: bytes | None = None
    ) -> None:
        self._hooks = hooks
        self._tls = tls
        self._udp_port = udp_port
        self._external_sender = external_sender
        self._runner: web.AppRunner | None = None
        self._closers: set[asyncio.Task[None]] = set()
        self._sockets: set[web.WebSocketResponse] = set()
        self._next_ssrc = 1000
        self.sessions: dict[int, VoiceSession] = {}
        self.port = 0

    @property
    def endpoint(self) -> str:
        """VOICE_SERVER_UPDATE's endpoint: '127.0.0.1:PORT' (discord.py adds wss:// and /?v=8)."""
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Serve wss:// on 127.0.0.1, random port; raises OSError if it cannot bind."""
        app = web.Application()
        app.router.add_get("/", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._tls.server_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close every voice websocket (1001) and the server; safe to call twice."""
        for session in list(self.sessions.values()):
            self._drop(session)
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"sandbox stopping")
        if self._closers:
            await asyncio.gather(*self._closers, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def allocate_ssrc(self) -> int:
        """A new SSRC, unique among voice sessions and simulated speakers alike."""
        ssrc, self._next_ssrc = self._next_ssrc, self._next_ssrc + 1
        return ssrc

    def sessions_of(self, user_id: int) -> list[VoiceSession]:
        return [s for s in self.sessions.values() if s.grant.user.id == user_id]

    def revoke(
        self, sessions: list[VoiceSession], *, code: int = 4014, reason: str = "Disconnected.", close: bool = True
    ) -> None:
        """End ``sessions`` now (their SSRCs stop being accepted); with ``close``, their websockets are closed
        with ``code`` in the background (a close waits for the client's answer, and callers should not)."""
        for session in sessions:
            session.revoked = True
            self._drop(session)
            ws = session.ws
            if close and ws is not None and not ws.closed:
                task = asyncio.create_task(ws.close(code=code, message=reason.encode()), name="voice-ws-close")
                self._closers.add(task)
                task.add_done_callback(self._closers.discard)

    async def send(self, session: VoiceSession, op: int, data: Any) -> None:
        """Send op/data as JSON, or as a binary message when ``data`` is bytes (DAVE's MLS ops: sequence u16,
        opcode u8, payload). Sequenced ops get v8's ``seq`` and are kept for RESUME; not sent if not connected."""
        if isinstance(data, bytes):
            session.seq += 1
            message: str | bytes = struct.pack(">HB", session.seq & 0xFFFF, op) + data
            session.sent.append((session.seq, message))
        else:
            payload: dict[str, Any] = {"op": op, "d": data}
            if op in SEQUENCED_OPS:
                session.seq += 1
                payload["seq"] = session.seq
            message = json.dumps(payload, separators=(",", ":"))
            if op in SEQUENCED_OPS:
                session.sent.append((session.seq, message))
        ws = session.ws
        if ws is None or ws.closed:
            return
        try:
            await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_str(message))
        except ConnectionResetError as exc:
            _log.info("voice websocket send failed: %s", exc)

    # ------------------------------------------------------------ connection

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """aiohttp handler of one voice websocket."""
        ws = web.WebSocketResponse(max_msg_size=0, timeout=CLOSE_TIMEOUT_S)
        await ws.prepare(request)
        if request.query.get("v") != "8":
            await ws.close(code=4020, message=b"Bad request: this voice server speaks v=8 only")
            return ws
        conn = _Connection(ws)
        self._sockets.add(ws)
        try:
            await conn.send_raw({"op": 8, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}})
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    if not await self._on_binary(conn, msg.data):
                        break
                    continue
                if msg.type is not WSMsgType.TEXT:
                    continue
                try:
                    payload = json.loads(msg.data)
                except json.JSONDecodeError:
                    payload = None
                if not isinstance(payload, dict) or not isinstance(payload.get("d", {}), dict | int | None):
                    await conn.close(4002, "Failed to decode payload.")
                    break
                if not await self._on_message(conn, payload):
                    break
        except ConnectionResetError as exc:  # the client vanished while we answered
            _log.info("voice websocket reset: %s", exc)
        finally:
            self._sockets.discard(ws)
            self._detached(conn)
        return ws

    async def _on_message(self, conn: _Connection, msg: dict[str, Any]) -> bool:
        """Handle one message; False when the connection was closed because of it."""
        op, data = msg.get("op"), msg.get("d")
        if op == 3:
            nonce = data.get("t") if isinstance(data, dict) else data
            await conn.send_raw({"op": 6, "d": {"t": nonce}})
            return True
        if op == 0:
            return await self._identify(conn, data or {})
        if op == 7:
            return await self._resume(conn, data or {})
        session = conn.session
        if session is None:
            return await conn.close(4003, "Not authenticated.")
        if op == 1:
            return await self._select_protocol(session, conn, data or {})
        if op == 5:
            session.speaking = int((data or {}).get("speaking", 0))
            self._hooks.on_speaking(session, session.speaking)
        elif op in (23, 31) and session.dave_version:
            await self._hooks.on_dave(session, op, data if isinstance(data, dict) else {})
        elif op in (12, 23, 31):
            _log.debug("voice gateway: op %s noted", op)
        else:
            return await conn.close(4001, "Unknown opcode.")
        return True

    async def _identify(self, conn: _Connection, data: dict[str, Any]) -> bool:
        if conn.session is not None:
            return await conn.close(4005, "Already authenticated.")
        grant = self._hooks.authorize(str(data.get("server_id")), str(data.get("session_id")), str(data.get("token")))
        if grant is None or str(data.get("user_id")) != str(grant.user.id):
            return await conn.close(4004, "Authentication failed.")
        client_dave = data.get("max_dave_protocol_version") or 0
        if self._external_sender is not None and not (isinstance(client_dave, int) and client_dave >= DAVE_VERSION):
            return await conn.close(4017, "E2EE/DAVE protocol required: this voice server needs DAVE version 1.")
        for old in self.sessions_of(grant.user.id):  # a new session supersedes a detached one
            if old.ws is None:
                self._drop(old)
        ssrc = self.allocate_ssrc()
        session = VoiceSession(grant=grant, ssrc=ssrc, ws=conn.ws)
        session.dave_version = DAVE_VERSION if self._external_sender is not None else 0
        self.sessions[ssrc] = session
        conn.session = session
        ready = {"ssrc": ssrc, "ip": "127.0.0.1", "port": self._udp_port, "modes": [MODE], "experiments": []}
        await conn.send_raw({"op": 2, "d": ready})
        return True

    async def _select_protocol(self, session: VoiceSession, conn: _Connection, data: dict[str, Any]) -> bool:
        info = data.get("data") or {}
        if data.get("protocol") != "udp" or not info.get("address") or not info.get("port"):
            return await conn.close(4002, "Failed to decode payload: SELECT_PROTOCOL needs udp address and port.")
        if info.get("mode") != MODE:
            return await conn.close(4016, f"Unknown encryption mode {info.get('mode')!r}; supported: {MODE}.")
        session.client_addr = (str(info["address"]), int(info["port"]))
        session.secret_key = secrets.token_bytes(32)
        description = {
            "mode": MODE,
            "secret_key": list(session.secret_key),
            "dave_protocol_version": session.dave_version,
            "audio_codec": "opus",
            "video_codec": None,
            "media_session_id": secrets.token_hex(16),
        }
        await conn.send_raw({"op": 4, "d": description})
        if session.dave_version and self._external_sender is not None:
            # after op 4: discord.py drops binary messages until op 4 has made its DAVE session
            await self.send(session, 25, self._external_sender)
        await self._hooks.on_ready(session)
        return True

    async def _on_binary(self, conn: _Connection, data: bytes) -> bool:
        """A binary (DAVE MLS) message from the client: opcode u8, then the payload. False when it closed."""
        session = conn.session
        if session is None:
            return await conn.close(4003, "Not authenticated.")
        if not session.dave_version:
            _log.debug("voice gateway: ignoring a binary (DAVE/MLS) frame; DAVE is not negotiated")
            return True
        if not data or data[0] not in (26, 28):
            return await conn.close(4001, f"Unknown binary opcode {data[0] if data else None}.")
        await self._hooks.on_dave(session, data[0], bytes(data[1:]))
        return True

    async def _resume(self, conn: _Connection, data: dict[str, Any]) -> bool:
        grant = self._hooks.authorize(str(data.get("server_id")), str(data.get("session_id")), str(data.get("token")))
        session = next((s for s in self.sessions.values() if s.grant == grant and s.ws is None), None)
        if grant is None or session is None or conn.session is not None:
            return await conn.close(4006, "Session is no longer valid.")
        session.ws = conn.ws
        conn.session = session
        after = int(data.get("seq_ack") if data.get("seq_ack") is not None else -1)
        for seq, message in list(session.sent):
            if seq > after:  # (binary messages carry seq's low 16 bits; a sandbox session never gets that far)
                await (conn.ws.send_bytes(message) if isinstance(message, bytes) else conn.ws.send_str(message))
        await conn.send_raw({"op": 9, "d": None})
        return True

    def _detached(self, conn: _Connection) -> None:
        """The websocket closed: keep the session for RESUME after an abnormal close, else drop it."""
        session = conn.session
        if session is None or session.ws is not conn.ws:
            return
        session.ws = None
        normal = conn.ws.close_code in (1000, 4014) or conn.closed_by_server
        if normal or session.revoked:
            self._drop(session)

    def _drop(self, session: VoiceSession) -> None:
        if self.sessions.pop(session.ssrc, None) is not None:
            self._hooks.on_ended(session)


class _Connection:
    """One websocket and the session it carries (None until IDENTIFY or RESUME)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.session: VoiceSession | None = None
        self.closed_by_server = False

    async def send_raw(self, payload: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(payload, separators=(",", ":")))

    async def close(self, code: int, reason: str) -> bool:
        _log.warning("voice gateway: closing with %s (%s)", code, reason)
        self.closed_by_server = True
        await self.ws.close(code=code, message=reason.encode())
        return False
