"""Voice in the sandbox: who is in which voice channel, and the voice server the bot connects to.

``SandboxVoice`` ties together

- voice states (user id -> channel), changed by the bot's main-gateway op 4 VOICE_STATE_UPDATE and by the
  sandbox API for members (``join``/``leave``) and for what an admin would do to the bot (``disconnect_bot``,
  ``move_bot``); each change is dispatched as VOICE_STATE_UPDATE and published as a ``voice_state`` event
  (docs/sandbox.md);
- grants: each time the bot joins or moves, a VOICE_SERVER_UPDATE ``{token, guild_id, endpoint}`` grants it a
  voice session on the voice gateway (``gateway``), revoked (websocket closed with 4014) when an admin
  disconnects or moves it;
- the UDP endpoint (``udp``): RTP from a ready session is decrypted and its Opus handed to the recorder
  (``audio``), which publishes one ``voice_audio`` event per talk spurt;
- DAVE (``dave``, on unless ``dave=False``): each voice channel's MLS group, with the bot's voice session and a
  ``MemberDave`` per simulated member in the channel. The bot's frames are decrypted with a member's session before
  they are measured (``e2ee`` in the event); a frame members could not play (not encrypted while the bot and a member
  share an executed epoch, or undecryptable) is counted, not measured, and reported once per run as an ``error``
  event. Opus silence passes as it is (DAVE's one exception).

The bot's op 4 is answered as discord.py needs it: a join gets VOICE_STATE_UPDATE (``session_id`` = the main
gateway session) then VOICE_SERVER_UPDATE; a leave always gets VOICE_STATE_UPDATE with ``channel_id`` null, even
when the bot was not in voice (discord.py's ``disconnect()`` waits for it). A join the bot may not make (no
CONNECT in the channel, not a voice channel) is ignored, as Discord does, and recorded as an error event.
Audio from a sender without SPEAK in its channel is dropped (counted in ``muted_frames``).

Simulated speakers (a member sending audio *to* the bot, ``speak``): the member gets an SSRC (kept until they leave
voice); before its first packet to a bot voice session, that session gets SPEAKING (op 5, ``{"user_id", "ssrc",
"speaking": 1}``), once, as Discord relays it (listeners such as discord-ext-voice-recv map SSRC -> user from it);
then the talk spurts of ``speech`` are sent by ``speaker`` over UDP to the session's ``client_addr``,
DAVE-encrypted with the member's own session and sealed with the session's ``secret_key``. With DAVE on, a speech
first waits (up to ``DAVE_READY_TIMEOUT_S``) until the member and the bot share an executed epoch. Nothing is sent
to a self-deafened bot, nor to a bot in another channel; such frames are dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.opus import OpusUnavailable

from .. import guild
from ..guild import SimChannel, SimUser
from .audio import VoiceRecorder
from .dave import DaveGroup, MemberDave, RemoteParticipant
from .gateway import LocalTls, VoiceGateway, VoiceGatewayHooks, VoiceGrant, VoiceSession
from .mls import ExternalSender
from .speaker import FrameEncryptor, MemberStream, SendTarget, SpeakerHub, SpeechResult, no_frame_encryption
from .speech import SpeechPlan
from .udp import RtpError, UdpEndpoint, open_rtp, rtp_ssrc

_log = logging.getLogger(__name__)

OP4_ROUTE = "gateway op 4 VOICE_STATE_UPDATE"
SPEAKING_LEAD_S = 0.02  # a speech's first frame is due this long after its SPEAKING was written (a network hop)
DAVE_READY_TIMEOUT_S = 5.0  # how long a member's speech waits for its DAVE group with the bot to form
UDP_KEEPALIVE_BYTES = 8  # discord-ext-voice-recv's keepalive: a bare u64 counter, not RTP


class VoiceRefused(Exception):
    """A voice change the sandbox API cannot make (bot not in voice, not a voice channel...); says which."""


@dataclass
class VoiceStateRecord:
    """Where one user is in voice; ``session_id`` is the main gateway session (random for members)."""

    user: SimUser
    channel: SimChannel
    session_id: str
    self_mute: bool = False
    self_deaf: bool = False

    def payload(self, *, in_guild_create: bool = False) -> dict[str, Any]:
        return guild.voice_state_payload(
            self.user,
            self.channel,
            self.session_id,
            self_mute=self.self_mute,
            self_deaf=self.self_deaf,
            in_guild_create=in_guild_create,
        )


@dataclass
class VoiceHooks:
    """What voice needs from the sandbox: ``dispatch`` (main gateway, honours intents), ``publish`` (events),
    ``record_error(route, code, message)``, ``gateway_session_id()`` and ``t_ms_at(loop_seconds)``."""

    dispatch: Callable[[str, dict[str, Any]], Awaitable[None]]
    publish: Callable[[dict[str, Any]], Any]
    record_error: Callable[[str, int, str], None]
    gateway_session_id: Callable[[], str | None]
    t_ms_at: Callable[[float], int]


class SandboxVoice:
    """The sandbox's voice: states, grants, the voice gateway, the UDP endpoint, DAVE and the recorder.

    ``dave``: end-to-end encryption as Discord requires it (DAVE protocol version 1; ``sandbox.voice.dave``), else
    version 0. ``record_dir``: where each talk spurt received is also written as a WAV file (None: nowhere).
    """

    def __init__(self, hooks: VoiceHooks, *, dave: bool = True, record_dir: Path | None = None) -> None:
        self._hooks = hooks
        self.states: dict[int, VoiceStateRecord] = {}
        self._grants: dict[int, VoiceGrant] = {}
        self.tls: LocalTls | None = None
        self.udp = UdpEndpoint(self._on_datagram)
        self.recorder = VoiceRecorder(hooks.publish, hooks.t_ms_at, record_dir=record_dir)
        self.speakers = SpeakerHub(self.udp.send, lambda: self.gateway.allocate_ssrc())
        self._gateway: VoiceGateway | None = None
        self._external_sender = ExternalSender() if dave else None
        self.dave_groups: dict[int, DaveGroup] = {}  # voice channel id -> its MLS group
        self._bot_participants: dict[int, RemoteParticipant] = {}  # bot voice session SSRC -> its place in a group
        self._tasks: set[asyncio.Task[None]] = set()
        self.muted_frames = 0
        self.bad_packets = 0
        self.unencrypted_frames = 0  # from the bot while E2EE was on: members could not play them
        self.undecryptable_frames = 0  # DAVE frames from the bot that no member could decrypt
        self._opus_error_reported = False

    @property
    def dave(self) -> bool:
        """Whether calls are end-to-end encrypted (DAVE protocol version 1)."""
        return self._external_sender is not None

    @property
    def gateway(self) -> VoiceGateway:
        if self._gateway is None:
            raise RuntimeError("the sandbox voice server is not started")
        return self._gateway

    async def start(self) -> None:
        """Make the TLS material (in a thread), bind UDP and the wss:// voice gateway; raises OSError."""
        self.tls = await asyncio.to_thread(LocalTls)
        self.udp.start()
        hooks = VoiceGatewayHooks(
            authorize=self._authorize, on_ready=self._on_session_ready, on_speaking=self._on_speaking,
            on_dave=self._on_dave, on_ended=self._on_session_ended,
        )  # fmt: skip
        package = self._external_sender.package if self._external_sender is not None else None
        self._gateway = VoiceGateway(hooks, self.tls, udp_port=self.udp.port, external_sender=package)
        await self._gateway.start()

    async def stop(self) -> None:
        """Stop members' speeches (their threads), close the voice websockets, DAVE's timers, the UDP endpoint and
        open spurts (published, and written when recording); safe to call twice."""
        await self.speakers.stop()
        if self._gateway is not None:
            await self._gateway.stop()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for group in self.dave_groups.values():
            await group.close()
        await self.udp.close()
        self.recorder.close()
        await self.recorder.flush()

    # ------------------------------------------------------------ queries

    def channel_of(self, user_id: int) -> SimChannel | None:
        record = self.states.get(user_id)
        return record.channel if record else None

    def names(self) -> dict[str, str]:
        """Member/bot name -> voice channel name."""
        return {r.user.name: r.channel.name for r in self.states.values()}

    def guild_create_states(self) -> list[dict[str, Any]]:
        return [r.payload(in_guild_create=True) for r in self.states.values()]

    # ------------------------------------------------------------ the bot, through the main gateway

    async def on_bot_op4(self, data: dict[str, Any]) -> None:
        """The bot's op 4 ``{guild_id, channel_id|null, self_mute, self_deaf}``: join, move or leave."""
        if str(data.get("guild_id")) != str(guild.GUILD_ID):
            self._hooks.record_error(OP4_ROUTE, 10004, f"Unknown Guild {data.get('guild_id')}")
            return
        if data.get("channel_id") is None:
            await self._bot_leaves()
            return
        channel = guild.channel_by_id(int(data["channel_id"]))
        if channel is None or not channel.is_voice:
            self._hooks.record_error(OP4_ROUTE, 10003, f"Unknown voice channel {data['channel_id']}")
            return
        if not guild.channel_permissions_of(guild.BOT, channel) & guild.CONNECT:
            self._hooks.record_error(OP4_ROUTE, 50013, f"Missing Permissions: Connect in {channel.name}")
            return
        mute, deaf = bool(data.get("self_mute")), bool(data.get("self_deaf"))
        await self._place_bot(channel, self_mute=mute, self_deaf=deaf)

    async def _place_bot(self, channel: SimChannel, *, self_mute: bool = False, self_deaf: bool = False) -> None:
        """Put the bot in ``channel`` (join or move); a new grant unless it stays where it has a session."""
        previous = self.states.get(guild.BOT_USER_ID)
        session_id = self._hooks.gateway_session_id() or secrets.token_hex(16)
        record = VoiceStateRecord(guild.BOT, channel, session_id, self_mute, self_deaf)
        self.states[guild.BOT_USER_ID] = record
        await self._hooks.dispatch("VOICE_STATE_UPDATE", record.payload())
        moved = previous is None or previous.channel.id != channel.id
        if moved:
            self._publish_state(guild.BOT, channel)
        old_sessions = self.gateway.sessions_of(guild.BOT_USER_ID)
        if moved or not old_sessions:
            grant = VoiceGrant(guild.BOT, secrets.token_hex(8), session_id, channel.id)
            self._grants[guild.BOT_USER_ID] = grant
            server = {"token": grant.token, "guild_id": str(guild.GUILD_ID), "endpoint": self.gateway.endpoint}
            await self._hooks.dispatch("VOICE_SERVER_UPDATE", server)
            # Like Discord, the old voice connection ends with 4014; discord.py then reconnects with the new grant.
            self.gateway.revoke(old_sessions, code=4014, reason="Disconnected: moved to another channel.")
        await self._update_speakers()  # e.g. self_deaf changed

    async def _bot_leaves(self, *, external: bool = False) -> None:
        previous = self.states.pop(guild.BOT_USER_ID, None)
        self._grants.pop(guild.BOT_USER_ID, None)
        session_id = previous.session_id if previous else (self._hooks.gateway_session_id() or "")
        await self._hooks.dispatch("VOICE_STATE_UPDATE", guild.voice_state_payload(guild.BOT, None, session_id))
        if previous is not None:
            self._publish_state(guild.BOT, None)
        # A bot leaving by itself closes its voice websocket; an admin's disconnect is closed from here (4014).
        self.gateway.revoke(self.gateway.sessions_of(guild.BOT_USER_ID), code=4014, close=external)

    async def disconnect_bot(self) -> None:
        """Disconnect the bot as an admin would. Raises VoiceRefused when it is not in voice."""
        if guild.BOT_USER_ID not in self.states:
            raise VoiceRefused(f"{guild.BOT_NAME} is not in a voice channel")
        await self._bot_leaves(external=True)

    async def move_bot(self, channel: SimChannel) -> None:
        """Move the bot as an admin would (it needs CONNECT there). Raises VoiceRefused when that cannot be."""
        record = self.states.get(guild.BOT_USER_ID)
        if record is None:
            raise VoiceRefused(f"{guild.BOT_NAME} is not in a voice channel")
        if not channel.is_voice:
            raise VoiceRefused(f"{channel.name} is not a voice channel")
        if not guild.channel_permissions_of(guild.BOT, channel) & guild.CONNECT:
            raise VoiceRefused(f"{guild.BOT_NAME} lacks the Connect permission in {channel.name}")
        if record.channel.id != channel.id:
            await self._place_bot(channel, self_mute=record.self_mute, self_deaf=record.self_deaf)

    def reset_bot(self) -> None:
        """A new main-gateway session (IDENTIFY): the old session's voice connection is gone, as on Discord."""
        if self.states.pop(guild.BOT_USER_ID, None) is not None:
            self._publish_state(guild.BOT, None)
        self._grants.pop(guild.BOT_USER_ID, None)
        if self._gateway is not None:
            self.gateway.revoke(self.gateway.sessions_of(guild.BOT_USER_ID), code=4006, reason="Session invalid.")

    # ------------------------------------------------------------ members, through the sandbox API

    async def join(self, member: SimUser, channel: SimChannel) -> None:
        """Put ``member`` in voice ``channel`` (no permission check). Raises VoiceRefused for a text channel."""
        if not channel.is_voice:
            raise VoiceRefused(f"{channel.name} is not a voice channel")
        previous = self.states.get(member.id)
        if previous is not None and previous.channel.id == channel.id:
            return
        session_id = previous.session_id if previous else secrets.token_hex(16)
        record = VoiceStateRecord(member, channel, session_id)
        self.states[member.id] = record
        await self._hooks.dispatch("VOICE_STATE_UPDATE", record.payload())
        self._publish_state(member, channel)
        if previous is not None:
            await self._tell_channel(previous.channel, 13, {"user_id": str(member.id)})
            await self._dave_leave(member.id, previous.channel)
        await self._tell_channel(channel, 11, {"user_ids": [str(member.id)]})
        if self.dave:
            recognized = lambda: [user for user, record in self.states.items() if record.channel == channel]  # noqa: E731
            await self._dave_group(channel).connect(MemberDave(member.id, channel.id, recognized))
        await self._update_speakers()

    async def leave(self, member: SimUser) -> None:
        """Take ``member`` out of voice; no-op when not in voice."""
        previous = self.states.pop(member.id, None)
        if previous is None:
            return
        self.speakers.retire(member.id)
        await self._hooks.dispatch("VOICE_STATE_UPDATE", guild.voice_state_payload(member, None, previous.session_id))
        self._publish_state(member, None)
        await self._tell_channel(previous.channel, 13, {"user_id": str(member.id)})
        await self._dave_leave(member.id, previous.channel)

    async def _tell_channel(self, channel: SimChannel, op: int, data: dict[str, Any]) -> None:
        """Send op/data to the ready voice sessions whose user is in ``channel`` (in practice: the bot)."""
        for session in list(self.gateway.sessions.values()):
            if session.ready and self.channel_of(session.grant.user.id) == channel:
                await self.gateway.send(session, op, data)

    # ------------------------------------------------------------ DAVE

    def _dave_group(self, channel: SimChannel | int) -> DaveGroup:
        """The MLS group of a voice channel (made on first use)."""
        channel_id = channel if isinstance(channel, int) else channel.id
        group = self.dave_groups.get(channel_id)
        if group is None:
            assert self._external_sender is not None
            report = lambda message: self._hooks.record_error("voice gateway DAVE", 0, message)  # noqa: E731
            group = self.dave_groups[channel_id] = DaveGroup(channel_id, self._external_sender, report)
        return group

    async def _dave_leave(self, user_id: int, channel: SimChannel) -> None:
        group = self.dave_groups.get(channel.id)
        participant = group.participants.get(user_id) if group is not None else None
        if group is not None and participant is not None:
            await group.disconnect(participant)

    def _encryptor_of(self, member_id: int) -> FrameEncryptor:
        """How the member's client turns an Opus frame into its media payload: DAVE-encrypted when E2EE is on
        (None while it has no key: the frame is not sent), else the frame itself."""
        channel = self.channel_of(member_id)
        if not self.dave or channel is None:
            return no_frame_encryption
        member = self._dave_group(channel).member(member_id)
        return member.encrypt if member is not None else (lambda opus: None)

    async def _wait_for_dave(self, member: SimUser, channel: SimChannel) -> None:
        """Wait until ``member`` and the bot share an executed DAVE epoch in ``channel``, so that each can decrypt
        the other. Raises VoiceRefused after DAVE_READY_TIMEOUT_S."""
        if not self.dave:
            return
        if not await self._dave_group(channel).wait_executed({member.id, guild.BOT_USER_ID}, DAVE_READY_TIMEOUT_S):
            raise VoiceRefused(
                f"{member.name} and {guild.BOT_NAME} have no end-to-end encryption (DAVE) in {channel.name} after "
                f"{DAVE_READY_TIMEOUT_S:g} s: their MLS group did not form; see the error events and the log"
            )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _publish_state(self, user: SimUser, channel: SimChannel | None) -> None:
        name = channel.name if channel is not None else None
        self._hooks.publish({"event": "voice_state", "member": user.name, "channel": name})

    # ------------------------------------------------------------ voice gateway hooks

    def _authorize(self, server_id: str, session_id: str, token: str) -> VoiceGrant | None:
        if server_id != str(guild.GUILD_ID):
            return None
        return next((g for g in self._grants.values() if g.token == token and g.session_id == session_id), None)

    async def _on_session_ready(self, session: VoiceSession) -> None:
        channel = self.channel_of(session.grant.user.id)
        others = [str(r.user.id) for r in self.states.values() if r.channel == channel and r.user != session.grant.user]
        if others:
            await self.gateway.send(session, 11, {"user_ids": others})
        if session.dave_version:

            async def send(op: int, payload: bytes | dict[str, Any]) -> None:
                await self.gateway.send(session, op, payload)

            participant = self._bot_participants[session.ssrc] = RemoteParticipant(session.grant.user.id, send)
            await self._dave_group(session.grant.channel_id).connect(participant)
        await self._update_speakers()  # members speaking right now are announced to the new session

    async def _on_dave(self, session: VoiceSession, op: int, payload: bytes | dict[str, Any]) -> None:
        participant = self._bot_participants.get(session.ssrc)
        if participant is not None:
            await self._dave_group(session.grant.channel_id).receive(participant, op, payload)

    def _on_speaking(self, session: VoiceSession, flags: int) -> None:
        stream = self.recorder.existing(session.ssrc)
        if stream is not None:
            stream.speaking(flags)

    def _on_session_ended(self, session: VoiceSession) -> None:
        self.recorder.end_stream(session.ssrc)
        self.speakers.session_ended(session.ssrc)
        participant = self._bot_participants.pop(session.ssrc, None)
        if participant is not None:  # gone from its channel's MLS group (called from sync code: a task)
            self._spawn(self._dave_group(session.grant.channel_id).disconnect(participant))

    # ------------------------------------------------------------ UDP

    def _on_datagram(self, data: bytes, addr: tuple[str, int], arrival: float) -> None:
        """An RTP packet (on the loop): decrypt with its session's key, check SPEAK, record the Opus frame."""
        if len(data) == UDP_KEEPALIVE_BYTES:
            return
        ssrc = rtp_ssrc(data)
        session = self.gateway.sessions.get(ssrc) if ssrc is not None and self._gateway else None
        if session is None or session.secret_key is None or addr != session.client_addr:
            self.bad_packets += 1
            return
        try:
            packet = open_rtp(data, session.secret_key)
        except RtpError as exc:
            self.bad_packets += 1
            _log.warning("voice: dropped a packet: %s", exc)
            return
        user = session.grant.user
        channel = self.channel_of(user.id)
        if channel is None:
            return  # left voice; the last packets in flight are not part of any channel
        if not guild.channel_permissions_of(user, channel) & guild.SPEAK:
            self.muted_frames += 1
            return
        try:
            stream = self.recorder.stream(ssrc, user.name, lambda: self._channel_name(user.id))
        except OpusUnavailable as exc:
            if not self._opus_error_reported:
                self._opus_error_reported = True
                self._hooks.record_error("voice UDP", 0, exc.user_message)
            return
        if not self.dave:
            stream.feed(packet.payload, arrival, e2ee=False)
            return
        opened = self._dave_group(channel).open_frame(user.id, packet.payload)
        if opened.opus is None:  # what the channel's members could not play
            if opened.e2ee:
                self.undecryptable_frames += 1
            else:
                self.unencrypted_frames += 1
            if opened.problem is not None and not stream.dave_problem_reported:  # once per run of such frames
                stream.dave_problem_reported = True
                message = f"{user.name}'s audio in {channel.name} cannot be played by its members: {opened.problem}"
                self._hooks.record_error("voice UDP", 0, message)
            return
        stream.dave_problem_reported = False
        stream.feed(opened.opus, arrival, e2ee=opened.e2ee)

    def _channel_name(self, user_id: int) -> str | None:
        channel = self.channel_of(user_id)
        return channel.name if channel else None

    # ------------------------------------------------------------ members speaking to the bot

    def check_can_speak(self, member: SimUser) -> SimChannel:
        """The voice channel where ``member`` can speak to the bot now. Raises VoiceRefused when the member is not
        in voice, lacks SPEAK there, is already speaking, or the bot has no ready voice connection there."""
        channel = self.channel_of(member.id)
        if channel is None:
            raise VoiceRefused(f"{member.name} is not in a voice channel; join one first")
        if not guild.channel_permissions_of(member, channel) & guild.SPEAK:
            raise VoiceRefused(f"{member.name} lacks the Speak permission in {channel.name}")
        if self.speakers.speaking(member.id):
            raise VoiceRefused(f"{member.name} is already speaking")
        if self.channel_of(guild.BOT_USER_ID) != channel:
            raise VoiceRefused(f"{guild.BOT_NAME} is not in {channel.name}, so nobody would hear {member.name}")
        if self._bot_session() is None:
            raise VoiceRefused(f"{guild.BOT_NAME}'s voice connection in {channel.name} is not ready yet")
        return channel

    async def speak(self, member: SimUser, plan: SpeechPlan) -> tuple[SpeechResult, SimChannel]:
        """``member`` speaks ``plan`` into their voice channel; returns once the last frame is sent (or the sandbox
        stopped), with what was sent and the channel. Raises VoiceRefused as ``check_can_speak`` does."""
        channel = self.check_can_speak(member)
        await self._wait_for_dave(member, channel)
        stream = self.speakers.stream(member.id)
        await self._retarget(stream)
        channel = self.check_can_speak(member)  # again: voice may have changed while SPEAKING was sent
        start_at = asyncio.get_running_loop().time() + SPEAKING_LEAD_S
        return await self.speakers.speak(stream, plan, start_at), channel

    def _bot_session(self) -> VoiceSession | None:
        """The bot's newest voice session that has its key and UDP address, if any."""
        ready = [s for s in self.gateway.sessions_of(guild.BOT_USER_ID) if s.ready and s.client_addr]
        return max(ready, key=lambda s: s.ssrc, default=None)

    def _target_of(self, member_id: int) -> tuple[VoiceSession, SendTarget] | None:
        """Where the member's audio goes now: the bot's session when both are in the same channel, the member may
        speak and the bot is not self-deafened; else None."""
        channel = self.channel_of(member_id)
        bot = self.states.get(guild.BOT_USER_ID)
        user = guild.user_by_id(member_id)
        if channel is None or user is None or bot is None or bot.channel != channel or bot.self_deaf:
            return None
        if not guild.channel_permissions_of(user, channel) & guild.SPEAK:
            return None
        session = self._bot_session()
        if session is None or session.secret_key is None or session.client_addr is None:
            return None
        return session, SendTarget(session.ssrc, session.client_addr, session.secret_key)

    async def _retarget(self, stream: MemberStream) -> None:
        """Point ``stream`` at its current target, after telling that session the SSRC (SPEAKING) if it is new.
        The target is worked out again after each send: voice may have changed meanwhile."""
        while True:
            found = self._target_of(stream.member_id)
            if found is None:
                stream.target = None
                return
            session, target = found
            stream.frame_encryptor = self._encryptor_of(stream.member_id)
            if (session.ssrc, stream.ssrc) in self.speakers.announced:
                stream.target = target
                return
            self.speakers.announced.add((session.ssrc, stream.ssrc))
            speaking = {"user_id": str(stream.member_id), "ssrc": stream.ssrc, "speaking": 1}
            await self.gateway.send(session, 5, speaking)

    async def _update_speakers(self) -> None:
        """Voice states or sessions changed: re-point the streams of members speaking now."""
        for member_id, stream in list(self.speakers.streams.items()):
            if self.speakers.speaking(member_id):
                await self._retarget(stream)
