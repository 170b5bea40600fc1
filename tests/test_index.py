"""Tests of services/knowledge/index.py against the real LLMClient talking to FakeOllama, and a real ChromaDB.

Every test that makes an index runs twice: on the embedded ChromaDB (``PersistentClient``) and on a real Chroma
server (``chroma run``, started once per session by ``tests/conftest.py``; ``CHROMA_HOST``), emptied before each
test. Tests that only make sense for one of them say so.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from services.chat.llm import LLMClient
from services.errors import BackendUnavailable, IndexMismatch, InvalidInput, NotFound
from services.knowledge.index import DocumentIndex, ReloadProgress
from services.knowledge.lexical import identifier_terms, reciprocal_rank_fusion, tokenize
from tests.conftest import ChromaServer, free_port
from tests.fakes.ollama import FakeOllama

GUILD_A = 111111111111111111
GUILD_B = 222222222222222222

TOPICS = [
    ("install", "Installing the server on Linux uses the install script and a systemd service."),
    ("gpu", "GPU acceleration needs a recent NVIDIA driver and enough video memory for the model."),
    ("models", "Models are pulled from the library and stored in the models directory on disk."),
    ("network", "The server listens on port 11434 and can be exposed to other machines on the network."),
    ("logs", "Logs are written to the journal on Linux and to a log file on macOS and Windows."),
    ("upgrade", "Upgrading replaces the binary and keeps the downloaded models in place."),
    ("memory", "Memory usage grows with the context window and the number of parallel requests."),
    ("proxy", "A proxy is configured with the usual HTTPS proxy environment variables."),
]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def topic_doc(topic: str, sentence: str, paragraphs: int = 3, extra: str = "") -> str:
    body = "\n\n".join(f"{sentence} Paragraph {i} repeats that idea about {topic}." for i in range(paragraphs))
    return f"# {topic.title()}\n\n{body}\n\n## Notes on {topic}\n\nMore notes about {topic}. {extra}\n"


@pytest.fixture
async def llm(ollama: FakeOllama) -> AsyncIterator[LLMClient]:
    client = LLMClient(host=ollama.url, chat_model="llama3.2", embed_model="nomic-embed-text", timeout_s=5.0,
                       num_ctx=2048, keep_alive="5m", embed_batch_size=8)
    yield client
    await client.close()


@pytest.fixture
def docs_dir(tmp_path: Path) -> Path:
    return tmp_path / "documents"


@pytest.fixture(params=["embedded", "server"])
def chroma(request: pytest.FixtureRequest) -> dict[str, object]:
    """Where the index's ChromaDB is: the embedded database (no options) or the test session's Chroma server,
    emptied first (``chroma_host``/``chroma_port``)."""
    if request.param == "embedded":
        return {}
    server: ChromaServer = request.getfixturevalue("chroma_server")
    server.delete_collections()
    return {"chroma_host": server.host, "chroma_port": server.port}


@pytest.fixture
async def make_index(tmp_path: Path, docs_dir: Path, chroma: dict[str, object]
                     ) -> AsyncIterator[Callable[..., DocumentIndex]]:
    made: list[DocumentIndex] = []

    def make(embedder: object, **overrides: object) -> DocumentIndex:
        options: dict[str, object] = {"index_dir": tmp_path / "index", "documents_dir": docs_dir,
                                      "doc_max_bytes": 50_000, "chunk_max_chars": 400, "chunk_overlap_chars": 60,
                                      **chroma}
        options.update(overrides)
        index = DocumentIndex(embedder=embedder, **options)  # type: ignore[arg-type]
        made.append(index)
        return index

    yield make
    for index in made:
        await index.close()


@pytest.fixture
def global_docs(docs_dir: Path) -> dict[str, str]:
    files = {f"{topic}.md": topic_doc(topic, sentence) for topic, sentence in TOPICS}
    for name, text in files.items():
        write(docs_dir / "global" / name, text)
    return files


def manifest(tmp_path: Path, scope: str) -> dict:
    return json.loads((tmp_path / "index" / "manifests" / f"{scope}.json").read_text())


async def test_full_reload_counts_and_skips(make_index, llm, ollama, docs_dir, global_docs, tmp_path) -> None:
    write(docs_dir / "global" / "sub" / "nested.txt", "A nested text file about backups and restores.")
    (docs_dir / "global" / "picture.png").write_bytes(b"\x89PNG\r\n")
    (docs_dir / "global" / "empty.md").write_bytes(b"")
    (docs_dir / "global" / "nul.md").write_bytes(b"abc\x00def")
    (docs_dir / "global" / "latin.txt").write_bytes("déjà".encode("latin-1"))
    (docs_dir / "global" / "big.md").write_bytes(b"a " * 30_000)
    (docs_dir / "global" / "bad.pdf").write_bytes(b"%PDF-1.4\nnot really")
    write(docs_dir / "global" / ".hidden.md", "never indexed")
    index = make_index(llm)
    seen: list[ReloadProgress] = []

    async def progress(value: ReloadProgress) -> None:
        seen.append(value)

    report = await index.reload("global", full=True, progress=progress)

    assert sorted(report.added) == sorted([*global_docs, "sub/nested.txt"])
    assert report.updated == report.removed == report.unchanged == []
    skipped = dict(report.skipped)
    assert skipped["picture.png"] == "unsupported type .png"
    assert skipped["empty.md"] == "empty"
    assert skipped["nul.md"] == "binary"
    assert skipped["latin.txt"] == "not decodable as UTF-8"
    assert skipped["big.md"] == "over DOC_MAX_BYTES (60000 bytes > 50000)"
    assert skipped["bad.pdf"].startswith("unreadable PDF")
    assert ".hidden.md" not in skipped and ".hidden.md" not in report.added
    documents = await index.list_documents(None)
    assert report.chunks_embedded == sum(d.chunks for d in documents) == ollama.embedded_texts
    assert report.embed_calls == ollama.embed_calls == -(-report.chunks_embedded // 8)  # batched across files
    assert {d.name for d in documents} == set(report.added) and all(d.scope == "global" for d in documents)
    assert [p.files_done for p in seen] == list(range(len(seen)))
    assert seen[-1].current is None and seen[-1].files_done == seen[-1].files_total
    assert manifest(tmp_path, "global")["embed_model"] == "nomic-embed-text"
    assert not list((tmp_path / "index" / "manifests").glob("*.tmp"))


async def test_unchanged_reload_embeds_nothing_and_one_change_embeds_one_file(
    make_index, llm, ollama, docs_dir, global_docs
) -> None:
    index = make_index(llm)
    await index.reload("global")
    ollama.reset_counters()

    again = await index.reload("global")
    assert again.embed_calls == again.chunks_embedded == 0
    assert ollama.embed_calls == 0
    assert sorted(again.unchanged) == sorted(global_docs) and again.added == again.updated == []

    write(docs_dir / "global" / "gpu.md", topic_doc("gpu", "Use ROCm for AMD cards; zanzibarite tuning helps."))
    changed = await index.reload("global")
    assert changed.updated == ["gpu.md"] and len(changed.unchanged) == len(global_docs) - 1
    gpu_chunks = next(d.chunks for d in await index.list_documents(None) if d.name == "gpu.md")
    assert ollama.embedded_texts == changed.chunks_embedded == gpu_chunks
    assert all(text for request in ollama.embed_requests for text in request["input"])
    embedded = [text for request in ollama.embed_requests for text in request["input"]]
    assert all("Gpu" in text for text in embedded)  # only the changed file went to the embedder

    hits = await index.search(None, "zanzibarite", k=3)
    assert hits[0].source == "gpu.md"
    old = await index.search(None, "recent NVIDIA driver video memory", k=10)
    assert all("recent NVIDIA driver" not in hit.text for hit in old)  # the old version's chunks are gone


async def test_deleted_file_is_removed_from_results(make_index, llm, docs_dir, global_docs) -> None:
    index = make_index(llm)
    await index.reload("global")
    assert (await index.search(None, "proxy environment variables HTTPS", k=3))[0].source == "proxy.md"

    (docs_dir / "global" / "proxy.md").unlink()
    report = await index.reload("global")

    assert report.removed == ["proxy.md"] and report.embed_calls == 0
    hits = await index.search(None, "proxy environment variables HTTPS", k=20)
    assert hits and all(hit.source != "proxy.md" for hit in hits)
    assert "proxy.md" not in {d.name for d in await index.list_documents(None)}


async def test_exact_setting_name_ranks_its_file_first(make_index, llm, docs_dir) -> None:
    for i in range(30):
        topic, sentence = TOPICS[i % len(TOPICS)]
        extra = "Set OLLAMA_FLASH_ATTENTION=1 to enable it." if i == 17 else "Check the settings page."
        write(docs_dir / "global" / f"doc{i:02d}.md", topic_doc(f"{topic} {i}", sentence, paragraphs=4, extra=extra))
    write(docs_dir / "global" / "ctx.md", "# Context\n\nThe num_ctx option sets the context window in tokens.\n")
    index = make_index(llm)
    await index.reload("global")

    assert (await index.search(None, "OLLAMA_FLASH_ATTENTION", k=5))[0].source == "doc17.md"
    assert (await index.search(None, "what does OLLAMA_FLASH_ATTENTION do?", k=5))[0].source == "doc17.md"
    assert (await index.search(None, "num_ctx", k=5))[0].source == "ctx.md"


async def test_scopes_guild_sees_own_and_global_never_other_guild(make_index, llm, docs_dir, global_docs) -> None:
    write(docs_dir / str(GUILD_A) / "raids.md", "# Raids\n\nRaid night is Thursday; the raid leader is Aria.\n")
    write(docs_dir / str(GUILD_B) / "raids.md", "# Raids\n\nRaid night is Monday; the raid leader is Borin.\n")
    index = make_index(llm)
    for scope in ("global", str(GUILD_A), str(GUILD_B)):
        await index.reload(scope)

    a_hits = await index.search(GUILD_A, "when is raid night and who leads the raid", k=20)
    assert a_hits[0].scope == str(GUILD_A) and "Aria" in a_hits[0].text
    assert {h.scope for h in a_hits} == {str(GUILD_A), "global"}
    assert all("Borin" not in h.text for h in a_hits)
    b_hits = await index.search(GUILD_B, "Borin Aria raid leader", k=20)
    assert all(h.scope in (str(GUILD_B), "global") for h in b_hits) and all("Aria" not in h.text for h in b_hits)
    assert all(h.scope == "global" for h in await index.search(None, "raid leader", k=20))
    assert all(h.scope == "global" for h in await index.search(333, "raid leader", k=20))  # no folder: global only

    listed = await index.list_documents(GUILD_A)
    assert [(d.scope, d.name) for d in listed][0] == (str(GUILD_A), "raids.md")
    assert {d.scope for d in listed} == {str(GUILD_A), "global"}


async def test_model_change_raises_mismatch_until_full_reload(make_index, llm, ollama, docs_dir, global_docs) -> None:
    index = make_index(llm)
    await index.reload("global")
    ollama.models.append("mxbai-embed-large")
    ollama.embed_dims["mxbai-embed-large:latest"] = 64
    other = LLMClient(host=ollama.url, chat_model="llama3.2", embed_model="mxbai-embed-large", timeout_s=5.0,
                      num_ctx=2048, keep_alive="5m")
    try:
        switched = make_index(other)
        with pytest.raises(IndexMismatch) as caught:
            await switched.search(None, "GPU driver")
        message = caught.value.user_message
        assert "`nomic-embed-text`" in message and "`mxbai-embed-large`" in message
        assert "/docs reload full:True" in message
        with pytest.raises(IndexMismatch):
            await switched.reload("global")

        report = await switched.reload("global", full=True)
        assert sorted(report.added) == sorted(global_docs)
        hits = await switched.search(None, "NVIDIA driver video memory", k=3)
        assert hits[0].source == "gpu.md"
    finally:
        await other.close()


async def test_dimension_change_of_same_model_is_detected(make_index, llm, ollama, global_docs) -> None:
    index = make_index(llm)
    await index.reload("global")
    ollama.embed_dims["nomic-embed-text:latest"] = 32  # same name, other vector size (e.g. a re-pulled model)
    with pytest.raises(IndexMismatch, match="32 dimensions"):
        await index.search(None, "GPU driver")
    await index.reload("global", full=True)
    assert (await index.search(None, "NVIDIA driver GPU acceleration"))[0].source == "gpu.md"


class FailingAfter:
    """The real LLMClient, but Ollama starts failing ("500") after ``calls`` successful embed calls."""

    def __init__(self, client: LLMClient, fake: FakeOllama, calls: int) -> None:
        self.client, self.fake, self.calls = client, fake, calls
        self.embed_model = client.embed_model
        self.embed_batch_size = client.embed_batch_size

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self.calls <= 0:
            self.fake.fail_embed = "500"
        self.calls -= 1
        return await self.client.embed(texts)


async def test_embed_failure_keeps_manifest_consistent_and_next_reload_finishes(
    make_index, llm, ollama, docs_dir, global_docs, tmp_path
) -> None:
    failing = FailingAfter(llm, ollama, calls=1)
    index = make_index(failing)
    with pytest.raises(BackendUnavailable):
        await index.reload("global")

    partial = manifest(tmp_path, "global")["files"]
    assert 0 < len(partial) < len(global_docs)
    client = index._client  # the embedded ChromaDB, to compare what is stored with what the manifest claims
    collection = client.get_collection("global", embedding_function=None)
    stored = collection.get(include=["metadatas"])["metadatas"]
    per_source: dict[str, int] = {}
    for meta in stored:
        per_source[meta["source"]] = per_source.get(meta["source"], 0) + 1
    assert per_source == {name: entry["chunks"] for name, entry in partial.items()}

    failing.calls = 1_000_000  # Ollama is back
    ollama.fail_embed = None
    ollama.reset_counters()
    finished = await index.reload("global")
    assert sorted(finished.unchanged) == sorted(partial)
    assert sorted(finished.added) == sorted(set(global_docs) - set(partial))
    assert set(manifest(tmp_path, "global")["files"]) == set(global_docs)
    assert (await index.reload("global")).embed_calls == 0
    assert (await index.search(None, "proxy environment variables HTTPS"))[0].source == "proxy.md"


async def test_embed_hang_times_out_as_backend_unavailable(make_index, ollama, docs_dir, global_docs) -> None:
    client = LLMClient(host=ollama.url, chat_model="llama3.2", embed_model="nomic-embed-text", timeout_s=0.3,
                       num_ctx=2048, keep_alive="5m")
    try:
        index = make_index(client)
        ollama.fail_embed = "hang"
        with pytest.raises(BackendUnavailable):
            await index.reload("global")
        assert (await index.list_documents(None)) == []
    finally:
        await client.close()


async def test_lexical_index_loads_lazily_after_restart(make_index, llm, ollama, docs_dir) -> None:
    write(docs_dir / "global" / "settings.md", "# Settings\n\nOLLAMA_MAX_LOADED_MODELS caps loaded models.\n")
    for topic, sentence in TOPICS:
        write(docs_dir / "global" / f"{topic}.md", topic_doc(topic, sentence))
    await make_index(llm).reload("global")
    ollama.reset_counters()

    restarted = make_index(llm)
    hits = await restarted.search(None, "OLLAMA_MAX_LOADED_MODELS", k=3)
    assert hits[0].source == "settings.md" and hits[0].heading == "Settings"
    assert ollama.embed_calls == 1  # the query only; documents come from ChromaDB
    assert (await restarted.reload("global")).embed_calls == 0


class ChromaRequests:
    """Wraps an index's ChromaDB client (the real one) and records the name of each method called on it."""

    def __init__(self, index: DocumentIndex) -> None:
        self.client, self.names = index._client, []
        index._client = self

    def __getattr__(self, name: str) -> object:
        attribute = getattr(self.client, name)
        if callable(attribute):
            self.names.append(name)
        return attribute


