"""DAVE (Discord's end-to-end encryption of voice) in the sandbox: each voice channel's MLS group, run as Discord's
voice gateway runs it, and the simulated members' own DAVE clients.

The voice gateway is the MLS group's delivery service and external sender (https://daveprotocol.com, protocol
version 1). A ``DaveGroup`` is one voice channel's group; its participants are the bot's voice session
(``RemoteParticipant``: ops go over its websocket, answers come back later) and the simulated members in the channel
(``MemberDave``: a ``davey.DaveSession`` each, answering at once, as a Discord client would). What happens:

- a participant joins: it gets the external sender package (op 25; for the bot right after op 4) and answers with its
  key package (op 26);
- no established group yet: once two participants have key packages, each is sent (op 27) Add proposals for the
  others; one commits (op 28), the others are welcomed (op 30) and the committer gets its commit back (op 29);
- an established group: members joining, leaving, or re-joining with a new key package (after an invalid commit or
  welcome, op 31) are batched into one round of Add/Remove proposals (op 27) to the members; the first member's
  valid commit (op 28) is announced (op 29) to the members that stay and its Welcome, cut to their own secrets, goes
  to each new member (op 30);
- each commit starts a transition (ids 1..65535): every member in the new epoch reports it is ready (op 23), then all
  are told to execute it (op 22), or after ``TRANSITION_TIMEOUT_S``, as Discord does;
- one member left alone in an established group is reset (op 24 with epoch 1, then op 21 with transition 0) and
  sends a new key package, so that nobody keeps a group to itself (the protocol's "sole member reset").

Which commit wins: Discord announces the first valid commit it receives. Simulated members would always be first, so
the bot's commit is preferred whenever the bot was sent the proposals (its own-commit path is the one exercised);
a member's commit is used when the bot was not sent them (the bot is being welcomed), when the bot's commit is
invalid (an ``error`` event says why), or when it has not come within ``COMMIT_TIMEOUT_S``.

The order of delivery is chosen so that nobody is asked to decrypt with a key it cannot have yet: simulated members
process a commit or welcome before the bot is sent it, so the bot's first frame in a new epoch can be decrypted.

Threads: ``MemberDave`` is used on the event loop (MLS) and in the member's sending thread (``encrypt``) and on the
loop for the bot's frames (``decrypt``); one lock per member serialises its session.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

import davey

from .mls import (
    ExternalSender,
    KeyPackageInfo,
    MlsError,
    group_id_of,
    read_commit,
    read_key_package,
    split_commit_welcome,
    vl,
    welcome_for,
)

_log = logging.getLogger(__name__)

DAVE_PROTOCOL_VERSION = 1
COMMIT_TIMEOUT_S = 2.0  # the bot's commit is awaited this long before a simulated member's is announced instead
TRANSITION_TIMEOUT_S = 2.0  # a transition is executed this long after it was announced, ready or not (as Discord)
DAVE_MAGIC_MARKER = b"\xfa\xfa"  # the last two bytes of every DAVE-encrypted frame
OPUS_SILENCE = b"\xf8\xff\xfe"  # passes through DAVE unencrypted (the protocol's silence exception)

# Voice gateway opcodes of DAVE
PREPARE_TRANSITION, EXECUTE_TRANSITION, TRANSITION_READY, PREPARE_EPOCH = 21, 22, 23, 24
EXTERNAL_SENDER, KEY_PACKAGE, PROPOSALS, COMMIT_WELCOME = 25, 26, 27, 28
ANNOUNCE_COMMIT, WELCOME, INVALID_COMMIT_WELCOME = 29, 30, 31
BINARY_OPS = frozenset({EXTERNAL_SENDER, KEY_PACKAGE, PROPOSALS, COMMIT_WELCOME, ANNOUNCE_COMMIT, WELCOME})

Payload = bytes | dict[str, Any]
Message = tuple[int, Payload]  # (op, binary payload after the opcode, or the JSON "d" object)


class Participant(Protocol):
    """Someone in a channel's MLS group: the bot's voice session, or a simulated member."""

    user_id: int

    async def deliver(self, op: int, payload: Payload) -> list[Message]:
        """Send one DAVE op; a simulated member returns its answers at once, the bot's come later (``[]``)."""
        ...


class RemoteParticipant:
    """The bot's voice session: ops go out through ``send`` (the voice gateway's, which adds v8's sequence)."""

    def __init__(self, user_id: int, send: Callable[[int, Payload], Awaitable[None]]) -> None:
        self.user_id = user_id
        self._send = send

    async def deliver(self, op: int, payload: Payload) -> list[Message]:
        await self._send(op, payload)
        return []


