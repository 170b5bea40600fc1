"""Shared fixtures, and the lane of every test (tests/support/lanes.py)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import discord.gateway
import discord.http
import httpx
import pytest

from tests.fakes.ollama import FakeOllama
from tests.support.lanes import VOICE, forbid_model_loads, forbid_voice, lane_of

if TYPE_CHECKING:
    from sandbox import Sandbox
    from services.speech.stt import FasterWhisperTranscriber
    from services.speech.tts import PiperSynthesizer

REAL_BASE = discord.http.Route.BASE
REAL_GATEWAY = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
TESTS = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects by the markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test gets the marker of its lane, from its folder, its fixtures and its own markers."""
    for item in items:
        path = item.path.relative_to(TESTS) if item.path.is_relative_to(TESTS) else Path(item.path.name)
        marked = [mark.name for mark in item.iter_markers()]
        item.add_marker(lane_of(path, getattr(item, "fixturenames", ()), marked))


@pytest.fixture(autouse=True)
def _each_test_stays_in_its_lane(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test loads no speech model; a sandbox or e2e test not marked voice uses no voice."""
    node = request.node
    if node.get_closest_marker("unit") is not None:
        forbid_model_loads(monkeypatch, node.nodeid)
    elif node.get_closest_marker(VOICE) is None and any(node.get_closest_marker(lane) for lane in ("sandbox", "e2e")):
        forbid_voice(monkeypatch, node.nodeid)


@pytest.fixture(scope="module")
def tiny() -> FasterWhisperTranscriber:
    """The bundled Whisper tiny.en, loaded once per test module."""
    from services.speech.stt import FasterWhisperTranscriber

    transcriber = FasterWhisperTranscriber()
    transcriber.load()
    return transcriber


@pytest.fixture(scope="module")
def joe() -> PiperSynthesizer:
    """The bundled Piper voice (en_US-joe-medium), loaded once per test module (about 1.5 s)."""
    from services.speech.tts import PiperSynthesizer

    synthesizer = PiperSynthesizer()
    synthesizer.load()
    return synthesizer


@pytest.fixture
async def ollama() -> AsyncIterator[FakeOllama]:
    """A FakeOllama on a random loopback port, with llama3.2 and nomic-embed-text pulled; stopped afterwards."""
    fake = FakeOllama()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """A started Sandbox with discord.py pointed at it (``install``), with no bot connected; stopped afterwards,
    and then discord.py's REST base and gateway URL must be the real ones again."""
    from sandbox import Sandbox  # imported here: the sandbox pulls in audio libraries most tests do not need

    async with Sandbox() as started:
        yield started
    assert discord.http.Route.BASE == REAL_BASE
    assert discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY == REAL_GATEWAY


# `chroma run` with a watchdog thread: the server exits when its stdin reaches end of file, which happens when the
# test run ends, however it ends (killed included), so no server outlives the tests. The Rust server releases the
# GIL, so the thread runs. This is the venv's `chroma` console script plus that thread.
CHROMA_RUN = """\
import os, sys, threading
threading.Thread(target=lambda: (sys.stdin.buffer.read(), os._exit(0)), daemon=True).start()
from chromadb.cli.cli import app
app()
"""


@dataclass
class ChromaServer:
    """A running ChromaDB server: ``host``, ``port``, its data folder ``path`` and its output ``log``."""

    host: str
    port: int
    path: Path
    log: Path

    def delete_collections(self) -> None:
        """Delete every collection, so that each test starts from an empty server."""
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        client = chromadb.HttpClient(host=self.host, port=self.port,
                                     settings=ChromaSettings(anonymized_telemetry=False))
        try:
            for collection in client.list_collections():
                client.delete_collection(collection.name)
        finally:
            client.close()


def free_port() -> int:
    """A TCP port nothing listens on at the moment, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """A real ChromaDB server (``chroma run`` of the installed chromadb) on a free loopback port with a temporary
    ``--path``, started once per test session and ready (its heartbeat answers); stopped at the end."""
    folder = tmp_path_factory.mktemp("chroma-server")
    server = ChromaServer("127.0.0.1", free_port(), folder / "data", folder / "server.log")
    with server.log.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", CHROMA_RUN, "run", "--path", str(server.path), "--host", server.host,
             "--port", str(server.port)],
            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://{server.host}:{server.port}/api/v2/heartbeat", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`chroma run` did not start: {server.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield server
    finally:
        assert process.stdin is not None
        process.stdin.close()  # the watchdog's end of file: the server exits
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """Port of a loopback TCP server that accepts connections and never answers (a hung Chroma server)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    for writer in held:  # a client still waiting sees the connection closed
        writer.close()
    await server.wait_closed()
