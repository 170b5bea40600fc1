"""A voice channel's DAVE group as the sandbox's voice gateway runs it (``sandbox.voice.dave``), without sockets.

Participants are simulated members (``MemberDave``, each with its own ``davey.DaveSession``) and, where the bot's
part matters, a bot driven by hand here: a ``davey.DaveSession`` answering the gateway's ops as discord.py 2.7.1
does, through a ``RemoteParticipant``, so that its answers can be withheld or spoiled.
"""

from __future__ import annotations

import struct
from typing import Any

import davey
import pytest

from sandbox.voice import dave
from sandbox.voice.dave import DaveGroup, MemberDave, RemoteParticipant
from sandbox.voice.mls import (
    ExternalSender,
    MlsError,
    group_id_of,
    read_key_package,
    split_commit_welcome,
    vl,
    welcome_for,
)

CHANNEL = 777
BOT, ALICE, BOB, CAROL = 42, 1001, 1002, 1003
OPUS = b"\xfc\xff\xfe" + bytes(range(40))  # any bytes do: DAVE encrypts opaque frames


class Channel:
    """A group, the users in the channel (what CLIENTS_CONNECT told) and the error reports."""

    def __init__(self) -> None:
        self.sender = ExternalSender()
        self.reports: list[str] = []
        self.group = DaveGroup(CHANNEL, self.sender, self.reports.append)
        self.present: set[int] = set()

    async def join(self, user_id: int, member: type[MemberDave] = MemberDave) -> MemberDave:
        self.present.add(user_id)
        client = member(user_id, CHANNEL, lambda: self.present)
        await self.group.connect(client)
        return client

    async def leave(self, user_id: int) -> None:
        self.present.discard(user_id)
        await self.group.disconnect(self.group.participants[user_id])


class HandDrivenBot:
    """The bot's DAVE side as discord.py 2.7.1 runs it, one step at a time: ``answer`` handles what the gateway sent
    (ops 27, 29, 30, 24, 21, 22) and sends discord.py's answers (26, 28, 23, 31)."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.session = davey.DaveSession(1, BOT, CHANNEL)
        self.inbox: list[tuple[int, Any]] = []
        self.participant = RemoteParticipant(BOT, self._receive)

    async def _receive(self, op: int, payload: Any) -> None:
        self.inbox.append((op, payload))

    async def join(self) -> None:
        """Connect after op 4: the gateway sent op 25, discord.py answers with its key package (op 26)."""
        self.channel.present.add(BOT)
        await self.channel.group.connect(self.participant)
        self.session.set_external_sender(self.channel.sender.package)
        await self.send(26, self.session.get_serialized_key_package())

    async def send(self, op: int, payload: Any) -> None:
        await self.channel.group.receive(self.participant, op, payload)

    async def answer(self, *, commit: bool = True) -> list[int]:
        """Handle every op received so far; returns their opcodes. ``commit``: send the commits it makes."""
        seen = []
        while self.inbox:
            op, payload = self.inbox.pop(0)
            seen.append(op)
            if op == 27:
                result = self.session.process_proposals(davey.ProposalsOperationType.append, payload[1:])
                if result is not None and commit:
                    await self.send(28, result.commit + (result.welcome or b""))
            elif op in (29, 30):
                transition_id = struct.unpack_from(">H", payload)[0]
                try:
                    (self.session.process_commit if op == 29 else self.session.process_welcome)(payload[2:])
                except ValueError:
                    await self.send(31, {"transition_id": transition_id})
                    self.session.reinit(1, BOT, CHANNEL)
                    await self.send(26, self.session.get_serialized_key_package())
                else:
                    await self.send(23, {"transition_id": transition_id})
            elif op == 24 and payload["epoch"] == 1:
                self.session.reinit(1, BOT, CHANNEL)
                await self.send(26, self.session.get_serialized_key_package())
        return seen


def assert_one_group(channel: Channel, *members: MemberDave) -> None:
    """Every member is ready in the gateway's epoch, at the leaf the gateway thinks, and they hear each other."""
    group = channel.group
    for member in members:
        assert member.ready and member.epoch == group.epoch
        assert group.leaves[member.leaf_index] == member.user_id
    for sender in members:
        frame = sender.encrypt(OPUS)
        assert frame is not None and frame.endswith(b"\xfa\xfa")
        for receiver in members:
            if receiver is not sender:
                assert receiver.decrypt(sender.user_id, frame) == OPUS