class MemberDave:
    """A simulated member's DAVE client: its own ``davey.DaveSession``, answering the gateway's ops as discord.py
    does (``deliver``), encrypting the member's Opus frames and decrypting the bot's.

    ``recognized()`` gives the user ids connected to the channel (CLIENTS_CONNECT): Add proposals for anyone else are
    refused, as the protocol requires of members.
    """

    def __init__(self, user_id: int, channel_id: int, recognized: Callable[[], Collection[int]]) -> None:
        self.user_id = user_id
        self.channel_id = channel_id
        self._recognized = recognized
        self._lock = threading.Lock()
        self._session = davey.DaveSession(DAVE_PROTOCOL_VERSION, user_id, channel_id)

    @property
    def ready(self) -> bool:
        """Whether the member is in an established group (has media keys)."""
        with self._lock:
            return self._session.ready

    @property
    def epoch(self) -> int:
        with self._lock:
            return self._session.epoch

    @property
    def leaf_index(self) -> int:
        with self._lock:
            return self._session.own_leaf_index

    def encrypt(self, opus: bytes) -> bytes | None:
        """The DAVE frame of one Opus frame, or None while the member has no media key (the frame is not sent, as a
        Discord client in an end-to-end encrypted call would not send it). Runs in the member's sending thread."""
        with self._lock:
            if not self._session.ready:
                return None
            return self._session.encrypt_opus(opus)

    def decrypt(self, sender_id: int, frame: bytes) -> bytes:
        """The Opus frame inside ``sender_id``'s DAVE frame; raises ValueError when this member cannot decrypt it
        (no key for that sender or epoch, tampered, or not encrypted at all)."""
        with self._lock:
            return self._session.decrypt(sender_id, davey.MediaType.audio, frame)

    async def deliver(self, op: int, payload: Payload) -> list[Message]:
        with self._lock:
            return self._handle(op, payload)

    def _handle(self, op: int, payload: Payload) -> list[Message]:
        session = self._session
        if op == EXTERNAL_SENDER and isinstance(payload, bytes):
            session.set_external_sender(payload)
            return [(KEY_PACKAGE, session.get_serialized_key_package())]
        if op == PROPOSALS and isinstance(payload, bytes):
            kind = davey.ProposalsOperationType.append if payload[0] == 0 else davey.ProposalsOperationType.revoke
            try:
                result = session.process_proposals(kind, payload[1:], list(self._recognized()))
            except ValueError as exc:  # e.g. an Add of someone not in the channel: refused, as the protocol says
                _log.warning("member %s refused DAVE proposals: %s", self.user_id, exc)
                return []
            if result is None:
                return []
            return [(COMMIT_WELCOME, result.commit + (result.welcome or b""))]
        if op in (ANNOUNCE_COMMIT, WELCOME) and isinstance(payload, bytes):
            transition_id = struct.unpack_from(">H", payload)[0]
            try:
                if op == ANNOUNCE_COMMIT:
                    session.process_commit(payload[2:])
                else:
                    session.process_welcome(payload[2:])
            except ValueError as exc:  # what discord.py does: flag it, start again with a new key package
                _log.warning("member %s could not process DAVE op %s: %s", self.user_id, op, exc)
                session.reinit(DAVE_PROTOCOL_VERSION, self.user_id, self.channel_id)
                invalid = (INVALID_COMMIT_WELCOME, {"transition_id": transition_id})
                return [invalid, (KEY_PACKAGE, session.get_serialized_key_package())]
            return [(TRANSITION_READY, {"transition_id": transition_id})] if transition_id else []
        if op == PREPARE_EPOCH and isinstance(payload, dict) and payload.get("epoch") == 1:
            session.reinit(DAVE_PROTOCOL_VERSION, self.user_id, self.channel_id)
            return [(KEY_PACKAGE, session.get_serialized_key_package())]
        if op == PREPARE_TRANSITION and isinstance(payload, dict) and payload.get("transition_id"):
            return [(TRANSITION_READY, {"transition_id": payload["transition_id"]})]
        return []  # execute transition: davey 0.1 switches keys when it processes the commit


@dataclass(frozen=True)
class _Proposal:
    user_id: int
    add: bool  # else a removal
    leaf: int | None = None  # the removed leaf
    key_package: bytes = b""


