"""The MLS (RFC 9420) messages Discord's voice gateway reads and writes for DAVE, in their wire format.

DAVE (https://daveprotocol.com, protocol version 1) uses MLS 1.0 with ciphersuite 2 (P-256, AES-128-GCM,
SHA-256). The members' MLS clients (``davey.DaveSession``) do the cryptography; the voice gateway is the group's
*delivery service* and *external sender*: it signs Add and Remove proposals with its own P-256 key, checks and
relays commits, and hands each welcomed member its part of a Welcome. For that it reads a few structures:

- a KeyPackage (the member's op 26): the basic credential's identity, the member's user id as 8 big-endian bytes;
- a Commit in a PublicMessage (op 28): its epoch, its sender, the proposal references it covers, and where it ends,
  because discord.py sends the Welcome right behind it with no length prefix;
- a Welcome: its group secrets, one per new member, found by KeyPackageRef.

Everything is TLS presentation language with MLS's variable-length vectors (RFC 9420 section 2.1.2). Parsing
errors raise ``MlsError``; nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

MLS10 = 1
CIPHERSUITE = 2  # MLS_128_DHKEMP256_AES128GCM_SHA256_P256, DAVE protocol version 1
WIRE_PUBLIC_MESSAGE = 1
SENDER_MEMBER, SENDER_EXTERNAL = 1, 2
CONTENT_PROPOSAL, CONTENT_COMMIT = 2, 3
PROPOSAL_ADD, PROPOSAL_REMOVE = 1, 3
PROPOSAL_INLINE, PROPOSAL_REFERENCE = 1, 2
CREDENTIAL_BASIC = 1
LEAF_SOURCE_KEY_PACKAGE, LEAF_SOURCE_UPDATE, LEAF_SOURCE_COMMIT = 1, 2, 3


class MlsError(ValueError):
    """Bytes that are not the MLS structure expected (truncated, wrong version or ciphersuite, trailing data)."""


def vl(data: bytes) -> bytes:
    """An MLS variable-length vector: a 1, 2 or 4-byte length header (QUIC-style varint), then ``data``."""
    n = len(data)
    if n < 1 << 6:
        return bytes([n]) + data
    if n < 1 << 14:
        return struct.pack(">H", 0x4000 | n) + data
    if n < 1 << 30:
        return struct.pack(">I", 0x80000000 | n) + data
    raise MlsError(f"a vector of {n} bytes is too long for MLS")


def ref_hash(label: bytes, value: bytes) -> bytes:
    """RFC 9420 RefHash with SHA-256 (ciphersuite 2): a KeyPackageRef or ProposalRef."""
    return hashlib.sha256(vl(b"MLS 1.0 " + label) + vl(value)).digest()


class Reader:
    """Reads TLS-presentation values from ``data``, raising MlsError when it runs short."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MlsError(f"truncated MLS message: wanted {n} bytes at offset {self.pos} of {len(self.data)}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self) -> bytes:
        first = self.uint(1)
        prefix = first >> 6
        if prefix == 0:
            n = first
        elif prefix == 1:
            n = ((first & 0x3F) << 8) | self.uint(1)
        elif prefix == 2:
            n = ((first & 0x3F) << 24) | self.uint(3)
        else:
            raise MlsError("invalid MLS vector length header")
        return self.take(n)

    def done(self) -> bool:
        return self.pos == len(self.data)


def _credential_identity(r: Reader) -> bytes:
    kind = r.uint(2)
    if kind != CREDENTIAL_BASIC:
        raise MlsError(f"credential type {kind}; DAVE uses basic credentials only")
    return r.vector()