async def test_members_make_the_group_and_it_follows_joins_and_departures() -> None:
    channel = Channel()
    alice = await channel.join(ALICE)
    assert not alice.ready and not channel.group.established  # alone: no group to hold keys for
    assert alice.encrypt(OPUS) is None  # so nothing is sent
    bob = await channel.join(BOB)
    assert_one_group(channel, alice, bob)
    assert channel.group.epoch == 1 and channel.group.executed == {ALICE, BOB}
    carol = await channel.join(CAROL)
    assert_one_group(channel, alice, bob, carol)
    assert channel.group.epoch == 2
    await channel.leave(BOB)  # a Remove; carol keeps leaf 2, leaf 1 is free
    assert_one_group(channel, alice, carol)
    assert channel.group.leaves == {0: ALICE, 2: CAROL} and channel.group.executed == {ALICE, CAROL}
    bob = await channel.join(BOB)  # the leftmost free leaf
    assert channel.group.leaves == {0: ALICE, 1: BOB, 2: CAROL}
    assert_one_group(channel, alice, bob, carol)
    assert channel.reports == []


async def test_a_member_whose_client_starts_again_is_removed_and_added_in_one_commit() -> None:
    channel = Channel()
    alice, _ = await channel.join(ALICE), await channel.join(BOB)
    carol = await channel.join(CAROL)
    epoch = channel.group.epoch
    bob = MemberDave(BOB, CHANNEL, lambda: channel.present)  # e.g. bob's client reconnected: a new session
    await channel.group.connect(bob)
    assert channel.group.epoch == epoch + 1 and channel.group.leaves == {0: ALICE, 1: BOB, 2: CAROL}
    assert_one_group(channel, alice, bob, carol)
    assert channel.group.executed == {ALICE, BOB, CAROL} and channel.reports == []


async def test_a_sole_member_is_reset_and_starts_again_with_the_next() -> None:
    channel = Channel()
    alice = await channel.join(ALICE)
    await channel.join(BOB)
    await channel.leave(BOB)
    assert not channel.group.established and not alice.ready and channel.group.executed == frozenset()
    bob = await channel.join(BOB)  # a fresh group: epoch 1 again
    assert_one_group(channel, alice, bob)
    assert channel.group.epoch == 1


async def test_the_bot_commits_the_add_of_a_member_joining() -> None:
    channel = Channel()
    alice = await channel.join(ALICE)
    bot = HandDrivenBot(channel)
    await bot.join()  # pending with alice: both get the other's Add, the bot's commit is awaited
    assert await bot.answer() == [27, 29, 22]  # its commit announced back, alice welcomed, the transition executed
    assert bot.session.ready and channel.group.executed == {ALICE, BOT}
    assert alice.decrypt(BOT, bot.session.encrypt_opus(OPUS)) == OPUS
    await channel.join(BOB)
    assert await bot.answer() == [27, 29, 22]  # Add(bob), its own commit announced, the transition executed
    assert channel.group.executed == {ALICE, BOB, BOT} and sorted(map(int, bot.session.get_user_ids())) == [
        BOT, ALICE, BOB]  # fmt: skip
    assert channel.reports == []


async def test_a_bot_joining_an_established_group_is_welcomed_by_a_members_commit() -> None:
    channel = Channel()
    await channel.join(ALICE)
    await channel.join(BOB)
    bot = HandDrivenBot(channel)
    await bot.join()
    assert await bot.answer() == [30, 22]  # it was not sent the proposals: alice committed, the bot got a Welcome
    assert bot.session.ready and bot.session.epoch == channel.group.epoch == 2


async def test_without_the_bots_commit_a_members_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dave, "COMMIT_TIMEOUT_S", 0.05)
    channel = Channel()
    alice = await channel.join(ALICE)
    bot = HandDrivenBot(channel)
    await bot.join()
    await bot.answer()
    bob = await channel.join(BOB)
    assert await bot.answer(commit=False) == [27]  # a bot that never commits...
    assert not bob.ready
    assert await channel.group.wait_executed({BOB}, timeout=5)  # ...only delays it: alice's commit is announced
    assert await bot.answer() == [29, 22]
    assert bot.session.ready and bob.decrypt(BOT, bot.session.encrypt_opus(OPUS)) == OPUS
    assert alice.ready and channel.reports == []