@dataclass
class _Round:
    """Proposals in flight, awaiting a commit."""

    epoch: int
    initial: bool  # creating the group (all participants pending), not changing an established one
    proposals: dict[bytes, _Proposal]  # ProposalRef -> what it does
    expected: dict[int, frozenset[bytes]]  # who was sent proposals -> the refs their commit must cover
    preferred: int | None  # the bot, when it was sent the proposals: its commit is awaited first
    held: list[tuple[Participant, bytes, bytes | None]] = field(default_factory=list)  # others' commits
    timer: asyncio.TimerHandle | None = None


@dataclass
class _Transition:
    order: int  # transitions in the order they were announced (ids wrap around)
    members: frozenset[int]
    waiting: set[int]
    timer: asyncio.TimerHandle | None = None


@dataclass(frozen=True)
class OpenedFrame:
    """What a member of the channel makes of one of the bot's media payloads: the Opus frame to play (None: nothing
    playable), whether it was end-to-end encrypted, and a problem to report (None: none)."""

    opus: bytes | None
    e2ee: bool
    problem: str | None = None


class DaveGroup:
    """One voice channel's MLS group, as the voice gateway keeps it (see the module docstring).

    ``report(message)`` records what a real Discord would have refused from the bot (an ``error`` event).
    Every change runs under one asyncio lock; answers from simulated members are handled after the change that
    caused them, in order. ``close()`` cancels the timers and waits for the work they started.
    """

    def __init__(self, channel_id: int, sender: ExternalSender, report: Callable[[str], None]) -> None:
        self.channel_id = channel_id
        self._group_id = group_id_of(channel_id)
        self._sender = sender
        self._report = report
        self.participants: dict[int, Participant] = {}
        self._key_packages: dict[int, tuple[bytes, KeyPackageInfo]] = {}  # pending members' key packages
        self._leaves: dict[int, int] = {}  # leaf index -> user id, in the established group
        self._stale: set[int] = set()  # leaves to remove although their user is still connected
        self.epoch = 0
        self.established = False
        self.executed: frozenset[int] = frozenset()  # the members as of the last executed transition
        self._round: _Round | None = None
        self._transitions: dict[int, _Transition] = {}
        self._last_transition = 0
        self._announced = 0  # transitions announced so far
        self._executed_order = 0  # the order of the last executed one
        self._inbox: deque[tuple[Participant, int, Payload]] = deque()
        self._lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ queries

    def member(self, user_id: int) -> MemberDave | None:
        """The simulated member's DAVE client, when that member is in this channel."""
        found = self.participants.get(user_id)
        return found if isinstance(found, MemberDave) else None

    @property
    def leaves(self) -> dict[int, int]:
        """Leaf index -> user id of the established group (empty while there is none)."""
        return dict(self._leaves)

    def open_frame(self, sender_id: int, payload: bytes) -> OpenedFrame:
        """What the simulated members in the channel make of ``payload`` (one Opus frame's media payload) from
        ``sender_id``: decrypted by the first member that can; plaintext is what they would refuse once the sender
        and at least one of them are in the executed group (then E2EE is on between them)."""
        if payload == OPUS_SILENCE:
            return OpenedFrame(payload, e2ee=False)
        listeners = [m for m in self._members() if m.user_id != sender_id]
        for member in sorted(listeners, key=lambda m: m.user_id not in self.executed):
            try:
                return OpenedFrame(member.decrypt(sender_id, payload), e2ee=True)
            except ValueError:
                continue
        enforced = sender_id in self.executed and any(m.user_id in self.executed for m in listeners)
        if payload.endswith(DAVE_MAGIC_MARKER):
            return OpenedFrame(None, e2ee=True, problem="no member could decrypt it" if enforced else None)
        if enforced:
            return OpenedFrame(None, e2ee=False, problem="it is not end-to-end encrypted while DAVE is on")
        return OpenedFrame(payload, e2ee=False)

    async def wait_executed(self, user_ids: Collection[int], timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until all ``user_ids`` are members as of an executed transition; False after ``timeout`` seconds."""
        wanted = frozenset(user_ids)
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: wanted <= self.executed), timeout)
            except TimeoutError:
                return False
        return True

    def _members(self) -> list[MemberDave]:
        return [p for p in self.participants.values() if isinstance(p, MemberDave)]

    # ------------------------------------------------------------ what happens to the group

    async def connect(self, participant: Participant) -> None:
        """``participant`` joined the channel's media session (replacing a previous one of the same user)."""
        async with self._lock:
            previous = self.participants.get(participant.user_id)
            if previous is not None:
                self._gone(previous.user_id)
            self.participants[participant.user_id] = participant
            if isinstance(participant, MemberDave):  # the bot got op 25 from the gateway, right after op 4
                await self._deliver(participant, EXTERNAL_SENDER, self._sender.package)
            await self._settle()

    async def disconnect(self, participant: Participant) -> None:
        """``participant`` left the media session (left the channel, or its voice connection ended)."""
        async with self._lock:
            if self.participants.get(participant.user_id) is not participant:
                return
            self._gone(participant.user_id)
            await self._settle()

    async def receive(self, participant: Participant, op: int, payload: Payload) -> None:
        """A DAVE op from the bot's voice session (26, 28 binary; 23, 31 JSON)."""
        async with self._lock:
            if self.participants.get(participant.user_id) is not participant:
                return
            self._inbox.append((participant, op, payload))
            await self._settle()

    async def close(self) -> None:
        """Cancel the timers and wait for the work they started; the group is unusable afterwards."""
        if self._round is not None and self._round.timer is not None:
            self._round.timer.cancel()
        for transition in self._transitions.values():
            if transition.timer is not None:
                transition.timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _gone(self, user_id: int) -> None:
        self.participants.pop(user_id, None)
        self._key_packages.pop(user_id, None)
        self.executed -= {user_id}  # until a transition includes whoever comes back
        for transition in self._transitions.values():
            transition.waiting.discard(user_id)  # it will never be ready: do not wait for it
        if self._round is not None and self._round.preferred == user_id:
            self._round.preferred = None  # nobody waits for a commit that cannot come

    async def _settle(self) -> None:
        """Handle queued answers, then start the next round of proposals if something changed; repeat until quiet."""
        while True:
            while self._inbox:
                participant, op, payload = self._inbox.popleft()
                if self.participants.get(participant.user_id) is participant:
                    await self._handle(participant, op, payload)
            for transition_id in [t for t, transition in self._transitions.items() if not transition.waiting]:
                await self._execute(transition_id)
            await self._use_held_commit()
            await self._advance()
            if not self._inbox:
                break
        async with self._changed:
            self._changed.notify_all()

    async def _deliver(self, participant: Participant, op: int, payload: Payload) -> None:
        for answer_op, answer in await participant.deliver(op, payload):
            self._inbox.append((participant, answer_op, answer))

    async def _handle(self, participant: Participant, op: int, payload: Payload) -> None:
        user_id = participant.user_id
        if op == KEY_PACKAGE and isinstance(payload, bytes):
            self._key_package(participant, payload)
        elif op == COMMIT_WELCOME and isinstance(payload, bytes):
            await self._commit(participant, payload)
        elif op == TRANSITION_READY and isinstance(payload, dict):
            transition_id = payload.get("transition_id")
            if isinstance(transition_id, int):
                await self._ready(transition_id, user_id)
            else:
                self._report_from(participant, f"sent op 23 without a transition id: {payload!r}")
        elif op == INVALID_COMMIT_WELCOME and isinstance(payload, dict):
            self._report_from(participant, f"reported transition {payload.get('transition_id')} as invalid (op 31)")
            self._key_packages.pop(user_id, None)  # its new key package follows
            self.executed -= {user_id}
            self._stale.update(leaf for leaf, owner in self._leaves.items() if owner == user_id)
            for transition in self._transitions.values():
                transition.waiting.discard(user_id)
        else:
            _log.debug("DAVE op %s from %s ignored", op, user_id)

    def _report_from(self, participant: Participant, what: str) -> None:
        name = "the bot" if isinstance(participant, RemoteParticipant) else f"member {participant.user_id}"
        self._report(f"DAVE in channel {self.channel_id}: {name} {what}")

    def _key_package(self, participant: Participant, data: bytes) -> None:
        try:
            info = read_key_package(data)
        except MlsError as exc:
            self._report_from(participant, f"sent a key package that is not one (op 26): {exc}")
            return
        if info.user_id != participant.user_id:
            self._report_from(participant, f"sent a key package for user {info.user_id} (op 26)")
            return
        self._key_packages[participant.user_id] = (data, info)
        # a member re-joining with a new key package is removed and added again in the same commit; until then it
        # has no keys of the group
        self._stale.update(leaf for leaf, owner in self._leaves.items() if owner == participant.user_id)
        self.executed -= {participant.user_id}

    # ------------------------------------------------------------ proposals and commits

    async def _advance(self) -> None:
        """Start a round of proposals for what changed, or reset a group left with one member."""
        round_ = self._round
        if round_ is not None and not any(user in self.participants for user in round_.expected):
            if round_.timer is not None:  # everyone it was sent to is gone: nobody will commit it
                round_.timer.cancel()
            self._round = round_ = None
        if round_ is not None:
            return
        connected = set(self.participants)
        pending = [user for user in self._key_packages if user in connected]
        if not self.established:
            if len(pending) >= 2:
                await self._start_round(pending, removes=[], initial=True)
            return
        removes = [leaf for leaf, user in self._leaves.items() if user not in connected or leaf in self._stale]
        staying = [user for leaf, user in self._leaves.items() if leaf not in removes]
        if len(staying) <= 1 and removes:
            await self._reset(staying)
            await self._advance()
        elif removes or pending:
            await self._start_round(pending, removes=removes, initial=False)

    async def _reset(self, staying: list[int]) -> None:
        """The group is down to ``staying`` (one member or none): drop it; a sole member makes a fresh start."""
        self._leaves, self._stale, self.epoch, self.established = {}, set(), 0, False
        self.executed = frozenset()
        self._executed_order = self._announced
        for transition in self._transitions.values():
            if transition.timer is not None:
                transition.timer.cancel()
        self._transitions.clear()
        for user in staying:
            participant = self.participants[user]
            await self._deliver(participant, PREPARE_EPOCH, {"protocol_version": DAVE_PROTOCOL_VERSION, "epoch": 1})
            await self._deliver(participant, PREPARE_TRANSITION, {"protocol_version": DAVE_PROTOCOL_VERSION,
                                                                  "transition_id": 0})  # fmt: skip

    async def _start_round(self, adds: list[int], *, removes: list[int], initial: bool) -> None:
        messages: dict[bytes, bytes] = {}  # ProposalRef -> the proposal's MLSMessage, in proposal order
        proposals: dict[bytes, _Proposal] = {}
        for leaf in removes:
            message, ref = self._sender.remove(self._group_id, self.epoch, leaf)
            messages[ref], proposals[ref] = message, _Proposal(self._leaves[leaf], add=False, leaf=leaf)
        for user in adds:
            key_package = self._key_packages[user][0]
            message, ref = self._sender.add(self._group_id, self.epoch, key_package)
            messages[ref], proposals[ref] = message, _Proposal(user, add=True, key_package=key_package)
        if initial:  # every pending participant gets the Adds of all the others
            recipients = {user: [ref for ref, p in proposals.items() if p.user_id != user] for user in adds}
        else:
            recipients = {user: list(proposals) for leaf, user in self._leaves.items() if leaf not in removes}
        bot = next((u for u in recipients if isinstance(self.participants.get(u), RemoteParticipant)), None)
        expected = {user: frozenset(refs) for user, refs in recipients.items()}
        self._round = _Round(self.epoch, initial, proposals, expected, preferred=bot)
        if bot is not None:
            self._round.timer = asyncio.get_running_loop().call_later(COMMIT_TIMEOUT_S, self._commit_timed_out)
        for user, refs in recipients.items():
            payload = bytes([0]) + vl(b"".join(messages[ref] for ref in refs))  # 0: append
            await self._deliver(self.participants[user], PROPOSALS, payload)

    def _commit_timed_out(self) -> None:
        if self._round is not None:
            self._round.preferred = None
            self._spawn(self._locked_settle())

    async def _locked_settle(self) -> None:
        async with self._lock:
            await self._settle()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _commit(self, participant: Participant, data: bytes) -> None:
        """Op 28: check the commit against the round; hold it while the bot's is awaited; else announce it."""
        round_ = self._round
        if round_ is None or participant.user_id not in round_.expected:
            _log.debug("DAVE: commit from %s with no proposals in flight for it; ignored", participant.user_id)
            return
        try:
            commit, welcome = split_commit_welcome(data)
            problem = self._check_commit(round_, participant.user_id, commit, welcome)
        except MlsError as exc:
            problem = str(exc)
        if problem is not None:
            if round_.preferred == participant.user_id:
                round_.preferred = None
            self._report_from(participant, f"sent a commit the voice gateway refuses (op 28): {problem}")
            return
        if round_.preferred is not None and round_.preferred != participant.user_id:
            round_.held.append((participant, commit, welcome))
            return
        await self._announce(participant, commit, welcome)

    def _check_commit(self, round_: _Round, user_id: int, commit: bytes, welcome: bytes | None) -> str | None:
        info = read_commit(commit)
        if info.group_id != self._group_id or info.epoch != round_.epoch:
            return f"it is for epoch {info.epoch} of group {info.group_id.hex()}, not epoch {round_.epoch}"
        if info.inline_proposals or set(info.proposal_refs) != round_.expected[user_id]:
            return "it does not cover exactly the proposals of this epoch"
        adds = any(round_.proposals[ref].add for ref in info.proposal_refs)
        if adds != (welcome is not None):
            return "a commit adding members needs a welcome, and only such a commit may carry one"
        return None

    async def _use_held_commit(self) -> None:
        round_ = self._round
        if round_ is None or round_.preferred is not None:
            return
        while round_.held and self._round is round_:
            participant, commit, welcome = round_.held.pop(0)
            if self.participants.get(participant.user_id) is participant:
                await self._announce(participant, commit, welcome)

    async def _announce(self, committer: Participant, commit: bytes, welcome: bytes | None) -> None:
        """Apply a valid commit: the new tree, a transition, op 29 to the members that stay, op 30 to new ones."""
        round_ = self._round
        assert round_ is not None
        if round_.timer is not None:
            round_.timer.cancel()
        self._round = None
        info = read_commit(commit)
        leaves = {} if round_.initial else dict(self._leaves)
        if round_.initial:  # the committer made the group: its key package is used up too
            leaves[info.leaf_index] = committer.user_id
            self._key_packages.pop(committer.user_id, None)
        ordered = [round_.proposals[ref] for ref in info.proposal_refs]
        for proposal in ordered:  # RFC 9420 12.3: removes before adds; an add takes the leftmost free leaf
            if not proposal.add and proposal.leaf is not None:
                leaves.pop(proposal.leaf, None)
                self._stale.discard(proposal.leaf)
        welcomed: dict[int, bytes] = {}
        for proposal in ordered:
            if proposal.add:
                leaves[min(set(range(len(leaves) + 1)) - set(leaves))] = proposal.user_id
                welcomed[proposal.user_id] = proposal.key_package
                current = self._key_packages.get(proposal.user_id)
                if current is not None and current[0] == proposal.key_package:
                    del self._key_packages[proposal.user_id]
        self._leaves, self.epoch, self.established = leaves, info.epoch + 1, True
        transition_id = self._last_transition = self._last_transition % 0xFFFF + 1
        members = frozenset(leaves.values())
        connected = [self.participants[user] for user in members if user in self.participants]
        self._announced += 1
        transition = _Transition(self._announced, members, {p.user_id for p in connected})
        self._transitions[transition_id] = transition
        transition.timer = asyncio.get_running_loop().call_later(
            TRANSITION_TIMEOUT_S, lambda: self._spawn(self._locked_execute(transition_id))
        )
        prefix = struct.pack(">H", transition_id)
        # simulated members first: they hold the new keys before the bot can use them
        for participant in sorted(connected, key=lambda p: isinstance(p, RemoteParticipant)):
            user = participant.user_id
            if user in welcomed:
                assert welcome is not None
                own = welcome_for(welcome, read_key_package(welcomed[user]).ref)
                if own is None:
                    self._report_from(committer, f"sent a welcome with no secrets for user {user}")
                    continue
                await self._deliver(participant, WELCOME, prefix + own)
            elif user in round_.expected:
                await self._deliver(participant, ANNOUNCE_COMMIT, prefix + commit)

    # ------------------------------------------------------------ transitions

    async def _ready(self, transition_id: int, user_id: int) -> None:
        transition = self._transitions.get(transition_id)
        if transition is not None:
            transition.waiting.discard(user_id)  # executed by _settle once nobody is waited for

    async def _locked_execute(self, transition_id: int) -> None:
        async with self._lock:
            await self._execute(transition_id)
            await self._settle()

    async def _execute(self, transition_id: int) -> None:
        transition = self._transitions.pop(transition_id, None)
        if transition is None:
            return
        if transition.timer is not None:
            transition.timer.cancel()
        if transition.order > self._executed_order:
            self._executed_order = transition.order
            stale = {self._leaves[leaf] for leaf in self._stale if leaf in self._leaves}
            self.executed = frozenset(u for u in transition.members if u in self.participants and u not in stale)
        for user in sorted(transition.members):
            participant = self.participants.get(user)
            if participant is not None:
                await self._deliver(participant, EXECUTE_TRANSITION, {"transition_id": transition_id})