def _skip_leaf_node(r: Reader) -> bytes:
    """Read a LeafNode; returns its credential's identity."""
    r.vector()  # encryption_key
    r.vector()  # signature_key
    identity = _credential_identity(r)
    for _ in range(5):  # capabilities: versions, cipher_suites, extensions, proposals, credentials
        r.vector()
    source = r.uint(1)
    if source == LEAF_SOURCE_KEY_PACKAGE:
        r.take(16)  # lifetime: not_before, not_after
    elif source == LEAF_SOURCE_COMMIT:
        r.vector()  # parent_hash
    elif source != LEAF_SOURCE_UPDATE:
        raise MlsError(f"unknown leaf node source {source}")
    r.vector()  # extensions
    r.vector()  # signature
    return identity


@dataclass(frozen=True)
class KeyPackageInfo:
    """What the voice gateway checks of a member's KeyPackage: its owner and its KeyPackageRef."""

    user_id: int
    ref: bytes


def read_key_package(data: bytes) -> KeyPackageInfo:
    """Parse a bare KeyPackage (what discord.py 2.7.1 sends as op 26). Raises MlsError when it is not one, uses
    another ciphersuite, or its credential is not an 8-byte user id."""
    r = Reader(data)
    version, suite = r.uint(2), r.uint(2)
    if version != MLS10 or suite != CIPHERSUITE:
        raise MlsError(f"key package for MLS version {version}, ciphersuite {suite}; DAVE v1 needs 1 and 2")
    r.vector()  # init_key
    identity = _skip_leaf_node(r)
    r.vector()  # extensions
    r.vector()  # signature
    if not r.done():
        raise MlsError("trailing bytes after the key package")
    if len(identity) != 8:
        raise MlsError(f"credential identity of {len(identity)} bytes; DAVE's is the 8-byte user id")
    return KeyPackageInfo(int.from_bytes(identity, "big"), ref_hash(b"KeyPackage Reference", data))


@dataclass(frozen=True)
class CommitInfo:
    """A Commit as the voice gateway checks it: group, epoch, the committer's leaf, the proposals it references."""

    group_id: bytes
    epoch: int
    leaf_index: int
    proposal_refs: tuple[bytes, ...]
    inline_proposals: int


def split_commit_welcome(data: bytes) -> tuple[bytes, bytes | None]:
    """Split op 28's payload: an MLSMessage holding a Commit, then (when it adds members) a bare Welcome with no
    length prefix. Raises MlsError when the commit cannot be read."""
    r = Reader(data)
    _read_commit(r)
    return data[: r.pos], (data[r.pos :] or None)


def read_commit(message: bytes) -> CommitInfo:
    """Parse an MLSMessage PublicMessage carrying a Commit from a member; raises MlsError for anything else."""
    r = Reader(message)
    info = _read_commit(r)
    if not r.done():
        raise MlsError("trailing bytes after the commit")
    return info


def _read_commit(r: Reader) -> CommitInfo:
    version, wire_format = r.uint(2), r.uint(2)
    if version != MLS10 or wire_format != WIRE_PUBLIC_MESSAGE:
        raise MlsError(f"expected an MLS 1.0 PublicMessage, got version {version}, wire format {wire_format}")
    group_id, epoch = r.vector(), r.uint(8)
    sender_type = r.uint(1)
    if sender_type != SENDER_MEMBER:
        raise MlsError(f"commit from sender type {sender_type}; DAVE commits come from members")
    leaf_index = r.uint(4)
    r.vector()  # authenticated_data
    if r.uint(1) != CONTENT_COMMIT:
        raise MlsError("the PublicMessage does not carry a commit")
    proposals = Reader(r.vector())
    refs: list[bytes] = []
    inline = 0
    while not proposals.done():
        kind = proposals.uint(1)
        if kind == PROPOSAL_REFERENCE:
            refs.append(proposals.vector())
        elif kind == PROPOSAL_INLINE:
            inline += 1
            _skip_proposal(proposals)
        else:
            raise MlsError(f"unknown ProposalOrRef type {kind}")
    if r.uint(1):  # optional<UpdatePath>
        _skip_leaf_node(r)
        r.vector()  # nodes
    r.vector()  # signature
    r.vector()  # confirmation_tag
    r.vector()  # membership_tag (sender is a member)
    return CommitInfo(group_id, epoch, leaf_index, tuple(refs), inline)