async def test_an_invalid_commit_from_the_bot_is_reported_and_a_members_is_used() -> None:
    channel = Channel()
    await channel.join(ALICE)
    bot = HandDrivenBot(channel)
    await bot.join()
    await bot.answer()
    bob = await channel.join(BOB)
    assert (await bot.answer(commit=False)) == [27]
    await bot.send(28, b"\x00\x01\x00\x01 not a commit")
    assert len(channel.reports) == 1 and "the bot sent a commit the voice gateway refuses (op 28)" in channel.reports[0]
    assert await bot.answer() == [29, 22]  # alice's commit, which the bot processes although it made its own
    assert bob.ready and bot.session.ready


async def test_a_member_that_cannot_use_its_welcome_reports_it_and_is_added_again() -> None:
    class SpoiledFirstWelcome(MemberDave):
        spoiled = False

        async def deliver(self, op: int, payload: Any) -> list[Any]:
            if op == 30 and not self.spoiled:
                self.spoiled = True
                payload = payload[:-20] + bytes(20)  # the encrypted group info no longer authenticates
            return await super().deliver(op, payload)

    channel = Channel()
    alice = await channel.join(ALICE)
    bob = await channel.join(BOB)
    carol = await channel.join(CAROL, SpoiledFirstWelcome)  # op 31 and a new key package: Remove + Add, one commit
    assert len(channel.reports) == 1 and "member 1003 reported transition 2 as invalid (op 31)" in channel.reports[0]
    assert_one_group(channel, alice, bob, carol)
    assert channel.group.epoch == 3 and channel.group.leaves == {0: ALICE, 1: BOB, 2: CAROL}


async def test_a_key_package_that_is_not_the_senders_is_refused() -> None:
    channel = Channel()
    bot = HandDrivenBot(channel)
    await bot.join()
    someone_else = davey.DaveSession(1, ALICE, CHANNEL).get_serialized_key_package()
    await bot.send(26, someone_else)
    await bot.send(26, b"\x00\x01")
    assert [r.split(": ", 1)[1] for r in channel.reports] == [
        f"the bot sent a key package for user {ALICE} (op 26)",
        "the bot sent a key package that is not one (op 26): truncated MLS message: wanted 2 bytes at offset 2 of 2",
    ]


async def test_what_members_make_of_the_bots_frames() -> None:
    channel = Channel()
    await channel.join(ALICE)
    bot = HandDrivenBot(channel)
    await bot.join()
    plain = channel.group.open_frame(BOT, OPUS)  # before the group: what the bot sends is not for anyone yet
    assert (plain.opus, plain.e2ee, plain.problem) == (OPUS, False, None)
    await bot.answer()
    await bot.answer()
    opened = channel.group.open_frame(BOT, bot.session.encrypt_opus(OPUS))
    assert (opened.opus, opened.e2ee, opened.problem) == (OPUS, True, None)
    refused = channel.group.open_frame(BOT, OPUS)
    assert (refused.opus, refused.problem) == (None, "it is not end-to-end encrypted while DAVE is on")
    assert channel.group.open_frame(BOT, b"\xf8\xff\xfe").opus == b"\xf8\xff\xfe"  # silence: DAVE's exception
    tampered = bytearray(bot.session.encrypt_opus(OPUS))
    tampered[0] ^= 0xFF
    assert channel.group.open_frame(BOT, bytes(tampered)).problem == "no member could decrypt it"


def test_commit_and_welcome_are_split_where_the_commit_ends() -> None:
    sender = ExternalSender()
    sessions = [davey.DaveSession(1, user, CHANNEL) for user in (BOT, ALICE, BOB)]
    for session in sessions:
        session.set_external_sender(sender.package)
    key_packages = [s.get_serialized_key_package() for s in sessions[1:]]  # a new one on each call
    adds = [sender.add(group_id_of(CHANNEL), 0, key_package)[0] for key_package in key_packages]
    result = sessions[0].process_proposals(davey.ProposalsOperationType.append, vl(b"".join(adds)))
    assert result is not None and result.welcome is not None
    commit, welcome = split_commit_welcome(result.commit + result.welcome)
    assert (commit, welcome) == (result.commit, result.welcome)
    assert split_commit_welcome(result.commit) == (result.commit, None)
    with pytest.raises(MlsError, match="truncated"):
        split_commit_welcome(result.commit[:-3])
    for session, key_package in zip(sessions[1:], key_packages, strict=True):  # op 30: only its own secrets
        own = welcome_for(welcome, read_key_package(key_package).ref)
        assert own is not None and len(own) < len(welcome)
        session.process_welcome(own)
        assert session.ready