async def test_a_guilds_document_terms_come_from_memory_and_follow_every_change(make_index, llm, docs_dir,
                                                                                global_docs) -> None:  # fmt: skip
    """Every spoken turn asks for its guild's terms: after the first time they come without a ChromaDB request, and
    a reload, an added or a removed document changes them for the very next call."""
    write(docs_dir / str(GUILD_A) / "cluster.md", "# Kubernetes\n\nKubernetes schedules the pods of the cluster.\n")
    index = make_index(llm)
    await index.reload("global")
    await index.reload(str(GUILD_A))

    async def terms(guild_id: int | None = GUILD_A) -> set[str]:
        return {term.text for term in await index.document_terms(guild_id)}

    assert "Kubernetes" in await terms()  # the first call reads the index
    requests = ChromaRequests(index)
    assert "Kubernetes" in await terms() and "NVIDIA" in await terms()
    assert requests.names == []

    await index.add_document(GUILD_A, "dashboards.md", b"# Grafana\n\nGrafana draws the dashboards.\n")
    requests.names.clear()
    assert "Grafana" in await terms() and requests.names == []
    write(docs_dir / "global" / "metrics.md", "# Prometheus\n\nPrometheus scrapes the metrics.\n")
    await index.reload("global")
    requests.names.clear()
    assert {"Prometheus", "Grafana"} <= await terms() and requests.names == []
    await index.remove_document(GUILD_A, "dashboards.md")
    requests.names.clear()
    assert "Grafana" not in await terms() and requests.names == []
    assert "Kubernetes" not in await terms(GUILD_B) and "Prometheus" in await terms(GUILD_B)

    index.forget_guild(GUILD_A)  # the bot left the guild: its terms are read again if it ever comes back
    requests.names.clear()
    assert "Kubernetes" in await terms() and requests.names != []
    index.terms_idle_s = 0.0  # unused entries are dropped too
    await asyncio.sleep(0.01)
    await terms(None)
    requests.names.clear()
    assert "Kubernetes" in await terms() and requests.names != []