def _skip_proposal(r: Reader) -> None:
    kind = r.uint(2)
    if kind == PROPOSAL_ADD:
        _skip_key_package(r)
    elif kind == PROPOSAL_REMOVE:
        r.take(4)
    else:
        raise MlsError(f"proposal type {kind}; DAVE allows only add and remove")


def _skip_key_package(r: Reader) -> None:
    r.take(4)
    r.vector()
    _skip_leaf_node(r)
    r.vector()
    r.vector()


def welcome_for(welcome: bytes, key_package_ref: bytes) -> bytes | None:
    """The Welcome with only the group secrets for the member whose KeyPackageRef is ``key_package_ref`` (what
    op 30 carries), or None when the Welcome has none for them. Raises MlsError for a malformed Welcome."""
    r = Reader(welcome)
    suite = r.uint(2)
    if suite != CIPHERSUITE:
        raise MlsError(f"welcome for ciphersuite {suite}; DAVE v1 uses {CIPHERSUITE}")
    secrets = Reader(r.vector())
    group_info = r.vector()
    if not r.done():
        raise MlsError("trailing bytes after the welcome")
    while not secrets.done():
        start = secrets.pos
        new_member = secrets.vector()
        secrets.vector()  # kem_output
        secrets.vector()  # ciphertext
        if new_member == key_package_ref:
            entry = secrets.data[start : secrets.pos]
            return struct.pack(">H", suite) + vl(entry) + vl(group_info)
    return None


class ExternalSender:
    """The voice gateway's MLS identity: a P-256 signing key and a basic credential, made fresh for each sandbox.

    ``package`` is op 25's payload; ``add`` and ``remove`` build external proposals (MLSMessage PublicMessages
    signed with the key, sender ``external`` #0), each returned with its ProposalRef.
    """

    IDENTITY = b"discord-sandbox-voice-gateway"

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        public = self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.package = vl(public) + struct.pack(">H", CREDENTIAL_BASIC) + vl(self.IDENTITY)

    def add(self, group_id: bytes, epoch: int, key_package: bytes) -> tuple[bytes, bytes]:
        """(MLSMessage, ProposalRef) of an external Add of ``key_package`` to the group at ``epoch``."""
        return self._proposal(group_id, epoch, struct.pack(">H", PROPOSAL_ADD) + key_package)

    def remove(self, group_id: bytes, epoch: int, leaf_index: int) -> tuple[bytes, bytes]:
        """(MLSMessage, ProposalRef) of an external Remove of the member at ``leaf_index``."""
        return self._proposal(group_id, epoch, struct.pack(">HI", PROPOSAL_REMOVE, leaf_index))

    def _proposal(self, group_id: bytes, epoch: int, proposal: bytes) -> tuple[bytes, bytes]:
        # FramedContent: group id, epoch, sender external #0, no authenticated data, a proposal
        content = vl(group_id) + struct.pack(">QBI", epoch, SENDER_EXTERNAL, 0) + vl(b"")
        content += bytes([CONTENT_PROPOSAL]) + proposal
        framed = struct.pack(">HH", MLS10, WIRE_PUBLIC_MESSAGE) + content
        to_sign = vl(b"MLS 1.0 FramedContentTBS") + vl(framed)  # SignWithLabel(FramedContentTBS)
        signature = vl(self._key.sign(to_sign, ec.ECDSA(hashes.SHA256())))
        authenticated_content = struct.pack(">H", WIRE_PUBLIC_MESSAGE) + content + signature
        return framed + signature, ref_hash(b"Proposal Reference", authenticated_content)


def group_id_of(channel_id: int) -> bytes:
    """DAVE's MLS group id: the voice channel's id as 8 big-endian bytes."""
    return struct.pack(">Q", channel_id)
