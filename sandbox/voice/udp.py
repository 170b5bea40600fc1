"""The sandbox voice server's UDP side: IP discovery and RTP with ``aead_xchacha20_poly1305_rtpsize``.

Wire formats (https://discord.com/developers/docs/topics/voice-connections):

- IP discovery, 74 bytes both ways, big-endian: type (u16: 1 request, 2 response), length (u16, 70), SSRC
  (u32), address (64 bytes, NUL-terminated ASCII), port (u16). The response carries the address and port the
  request came from, which is what the client then announces in SELECT_PROTOCOL; it is sent 20 ms later, like
  over a network (``DISCOVERY_REPLY_DELAY_S`` says why that matters to discord.py).
- RTP: a 12-byte header (``0x80``, payload type ``0x78``, sequence u16, timestamp u32, SSRC u32), then CSRCs
  (4 bytes each) and, with the X bit, a 4-byte extension header. In the ``_rtpsize`` modes all of that is the
  AEAD's additional data and stays clear; the extension body and the Opus frame are encrypted. The packet ends
  with a 4-byte big-endian counter that is the first 4 bytes of the 24-byte XChaCha20 nonce (the rest zero).
  This is exactly what discord.py's ``VoiceClient._encrypt_aead_xchacha20_poly1305_rtpsize`` produces.

Packets are read by a dedicated thread so that each arrival time is taken when the datagram is read
(``time.monotonic()``, the clock of the asyncio loop), not when a busy event loop gets round to it; the thread
hands each packet to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import nacl.exceptions
import nacl.secret

_log = logging.getLogger(__name__)

MODE = "aead_xchacha20_poly1305_rtpsize"
RTP_HEADER = struct.Struct(">BBHII")  # version/flags, marker/payload type, sequence, timestamp, ssrc
RTP_PAYLOAD_TYPE_OPUS = 0x78
DISCOVERY = struct.Struct(">HHI64sH")  # type, length, ssrc, address, port: 74 bytes
NONCE_SUFFIX = 4  # bytes of the nonce counter appended to each packet
EXTENSION_PROFILE = b"\xbe\xde"  # RFC 8285 one-byte-header extensions, as Discord uses
MAX_DATAGRAM = 2048
# IP discovery is answered after a network-like delay. discord.py 2.7.1 registers its reply listener just after
# sending the request, while its socket reader thread may already sit in select() from an earlier read: a reply
# that beats the registration is read and dropped, and the handshake hangs (seen on reconnects after a move).
DISCOVERY_REPLY_DELAY_S = 0.02


class RtpError(ValueError):
    """A datagram that is not a valid RTP packet for the session (too short, bad version, fails to decrypt)."""


@dataclass(frozen=True)
class RtpPacket:
    """A decrypted RTP packet: ``payload`` is the Opus frame (the header extension body already removed)."""

    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


def discovery_request_ssrc(data: bytes) -> int | None:
    """The SSRC of an IP discovery request, or None if ``data`` is not one."""
    if len(data) != DISCOVERY.size:
        return None
    kind, length, ssrc, _, _ = DISCOVERY.unpack(data)
    return ssrc if kind == 1 and length == 70 else None


def discovery_response(ssrc: int, address: str, port: int) -> bytes:
    """The 74-byte IP discovery response telling a client its external ``address``:``port``."""
    return DISCOVERY.pack(2, 70, ssrc, address.encode("ascii"), port)


def rtp_ssrc(data: bytes) -> int | None:
    """The SSRC of an RTP packet (version 2, Opus payload type), or None for anything else (e.g. RTCP)."""
    if len(data) < RTP_HEADER.size or data[0] >> 6 != 2 or data[1] & 0x7F != RTP_PAYLOAD_TYPE_OPUS:
        return None
    return struct.unpack_from(">I", data, 8)[0]


def open_rtp(data: bytes, key: bytes) -> RtpPacket:
    """Decrypt an ``aead_xchacha20_poly1305_rtpsize`` packet with the session's 32-byte ``key``.

    Raises RtpError when the packet is malformed or does not authenticate (wrong key, tampered header).
    """
    if len(data) < RTP_HEADER.size + NONCE_SUFFIX + nacl.secret.Aead.MACBYTES:
        raise RtpError(f"RTP packet too short ({len(data)} bytes)")
    flags, _, sequence, timestamp, ssrc = RTP_HEADER.unpack_from(data)
    if flags >> 6 != 2:
        raise RtpError(f"RTP version {flags >> 6}, expected 2")
    clear = RTP_HEADER.size + 4 * (flags & 0x0F)  # fixed header + CSRCs
    has_extension = bool(flags & 0x10)
    if has_extension:
        clear += 4  # the extension header (profile, length in words) stays clear in the rtpsize modes
    if len(data) < clear + NONCE_SUFFIX + nacl.secret.Aead.MACBYTES:
        raise RtpError("RTP packet shorter than its header")
    nonce = data[-NONCE_SUFFIX:] + bytes(nacl.secret.Aead.NONCE_SIZE - NONCE_SUFFIX)
    try:
        plain = nacl.secret.Aead(key).decrypt(data[clear:-NONCE_SUFFIX], data[:clear], nonce)
    except nacl.exceptions.CryptoError as exc:
        raise RtpError(f"RTP packet from SSRC {ssrc} does not decrypt: {exc}") from None
    if has_extension:
        words = struct.unpack_from(">H", data, clear - 2)[0]
        plain = plain[4 * words :]
    return RtpPacket(sequence, timestamp, ssrc, plain)


def seal_rtp(packet: RtpPacket, key: bytes, counter: int, *, extension: bytes | None = None) -> bytes:
    """Encrypt ``packet`` in ``aead_xchacha20_poly1305_rtpsize``; ``counter`` is the u32 nonce counter.

    Without ``extension`` the packet is what a client such as discord.py sends (no CSRCs, no extension). With
    ``extension`` (the body of a one-byte-header RTP extension, RFC 8285 profile ``0xBEDE``, a multiple of 4 bytes)
    the X bit is set and the 4-byte extension header stays clear while the body is encrypted with the payload,
    as in the packets Discord relays. The inverse of ``open_rtp``, for whatever sends RTP (tests, simulated
    speakers). Raises ValueError for an extension body that is not a multiple of 4 bytes.
    """
    flags = 0x80
    clear_extension = b""
    plain = packet.payload
    if extension is not None:
        if len(extension) % 4:
            raise ValueError(f"an RTP extension body is whole 32-bit words, got {len(extension)} bytes")
        flags |= 0x10
        clear_extension = EXTENSION_PROFILE + struct.pack(">H", len(extension) // 4)
        plain = extension + packet.payload
    header = RTP_HEADER.pack(flags, RTP_PAYLOAD_TYPE_OPUS, packet.sequence, packet.timestamp, packet.ssrc)
    header += clear_extension
    suffix = struct.pack(">I", counter & 0xFFFFFFFF)
    nonce = suffix + bytes(nacl.secret.Aead.NONCE_SIZE - NONCE_SUFFIX)
    return header + nacl.secret.Aead(key).encrypt(plain, header, nonce).ciphertext + suffix


DatagramHandler = Callable[[bytes, tuple[str, int], float], None]


class UdpEndpoint:
    """A UDP socket on 127.0.0.1 answering IP discovery itself and handing every other datagram to the loop.

    ``on_datagram(data, addr, arrival)`` runs on the event loop; ``arrival`` is ``time.monotonic()`` (seconds,
    the loop's clock) taken in the reader thread right after the datagram was read.
    """

    def __init__(self, on_datagram: DatagramHandler) -> None:
        self._on_datagram = on_datagram
        self._sock: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None  # close() writes to [1] to end select()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._replies: set[asyncio.TimerHandle] = set()  # delayed discovery replies, cancelled by close()
        self.port = 0

    def start(self) -> None:
        """Bind 127.0.0.1 on a random port and start the reader thread; raises OSError if binding fails."""
        self._loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self._wake = socket.socketpair()
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._read, name=f"sandbox-voice-udp:{self.port}", daemon=True)
        self._thread.start()

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send one datagram (thread-safe); errors such as an unreachable peer are logged, not raised."""
        if self._sock is None:
            return
        try:
            self._sock.sendto(data, addr)
        except OSError as exc:
            _log.debug("voice UDP send to %s failed: %s", addr, exc)

    async def close(self) -> None:
        """Stop the reader thread (waited for in a worker thread) and close the sockets; safe to call twice."""
        for handle in self._replies:
            handle.cancel()
        self._replies.clear()
        if self._thread is not None and self._wake is not None:
            self._stopping.set()
            self._wake[1].send(b"x")
            await asyncio.to_thread(self._thread.join, 2.0)
            self._thread = None
        for sock in (self._sock, *(self._wake or ())):
            if sock is not None:
                sock.close()
        self._sock = self._wake = None

    def _read(self) -> None:
        sock, loop, wake = self._sock, self._loop, self._wake
        assert sock is not None and loop is not None and wake is not None
        while not self._stopping.is_set():
            readable, _, _ = select.select([sock, wake[0]], [], [])
            if sock not in readable:
                continue
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except OSError as exc:  # e.g. ICMP port unreachable reported on a later read
                _log.debug("voice UDP read failed: %s", exc)
                continue
            arrival = time.monotonic()
            ssrc = discovery_request_ssrc(data)
            try:
                if ssrc is not None:
                    loop.call_soon_threadsafe(self._reply_later, discovery_response(ssrc, *addr), addr)
                else:
                    loop.call_soon_threadsafe(self._on_datagram, data, addr, arrival)
            except RuntimeError:  # the loop is closed: the sandbox is going away
                return

    def _reply_later(self, data: bytes, addr: tuple[str, int]) -> None:
        """On the loop: send an IP discovery reply after DISCOVERY_REPLY_DELAY_S (see there why)."""

        def reply() -> None:
            self._replies.discard(handle)
            self.send(data, addr)

        handle = asyncio.get_running_loop().call_later(DISCOVERY_REPLY_DELAY_S, reply)
        self._replies.add(handle)