async def test_concurrent_reload_of_same_scope_is_refused(make_index, llm, docs_dir, global_docs) -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    class Gated:
        embed_model = llm.embed_model
        embed_batch_size = 8

        async def embed(self, texts: Sequence[str]) -> list[list[float]]:
            entered.set()
            await gate.wait()
            return await llm.embed(texts)

    index = make_index(Gated())
    first = asyncio.create_task(index.reload("global"))
    await asyncio.wait_for(entered.wait(), 5)
    with pytest.raises(InvalidInput, match="already running"):
        await index.reload("global")
    with pytest.raises(InvalidInput, match="already running"):
        await index.reload("global", full=True)
    other_scope = asyncio.create_task(index.reload(str(GUILD_A)))  # other scopes are independent
    gate.set()
    assert sorted((await first).added) == sorted(global_docs)
    assert (await other_scope).added == []


async def test_add_and_remove_document(make_index, llm, ollama, docs_dir, global_docs) -> None:
    index = make_index(llm)
    await index.reload(str(GUILD_A))
    name, report = await index.add_document(GUILD_A, "../../etc/passwd.md", b"# Passwords\n\nRotate them monthly.\n")
    assert name == "passwd.md" and report.added == ["passwd.md"]
    assert (docs_dir / str(GUILD_A) / "passwd.md").is_file()
    assert not (docs_dir / "etc").exists() and not list((docs_dir / str(GUILD_A)).glob(".*"))
    hits = await index.search(GUILD_A, "rotate passwords monthly", k=1)
    assert (hits[0].source, hits[0].scope) == ("passwd.md", str(GUILD_A))

    ollama.reset_counters()
    _, replaced = await index.add_document(GUILD_A, "passwd.md", b"# Passwords\n\nRotate them weekly.\n")
    assert replaced.updated == ["passwd.md"] and ollama.embed_calls == 1

    for filename, data, expected in [
        ("tool.exe", b"MZ", "cannot be indexed|`.exe`"),
        ("huge.md", b"a" * 60_000, "limit"),
        ("nul.md", b"a\x00b", "binary"),
        ("empty.txt", b"   ", "empty"),
        ("scan.pdf", b"%PDF-1.4 broken", "unreadable PDF"),
    ]:
        with pytest.raises(InvalidInput, match=expected):
            await index.add_document(GUILD_A, filename, data)
    assert sorted(p.name for p in (docs_dir / str(GUILD_A)).iterdir()) == ["passwd.md"]

    for bad in ("missing.md", "../global/gpu.md", "/etc/passwd", ""):
        with pytest.raises(NotFound):
            await index.remove_document(GUILD_A, bad)
    assert (docs_dir / "global" / "gpu.md").exists()

    removed = await index.remove_document(GUILD_A, "passwd.md")
    assert removed.removed == ["passwd.md"] and not (docs_dir / str(GUILD_A) / "passwd.md").exists()
    assert all(h.scope == "global" for h in await index.search(GUILD_A, "rotate passwords", k=10))


class FreezableProxy:
    """A loopback TCP proxy to a server's ``port`` that passes bytes both ways until ``freeze()``, then holds them:
    a server that hangs in the middle of a session (overloaded, or the network between us is gone)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: list[asyncio.StreamWriter] = []
        self._pumps: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self._flowing.clear()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()

    async def _connect(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [client_writer, server_writer]
        for reader, writer in ((client_reader, server_writer), (server_reader, client_writer)):
            pump = asyncio.create_task(self._pump(reader, writer))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self._flowing.wait()
            writer.write(data)
            await writer.drain()
        writer.close()


def server_index(tmp_path: Path, docs_dir: Path, embedder: object, port: int, **options: object) -> DocumentIndex:
    return DocumentIndex(embedder=embedder, index_dir=tmp_path / "index", documents_dir=docs_dir,  # type: ignore[arg-type]
                         chroma_host="127.0.0.1", chroma_port=port, doc_max_bytes=50_000, chunk_max_chars=400,
                         chunk_overlap_chars=60, **options)  # type: ignore[arg-type]


async def unavailable(call: Awaitable[object]) -> str:
    """The sentence of the BackendUnavailable that ``call`` raises. The 60 s guard turns a hang into a failure."""
    with pytest.raises(BackendUnavailable) as caught:
        await asyncio.wait_for(call, timeout=60)
    return caught.value.user_message


async def test_chroma_server_not_running_is_backend_unavailable(tmp_path, docs_dir, llm, global_docs) -> None:
    port = free_port()
    index = server_index(tmp_path, docs_dir, llm, port)
    try:
        for call in (index.reload("global"), index.search(GUILD_A, "GPU driver"),
                     index.add_document(GUILD_A, "notes.md", b"# Notes\n\nSome notes.\n")):
            message = await unavailable(call)
            assert message == (f"The document index (ChromaDB server at 127.0.0.1:{port}) cannot be reached; try "
                               "again later or check CHROMA_HOST/CHROMA_PORT.")
    finally:
        await index.close()


async def test_chroma_server_that_never_answers_times_out(tmp_path, docs_dir, llm, global_docs, silent_server) -> None:
    index = server_index(tmp_path, docs_dir, llm, silent_server, chroma_timeout_s=0.5)
    try:
        for call in (index.reload("global"), index.search(None, "GPU driver")):
            message = await unavailable(call)
            assert message == (f"The document index (ChromaDB server at 127.0.0.1:{silent_server}) did not answer "
                               "within 0.5 s; try again later, or check that server.")
    finally:
        await index.close()


async def test_chroma_server_that_hangs_mid_session_times_out(tmp_path, docs_dir, llm, global_docs,
                                                              chroma_server) -> None:
    chroma_server.delete_collections()
    proxy = FreezableProxy(chroma_server.port)
    await proxy.start()
    index = server_index(tmp_path, docs_dir, llm, proxy.port, chroma_timeout_s=3)
    try:
        await index.reload("global")
        assert (await index.search(None, "proxy environment variables HTTPS"))[0].source == "proxy.md"
        proxy.freeze()
        message = await unavailable(index.search(None, "GPU driver"))
        assert message == (f"The document index (ChromaDB server at 127.0.0.1:{proxy.port}) did not answer "
                           "within 3 s; try again later, or check that server.")
    finally:
        await index.close()
        await proxy.stop()


async def test_chroma_port_of_another_service_is_named(tmp_path, docs_dir, llm, ollama, global_docs) -> None:
    port = int(ollama.url.rsplit(":", 1)[1])  # e.g. CHROMA_PORT set to Ollama's port by mistake
    index = server_index(tmp_path, docs_dir, llm, port)
    try:
        message = await unavailable(index.reload("global"))
        assert message == (f"127.0.0.1:{port} answers, but not as a ChromaDB server (HTTP 404); check "
                           "CHROMA_HOST/CHROMA_PORT.")
    finally:
        await index.close()


async def test_empty_index_and_empty_query(make_index, llm) -> None:
    index = make_index(llm)
    assert await index.search(GUILD_A, "anything") == []
    assert await index.list_documents(GUILD_A) == []
    with pytest.raises(InvalidInput):
        await index.search(GUILD_A, "   ")
    with pytest.raises(ValueError):
        index.scope_dir("../etc")


@pytest.mark.timing
async def test_full_reindex_does_not_block_the_event_loop(make_index, llm, docs_dir) -> None:
    paragraph = " ".join(f"Sentence {j} about the {TOPICS[j % 8][0]} topic and its settings." for j in range(6))
    for i in range(40):
        sections = "\n\n".join(f"## Part {p}\n\n{paragraph}\n\n{paragraph}" for p in range(5))
        write(docs_dir / "global" / f"doc{i:02d}.md", f"# Document {i}\n\n{sections}\n")
    index = make_index(llm, chunk_max_chars=500, chunk_overlap_chars=50)
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        interval = 0.005
        while not done.is_set():
            expected = time.perf_counter() + interval
            await asyncio.sleep(interval)
            lags.append(time.perf_counter() - expected)

    tick = asyncio.create_task(ticker())
    try:
        report = await index.reload("global", full=True)
        await index.search(None, "settings of the gpu topic", k=5)
    finally:
        done.set()
        await tick
    assert report.chunks_embedded >= 300
    assert len(lags) > 10
    assert max(lags) < 0.25, f"event loop blocked for {max(lags) * 1000:.0f} ms"


def test_tokenize_keeps_identifiers_and_parts() -> None:
    tokens = tokenize("Set `OLLAMA_HOST` and num_ctx in config.yaml; error 0x80070005, keepAlive, llama3.2:8b.")
    for expected in ["ollama_host", "ollama", "host", "num_ctx", "num", "ctx", "config.yaml", "config", "yaml",
                     "0x80070005", "keepalive", "keep", "alive", "llama3.2:8b", "set", "error"]:
        assert expected in tokens
    assert "and" not in tokens and "in" not in tokens


def test_identifier_terms() -> None:
    assert identifier_terms("What does OLLAMA_HOST or num_ctx do, and error E404 in config.yaml?") == [
        "ollama_host", "num_ctx", "e404", "config.yaml"]
    assert identifier_terms("how do I keep a model loaded") == []


async def test_failing_progress_callback_does_not_abort_reload(make_index, llm, global_docs) -> None:
    async def broken(_: ReloadProgress) -> None:
        raise RuntimeError("message edit failed")

    report = await make_index(llm).reload("global", progress=broken)
    assert sorted(report.added) == sorted(global_docs)


def test_reciprocal_rank_fusion() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]])
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert max(fused, key=fused.__getitem__) == "b"
    assert fused["d"] == pytest.approx(1 / 62)

