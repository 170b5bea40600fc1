"""The document index: ChromaDB collections per scope, incremental reload, hybrid retrieval.

Scopes and storage
    A scope is ``"global"`` (documents in ``DOCUMENTS_DIR/global/``, served to every guild) or a guild id as a
    string (documents in ``DOCUMENTS_DIR/<guild_id>/``). Each scope has one ChromaDB collection (``global``,
    ``guild_<id>``, cosine space) and one JSON manifest (``index_dir/manifests/<scope>.json``) recording, per
    indexed file, its sha256, size and chunk count. ChromaDB is embedded (``PersistentClient`` under
    ``index_dir/chroma``) unless ``chroma_host`` is given (``HttpClient``). Every Chroma call, file read and
    parse runs in ``asyncio.to_thread`` or through aiofiles: the event loop never blocks. A Chroma server must
    answer its heartbeat before the client is made, and every request within ``chroma_timeout_s`` (chromadb's
    own client waits for ever): a server that is down, hangs, or is not a Chroma server raises BackendUnavailable.

Embedding model
    A collection records the embedding model name and vector dimension it was built with (collection metadata
    ``embed_model`` / ``embed_dim``). Searching it, or reloading it incrementally, with another model or
    dimension raises IndexMismatch; ``reload(scope, full=True)`` drops and rebuilds it.

Incremental reload and consistency
    Unchanged files (same sha256) cost no embedding call; new and changed files are chunked and embedded
    (texts batched across files, ``embed_batch_size`` per request), their chunks upserted and the chunks of
    their previous version deleted; files gone from the folder have their chunks deleted. The manifest is
    rewritten atomically (temp file, fsync, ``os.replace``) after each file's chunks are committed, so a crash
    or an embedding failure never leaves the manifest claiming work that was not done: the next reload simply
    redoes what is missing. A manifest that does not belong to the collection (its ``build_id`` differs, e.g.
    the Chroma directory was deleted) is not trusted: the scope is rebuilt.

Symbolic links
    A scope folder is a boundary: a link whose target lies outside it is never read. The reload report names it
    as skipped with the reason (``services.knowledge.documents.LINK_OUTSIDE`` and the other ``LINK_*``), and the chunks
    once indexed under that name are deleted.

Concurrency
    One reload per scope at a time: a second ``reload``/``add_document``/``remove_document`` on a scope whose
    reload is running is *refused* with InvalidInput (a sentence saying a reload is running), rather than
    queued, so that an admin who repeats the command gets an immediate, honest answer instead of a silent
    second full pass. Searches run concurrently with reloads and see each file either before or after.

Retrieval
    Hybrid: a vector search (cosine) and a lexical BM25 search (rank_bm25, Okapi weighting with Lucene's
    non-negative idf; identifiers such as ``OLLAMA_HOST`` tokenized whole and in parts) over the guild's scope
    and the global scope, plus a ranking of exact identifier matches, fused by Reciprocal Rank Fusion
    (Cormack et al., SIGIR 2009, k = 60). The BM25 corpus of a scope is rebuilt after each reload and loaded
    from ChromaDB at the first search after a restart; so are the scope's distinctive terms, which bias speech
    recognition towards the documents' words (``services.knowledge.vocabulary``): ``document_terms`` keeps each guild's
    merged terms in memory, updated at every reload, so that a spoken turn reads them without I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiofiles
import aiofiles.os
import chromadb
import httpx
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import NotFoundError as ChromaNotFound

from services.errors import BackendUnavailable, IndexMismatch, InvalidInput, NotFound
from services.files import write_bytes_atomic, write_json_atomic
from services.knowledge.chroma_process import ProcessChromaClient
from services.knowledge.documents import (
    Chunk,
    DocumentSkipped,
    check_document_bytes,
    chunk_document,
    document_entry,
    list_document_files,
    load_document,
    parse_sections,
    read_and_hash,
    sanitize_filename,
)
from services.knowledge.lexical import LexicalIndex, identifier_terms, reciprocal_rank_fusion, tokenize
from services.knowledge.vocabulary import Term, merge_terms

log = logging.getLogger(__name__)

GLOBAL_SCOPE = "global"
MANIFEST_VERSION = 1
#: Chunks per Chroma upsert/delete call. ChromaDB's bindings hold the GIL for most of an upsert (measured:
#: ~130 ms for 256 chunks of 768 floats, ~25 ms for 32), so even in a thread a large upsert stalls the event
#: loop; writing in small pieces bounds that stall at the cost of a few more calls.
UPSERT_BATCH = 32
#: Chunks per Chroma get call when loading a scope's lexical corpus.
GET_BATCH = 1000
#: Seconds a Chroma server has to answer one request (a large upsert or query included).
CHROMA_TIMEOUT_S = 30.0
#: Seconds a guild's document terms stay in memory unused (the bot stopped listening there) before they are dropped.
TERMS_IDLE_S = 3600.0


# --------------------------------------------------------------------------------------------- public types


class Embedder(Protocol):
    """What the index needs from the LLM client (``services.chat.llm.LLMClient`` satisfies it)."""

    embed_model: str

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


@dataclass
class Hit:
    """One retrieved passage.

    text: the chunk text; source: file path relative to its scope folder (e.g. ``"guides/gpu.md"``);
    heading: heading path (``"Troubleshooting > GPU errors"``, ``""`` when none, ``"Page 3"`` for PDFs);
    scope: ``"global"`` or the guild id as a string; score: Reciprocal Rank Fusion score, higher is better:
    1/61 (~0.016) per ranking that puts the chunk first, so at most 2/61 (~0.033) for a query without
    identifiers (vector + BM25) and 3/61 (~0.049) with them (+ exact identifier matches); chunk_id: stable id.
    """

    text: str
    source: str
    heading: str
    scope: str
    score: float
    chunk_id: str


@dataclass(slots=True)
class _GuildTerms:
    """A guild's document terms in memory (see ``DocumentIndex.document_terms``); used_at: time.monotonic()."""

    terms: list[Term]
    used_at: float


@dataclass
class ReloadProgress:
    """Progress of a reload: files read so far out of ``files_total``; ``current`` is the file being read
    (None once every file has been read)."""

    files_done: int
    files_total: int
    current: str | None


@dataclass
class ReloadReport:
    """What a reload did. File names are relative to the scope folder; ``skipped`` pairs a file with the reason
    it was not indexed; ``chunks_embedded`` and ``embed_calls`` count the embedding work (0 when nothing changed);
    ``seconds`` is the wall time of the reload."""

    scope: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    chunks_embedded: int = 0
    embed_calls: int = 0
    seconds: float = 0.0


@dataclass
class DocumentInfo:
    """An indexed document: its name relative to the scope folder, scope, number of chunks and size in bytes."""

    name: str
    scope: str
    chunks: int
    size_bytes: int


def _embedding_text(chunk_text: str, heading: str) -> str:
    """What is embedded for a chunk: its heading path, then its text (a contextual chunk header)."""
    return f"{heading}\n\n{chunk_text}" if heading else chunk_text


# --------------------------------------------------------------------------------------------- manifest


@dataclass
class _Manifest:
    """What was indexed in one scope: ``files[name] = {"sha256", "size_bytes", "chunks"}``."""

    scope: str
    build_id: str | None = None
    embed_model: str | None = None
    embed_dim: int | None = None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"version": MANIFEST_VERSION, "scope": self.scope, "build_id": self.build_id,
                "embed_model": self.embed_model, "embed_dim": self.embed_dim, "files": self.files}

    @classmethod
    def from_json(cls, scope: str, data: dict[str, Any]) -> _Manifest:
        if data.get("version") != MANIFEST_VERSION or data.get("scope") != scope:
            raise ValueError("manifest of another version or scope")
        files = data.get("files")
        if not isinstance(files, dict):
            raise ValueError("manifest without files")
        return cls(scope, data.get("build_id"), data.get("embed_model"), data.get("embed_dim"), files)


# --------------------------------------------------------------------------------------------- reload helpers


@dataclass
class _PendingFile:
    """A new or changed file whose chunks wait for their embeddings before being committed."""

    name: str
    sha256: str
    size_bytes: int
    chunks: list[Chunk]
    is_new: bool
    vectors: list[list[float] | None] = field(default_factory=list)
    missing: int = 0

    def __post_init__(self) -> None:
        self.vectors = [None] * len(self.chunks)
        self.missing = len(self.chunks)


def _scope_label(scope: str) -> str:
    return "the shared (global) documents" if scope == GLOBAL_SCOPE else "this server's documents"


class DocumentIndex:
    """The per-guild + global document index (see the module docstring for the design).

    embedder: object with ``embed_model: str`` and ``async embed(texts) -> list[list[float]]`` (LLMClient).
    index_dir: where the embedded ChromaDB (``chroma/``) and the manifests (``manifests/``) live.
    documents_dir: root of the document folders (``global/`` and ``<guild_id>/``).
    chroma_host / chroma_port: use a ChromaDB server instead of the embedded database; chroma_timeout_s: seconds
    it has to answer each request. chroma_process: run the embedded database in a worker process.
    doc_max_bytes: largest file indexed or accepted, in bytes. chunk_max_chars / chunk_overlap_chars: chunking.
    embed_batch_size: texts per embed call (default: the embedder's ``embed_batch_size``, else 32).
    """

    def __init__(
        self,
        *,
        embedder: Embedder,
        index_dir: Path,
        documents_dir: Path,
        chroma_host: str | None = None,
        chroma_port: int = 8000,
        chroma_process: bool = False,
        chroma_timeout_s: float = CHROMA_TIMEOUT_S,
        doc_max_bytes: int,
        chunk_max_chars: int,
        chunk_overlap_chars: int,
        embed_batch_size: int | None = None,
    ) -> None:
        if not 0 <= chunk_overlap_chars < chunk_max_chars:
            raise ValueError("chunk_overlap_chars must be >= 0 and < chunk_max_chars")
        self.embedder = embedder
        self.index_dir = Path(index_dir)
        self.documents_dir = Path(documents_dir)
        self.chroma_host = chroma_host
        self.chroma_port = chroma_port
        self.chroma_process = chroma_process
        self.chroma_timeout_s = chroma_timeout_s
        self.doc_max_bytes = doc_max_bytes
        self.chunk_max_chars = chunk_max_chars
        self.chunk_overlap_chars = chunk_overlap_chars
        self.embed_batch_size = max(1, embed_batch_size or int(getattr(embedder, "embed_batch_size", 32)))
        self._client: Any = None
        self._client_lock = asyncio.Lock()
        self._reload_locks: dict[str, asyncio.Lock] = {}
        self._lexical: dict[str, LexicalIndex] = {}
        self._lexical_locks: dict[str, asyncio.Lock] = {}
        self._guild_terms: dict[int | None, _GuildTerms] = {}  # key: guild id, None for the global scope alone
        self.terms_idle_s = TERMS_IDLE_S
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Any, embedder: Embedder) -> DocumentIndex:
        """Build the index from ``config.Settings`` (index_dir, DOCUMENTS_DIR, CHROMA_HOST, CHROMA_PORT,
        CHROMA_TIMEOUT_S, CHROMA_WORKER_PROCESS, DOC_MAX_BYTES, CHUNK_MAX_CHARS, CHUNK_OVERLAP_CHARS,
        EMBED_BATCH_SIZE)."""
        return cls(
            embedder=embedder,
            index_dir=settings.index_dir,
            documents_dir=settings.DOCUMENTS_DIR,
            chroma_host=settings.CHROMA_HOST,
            chroma_port=settings.CHROMA_PORT,
            chroma_timeout_s=settings.CHROMA_TIMEOUT_S,
            chroma_process=settings.CHROMA_WORKER_PROCESS,
            doc_max_bytes=settings.DOC_MAX_BYTES,
            chunk_max_chars=settings.CHUNK_MAX_CHARS,
            chunk_overlap_chars=settings.CHUNK_OVERLAP_CHARS,
            embed_batch_size=settings.EMBED_BATCH_SIZE,
        )

    # -- scopes ------------------------------------------------------------------------------------------

    @staticmethod
    def _check_scope(scope: str) -> str:
        if scope != GLOBAL_SCOPE and not (scope.isascii() and scope.isdigit()):
            raise ValueError(f"scope must be 'global' or a guild id, not {scope!r}")
        return scope

    def scope_dir(self, scope: str) -> Path:
        """Folder of a scope's documents: ``documents_dir/global`` or ``documents_dir/<guild_id>``."""
        return self.documents_dir / self._check_scope(scope)

    @staticmethod
    def collection_name(scope: str) -> str:
        """ChromaDB collection of a scope: ``"global"`` or ``"guild_<id>"``."""
        return GLOBAL_SCOPE if scope == GLOBAL_SCOPE else f"guild_{scope}"

    def _manifest_path(self, scope: str) -> Path:
        return self.index_dir / "manifests" / f"{scope}.json"

    @staticmethod
    def _search_scopes(guild_id: int | None) -> list[str]:
        return [GLOBAL_SCOPE] if guild_id is None else [str(guild_id), GLOBAL_SCOPE]

    # -- chroma access -----------------------------------------------------------------------------------

    async def _chroma(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one blocking Chroma call in a thread; an unreachable Chroma server raises BackendUnavailable."""
        try:
            return await asyncio.to_thread(func, *args, **kwargs)
        except BrokenProcessPool as exc:
            self._client = None  # the worker died; the next call starts a new one
            raise self._chroma_down(exc) from exc
        except (httpx.HTTPError, ConnectionError) as exc:
            raise self._chroma_down(exc) from exc

    def _chroma_down(self, exc: BaseException) -> BackendUnavailable:
        log.warning("ChromaDB call failed: %s: %s", type(exc).__name__, exc)  # a timeout's own text can be empty
        if not self.chroma_host:
            return BackendUnavailable(f"The document index (ChromaDB in {self.index_dir / 'chroma'}) failed; try "
                                      "again, and if it keeps failing see the bot's log.")
        return _server_down(self.chroma_host, self.chroma_port, self.chroma_timeout_s, exc)

    def _make_client(self) -> Any:
        # Telemetry off: the bot makes no outbound connection besides Ollama (and a configured Chroma server).
        settings = ChromaSettings(anonymized_telemetry=False)
        if self.chroma_host:
            # chromadb's client would wait for ever on a server that accepts but never answers
            check_chroma_server(self.chroma_host, self.chroma_port, self.chroma_timeout_s)
            client = chromadb.HttpClient(host=self.chroma_host, port=self.chroma_port, settings=settings)
            # DEP-WARN(chromadb 1.5.9): the client sends every request with httpx's timeout=None and has no setting
            # for it; its httpx.Client is the private ``_server._session``. If that moves, this raises
            # AttributeError and tests/test_index.py's unanswering-server test fails.
            client._server._session.timeout = httpx.Timeout(self.chroma_timeout_s)
            return client
        path = self.index_dir / "chroma"
        path.mkdir(parents=True, exist_ok=True)
        if self.chroma_process:
            return ProcessChromaClient(str(path))
        return chromadb.PersistentClient(path=str(path), settings=settings)

    async def _get_client(self) -> Any:
        if self._closed:
            raise RuntimeError("DocumentIndex is closed")
        async with self._client_lock:
            if self._client is None:
                try:
                    self._client = await asyncio.to_thread(self._make_client)
                except (httpx.HTTPError, ConnectionError, ValueError) as exc:
                    # chromadb's HttpClient reports a server it cannot reach as ValueError("Could not connect...").
                    raise self._chroma_down(exc) from exc
            return self._client

    async def _get_collection(self, scope: str) -> Any | None:
        client = await self._get_client()
        try:
            return await self._chroma(client.get_collection, self.collection_name(scope), embedding_function=None)
        except ChromaNotFound:
            return None

    async def _create_collection(self, scope: str, embed_dim: int) -> Any:
        client = await self._get_client()
        metadata = {"scope": scope, "embed_model": self.embedder.embed_model, "embed_dim": embed_dim,
                    "build_id": uuid.uuid4().hex, "created_at": time.time()}
        return await self._chroma(client.create_collection, self.collection_name(scope),
                                  configuration={"hnsw": {"space": "cosine"}}, metadata=metadata,
                                  embedding_function=None)

    async def _drop_collection(self, scope: str) -> None:
        client = await self._get_client()
        with contextlib.suppress(ChromaNotFound):  # already absent is the wanted state
            await self._chroma(client.delete_collection, self.collection_name(scope))

    def _check_model(self, scope: str, collection: Any, dim: int | None = None) -> None:
        """Raise IndexMismatch unless ``collection`` was built with the configured model (and ``dim``)."""
        meta = collection.metadata or {}
        built_model, built_dim = meta.get("embed_model"), meta.get("embed_dim")
        wanted = self.embedder.embed_model
        if built_model != wanted or (dim is not None and built_dim is not None and built_dim != dim):
            now = f"`{wanted}`" + (f" ({dim} dimensions)" if dim is not None else "")
            raise IndexMismatch(
                f"The index of {_scope_label(scope)} was built with `{built_model}` ({built_dim} dimensions) but "
                f"the embedding model is now {now}; an admin can run `/docs reload full:True` to rebuild it "
                f"with `{wanted}`."
            )

    # -- manifests ---------------------------------------------------------------------------------------

    async def _read_manifest(self, scope: str) -> _Manifest:
        """The scope's manifest, or an empty one when absent or unreadable."""
        path = self._manifest_path(scope)
        try:
            async with aiofiles.open(path, encoding="utf-8") as handle:
                text = await handle.read()
            return _Manifest.from_json(scope, json.loads(text))
        except FileNotFoundError:
            return _Manifest(scope)
        except (OSError, ValueError) as exc:
            log.warning("Ignoring unreadable manifest %s (%s); the scope will be rebuilt", path, exc)
            return _Manifest(scope)

    async def _save_manifest(self, manifest: _Manifest) -> None:
        await asyncio.to_thread(write_json_atomic, self._manifest_path(manifest.scope), manifest.to_json(), indent=1,
                                sort_keys=True)

    # -- reload ------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _exclusive(self, scope: str) -> AsyncIterator[None]:
        """Hold the scope's reload lock, or refuse with InvalidInput when a reload of it is running."""
        lock = self._reload_locks.setdefault(scope, asyncio.Lock())
        if lock.locked():
            raise InvalidInput(f"A reload of {_scope_label(scope)} is already running; wait for it to finish "
                               "and try again.")
        async with lock:  # acquired without suspending: no other task can slip in after the check
            yield

    async def reload(
        self,
        scope: str,
        *,
        full: bool = False,
        progress: Callable[[ReloadProgress], Awaitable[None]] | None = None,
    ) -> ReloadReport:
        """Bring the index of ``scope`` (``"global"`` or a guild id string) in line with its folder.

        full=False: incremental (only new/changed files are embedded). full=True: drop the collection and the
        manifest, then index every file (also the fix for IndexMismatch). ``progress`` is awaited before each
        file and once at the end (``current=None``); an exception it raises is logged, not fatal.
        Raises InvalidInput when a reload of the scope is already running; IndexMismatch (incremental only)
        when the collection was built with another embedding model or dimension; BackendUnavailable /
        ModelNotFound from the embedder (work committed so far stays consistent; the next reload resumes);
        BackendUnavailable when a ChromaDB server cannot be reached.
        """
        self._check_scope(scope)
        async with self._exclusive(scope):
            return await self._reload_locked(scope, full=full, progress=progress)

    async def _reload_locked(
        self,
        scope: str,
        *,
        full: bool,
        progress: Callable[[ReloadProgress], Awaitable[None]] | None,
    ) -> ReloadReport:
        started = time.perf_counter()
        report = ReloadReport(scope=scope)
        collection = await self._get_collection(scope)
        manifest = await self._read_manifest(scope)
        if not full and collection is not None:
            self._check_model(scope, collection)
            if manifest.build_id != (collection.metadata or {}).get("build_id"):
                log.warning("Manifest of scope %s does not match its collection; rebuilding the scope", scope)
                full = True
        if full or collection is None:
            if collection is not None:
                await self._drop_collection(scope)
            collection = None
            manifest = _Manifest(scope)
            await self._save_manifest(manifest)
        succeeded = False
        try:
            collection = await self._sync_files(scope, collection, manifest, report, progress)
            succeeded = True
        finally:
            report.seconds = time.perf_counter() - started
            if succeeded:
                await self._refresh_lexical(scope)
            else:
                self._lexical.pop(scope, None)  # reloaded from Chroma at the next search
                self._forget_terms(scope)  # and the guilds' terms at their next call
        log.info(
            "Reloaded %s: %d added, %d updated, %d removed, %d unchanged, %d skipped; %d chunks in %d embed calls, "
            "%.2f s", scope, len(report.added), len(report.updated), len(report.removed), len(report.unchanged),
            len(report.skipped), report.chunks_embedded, report.embed_calls, report.seconds,
        )
        return report

    async def _sync_files(
        self,
        scope: str,
        collection: Any | None,
        manifest: _Manifest,
        report: ReloadReport,
        progress: Callable[[ReloadProgress], Awaitable[None]] | None,
    ) -> Any | None:
        folder = self.scope_dir(scope)
        listing = await asyncio.to_thread(list_document_files, folder)
        names = listing.files

        # Links not followed (e.g. to a file outside the folder): named in the report, and the chunks of a file
        # since replaced by such a link are deleted.
        for name, reason in listing.skipped:
            log.warning("Not indexing %s in scope %s: %s", name, scope, reason)
            report.skipped.append((name, reason))
            await self._forget(collection, manifest, name)

        # Files gone from the folder: delete their chunks first (no embedding needed).
        for name in sorted(set(manifest.files) - set(names)):
            await self._forget(collection, manifest, name)
            report.removed.append(name)

        pending: list[_PendingFile] = []
        queue: list[tuple[_PendingFile, int]] = []  # (file, chunk index) awaiting an embedding, in order
        state = {"collection": collection}

        async def drain(force: bool) -> None:
            while len(queue) >= self.embed_batch_size or (force and queue):
                batch, queue[:] = queue[: self.embed_batch_size], queue[self.embed_batch_size:]
                texts = [_embedding_text(f.chunks[i].text, f.chunks[i].heading) for f, i in batch]
                vectors = await self.embedder.embed(texts)
                report.embed_calls += 1
                report.chunks_embedded += len(texts)
                if len(vectors) != len(texts):
                    raise RuntimeError(f"embedder returned {len(vectors)} vectors for {len(texts)} texts")
                state["collection"] = await self._ensure_collection(scope, state["collection"], manifest,
                                                                    len(vectors[0]))
                for (file, i), vector in zip(batch, vectors, strict=True):
                    file.vectors[i] = vector
                    file.missing -= 1
                ready = 0
                while ready < len(pending) and pending[ready].missing == 0:
                    ready += 1
                if ready:
                    done, pending[:] = pending[:ready], pending[ready:]
                    await self._commit(scope, state["collection"], manifest, done, report)

        for number, name in enumerate(names):
            if progress is not None:
                await self._report_progress(progress, ReloadProgress(number, len(names), name))
            outcome = await self._prepare_file(folder, name, manifest)
            if outcome is None:
                report.unchanged.append(name)
                continue
            if isinstance(outcome, str):
                report.skipped.append((name, outcome))
                # Was indexed, now unusable (or swapped for a link since the listing): its old chunks must not answer.
                await self._forget(state["collection"], manifest, name)
                continue
            pending.append(outcome)
            queue.extend((outcome, i) for i in range(len(outcome.chunks)))
            await drain(force=False)
        await drain(force=True)
        report.skipped.sort()
        if progress is not None:
            await self._report_progress(progress, ReloadProgress(len(names), len(names), None))
        return state["collection"]

    async def _forget(self, collection: Any | None, manifest: _Manifest, name: str) -> None:
        """Delete the chunks and the manifest entry of ``name``, when it is indexed."""
        if name not in manifest.files:
            return
        if collection is not None:
            await self._chroma(collection.delete, where={"source": name})
        del manifest.files[name]
        await self._save_manifest(manifest)

    @staticmethod
    async def _report_progress(progress: Callable[[ReloadProgress], Awaitable[None]], value: ReloadProgress) -> None:
        try:
            await progress(value)
        except Exception:
            # A failed progress display (e.g. a message edit) must not abort indexing; it is logged.
            log.warning("Reload progress callback failed", exc_info=True)

    async def _prepare_file(self, folder: Path, name: str, manifest: _Manifest) -> _PendingFile | str | None:
        """None when unchanged, the skip reason, or the chunked file to embed."""
        known = manifest.files.get(name)
        try:
            if known is not None:
                sha256, _ = await asyncio.to_thread(read_and_hash, folder, name, self.doc_max_bytes)
                if sha256 == known.get("sha256"):
                    return None
            document = await asyncio.to_thread(load_document, folder, name, max_bytes=self.doc_max_bytes)
            chunks = await asyncio.to_thread(chunk_document, document, max_chars=self.chunk_max_chars,
                                             overlap_chars=self.chunk_overlap_chars)
        except DocumentSkipped as skipped:
            return skipped.reason
        except OSError as exc:
            return f"unreadable ({exc.strerror or type(exc).__name__})"
        if not chunks:
            return "empty"
        return _PendingFile(name, document.sha256, document.size_bytes, chunks, is_new=known is None)

    async def _ensure_collection(self, scope: str, collection: Any | None, manifest: _Manifest, dim: int) -> Any:
        """Create the collection at the first embedding (its dimension is known then), or check the dimension."""
        if collection is None:
            collection = await self._create_collection(scope, dim)
            meta = collection.metadata or {}
            manifest.build_id, manifest.embed_model, manifest.embed_dim = meta["build_id"], meta["embed_model"], dim
            await self._save_manifest(manifest)
        else:
            self._check_model(scope, collection, dim)
        return collection

    async def _commit(self, scope: str, collection: Any, manifest: _Manifest, files: list[_PendingFile],
                      report: ReloadReport) -> None:
        """Write the chunks of fully embedded files, delete their stale chunks, then record them in the manifest.

        Files are committed together (one manifest write, upserts of UPSERT_BATCH chunks across files) because
        each Chroma call has a fixed cost of ~10 ms; the manifest is written only after their chunks are stored.
        """
        names = [f.name for f in files]
        where = {"source": names[0]} if len(names) == 1 else {"source": {"$in": names}}
        old = await self._chroma(collection.get, where=where, include=[])
        rows = [(f, c, v) for f in files for c, v in zip(f.chunks, f.vectors, strict=True)]
        for start in range(0, len(rows), UPSERT_BATCH):
            piece = rows[start:start + UPSERT_BATCH]
            await self._chroma(
                collection.upsert,
                ids=[c.chunk_id for _, c, _ in piece],
                embeddings=[v for _, _, v in piece],
                documents=[c.text for _, c, _ in piece],
                metadatas=[{"source": c.source, "heading": c.heading, "chunk_index": c.index,
                            "file_sha256": f.sha256, "scope": scope} for f, c, _ in piece],
            )
        # Upsert first, delete after: a concurrent search never finds a changed file missing.
        stale = sorted(set(old["ids"]) - {c.chunk_id for _, c, _ in rows})
        for start in range(0, len(stale), UPSERT_BATCH):
            await self._chroma(collection.delete, ids=stale[start:start + UPSERT_BATCH])
        for file in files:
            manifest.files[file.name] = {"sha256": file.sha256, "size_bytes": file.size_bytes,
                                         "chunks": len(file.chunks)}
            (report.added if file.is_new else report.updated).append(file.name)
        await self._save_manifest(manifest)

    # -- lexical corpus ----------------------------------------------------------------------------------

    async def _load_lexical(self, scope: str, collection: Any) -> LexicalIndex:
        ids: list[str] = []
        texts: list[str] = []
        metadatas: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = await self._chroma(collection.get, include=["documents", "metadatas"], limit=GET_BATCH,
                                      offset=offset)
            ids.extend(page["ids"])
            texts.extend(page["documents"] or [])
            metadatas.extend(dict(m or {}) for m in page["metadatas"] or [])
            if len(page["ids"]) < GET_BATCH:
                break
            offset += GET_BATCH
        build_id = str((collection.metadata or {}).get("build_id"))
        return await asyncio.to_thread(LexicalIndex.build, build_id, ids, texts, metadatas)

    async def _refresh_lexical(self, scope: str) -> None:
        """Rebuild the scope's BM25 corpus from Chroma after a reload."""
        lock = self._lexical_locks.setdefault(scope, asyncio.Lock())
        async with lock:
            collection = await self._get_collection(scope)
            if collection is None:
                self._lexical.pop(scope, None)
            else:
                self._lexical[scope] = await self._load_lexical(scope, collection)
            self._update_terms(scope)

    async def _lexical_for(self, scope: str, collection: Any) -> LexicalIndex:
        """The scope's BM25 corpus, loaded from Chroma at the first search (after a restart) or when the
        collection was rebuilt elsewhere (its build_id changed)."""
        build_id = str((collection.metadata or {}).get("build_id"))
        cached = self._lexical.get(scope)
        if cached is not None and cached.build_id == build_id:
            return cached
        lock = self._lexical_locks.setdefault(scope, asyncio.Lock())
        async with lock:
            cached = self._lexical.get(scope)
            if cached is None or cached.build_id != build_id:
                cached = await self._load_lexical(scope, collection)
                self._lexical[scope] = cached
                self._update_terms(scope)
            return cached

    # -- search ------------------------------------------------------------------------------------------

    async def search(self, guild_id: int | None, query: str, k: int = 5) -> list[Hit]:
        """The ``k`` best passages for ``query`` from the guild's documents and the global ones, best first.

        guild_id: None searches the global scope only. Up to three rankings of ``max(4k, 20)`` candidates each,
        merged across the scopes, are fused by Reciprocal Rank Fusion (see :func:`reciprocal_rank_fusion`):
        vector (cosine distance), BM25, and, when the query holds identifiers (:func:`identifier_terms`), the
        BM25 candidates containing them verbatim. ``Hit.score`` is the fused score. Returns [] when nothing is
        indexed. Raises InvalidInput for an empty query; IndexMismatch when a searched collection was built
        with another embedding model or dimension; BackendUnavailable / ModelNotFound from the embedder or an
        unreachable ChromaDB server.
        """
        if not query.strip():
            raise InvalidInput("The question is empty; write what you are looking for.")
        k = max(1, k)
        candidates = max(4 * k, 20)
        scopes = self._search_scopes(guild_id)
        collections = await asyncio.gather(*(self._get_collection(s) for s in scopes))
        present = [(s, c) for s, c in zip(scopes, collections, strict=True) if c is not None]
        if not present:
            return []
        for scope, collection in present:
            self._check_model(scope, collection)
        query_vector = (await self.embedder.embed([query]))[0]
        for scope, collection in present:
            self._check_model(scope, collection, len(query_vector))

        query_tokens, identifiers = tokenize(query), identifier_terms(query)
        vector_results, lexical_results = await asyncio.gather(
            asyncio.gather(*(self._vector_search(c, query_vector, candidates) for _, c in present)),
            asyncio.gather(*(self._lexical_search(s, c, query_tokens, identifiers, candidates) for s, c in present)),
        )

        passages: dict[str, Hit] = {}  # key: "<scope>/<chunk id>" (ids are unique within a collection only)
        vector_ranked: list[tuple[float, str]] = []
        for (scope, _), result in zip(present, vector_results, strict=True):
            for chunk, text, meta, distance in zip(result["ids"][0], result["documents"][0],
                                                   result["metadatas"][0], result["distances"][0], strict=True):
                key = f"{scope}/{chunk}"
                passages[key] = _hit(scope, chunk, text, meta)
                vector_ranked.append((float(distance), key))
        lexical_ranked: list[tuple[float, str]] = []
        exact_ranked: list[tuple[int, float, str]] = []
        for found in lexical_results:
            for key, score, matched, hit in found:
                passages.setdefault(key, hit)
                lexical_ranked.append((-score, key))
                if matched:
                    exact_ranked.append((-matched, -score, key))
        # Cosine distances of one model are comparable across collections; BM25 scores roughly so (same
        # weighting, per-scope idf): each is merged into one ranking before fusion. The third ranking (chunks
        # holding the query's identifiers verbatim, most identifiers first) makes "OLLAMA_NUM_PARALLEL" find
        # the one chunk that names it even when the embedding ranks unrelated chunks first.
        fused = reciprocal_rank_fusion([
            [key for _, key in sorted(vector_ranked)][:candidates],
            [key for _, key in sorted(lexical_ranked)][:candidates],
            [key for _, _, key in sorted(exact_ranked)][:candidates],
        ])
        best = sorted(fused, key=lambda key: (-fused[key], key))[:k]
        hits = []
        for key in best:
            hit = passages[key]
            hit.score = fused[key]
            hits.append(hit)
        return hits

    async def _vector_search(self, collection: Any, vector: list[float], n: int) -> dict[str, Any]:
        """Chroma query of one collection; a collection dropped meanwhile (a full reload) gives no results."""
        try:
            return await self._chroma(collection.query, query_embeddings=[vector], n_results=n,
                                      include=["documents", "metadatas", "distances"])
        except ChromaNotFound:
            return {"ids": [[]], "documents": [[]], "metadatas": [[]], "distances": [[]]}

    async def _lexical_search(self, scope: str, collection: Any, tokens: list[str], identifiers: list[str],
                              n: int) -> list[tuple[str, float, int, Hit]]:
        """BM25 results of one scope as (key, score, identifiers matched, hit), best first."""
        try:
            lexical = await self._lexical_for(scope, collection)
        except ChromaNotFound:  # dropped by a full reload since the search began
            return []
        top = await asyncio.to_thread(lexical.top, tokens, identifiers, n)
        return [
            (f"{scope}/{lexical.ids[i]}", score, matched,
             _hit(scope, lexical.ids[i], lexical.texts[i], lexical.metadatas[i]))
            for i, score, matched in top
        ]

    async def document_terms(self, guild_id: int | None) -> list[Term]:
        """The distinctive terms of the guild's documents and the global ones, best first, for speech recognition
        (``services.knowledge.vocabulary``); [] when nothing is indexed. guild_id None: the global documents alone.

        Asked at every spoken turn, so served from memory: the first call for a guild reads each scope's BM25 corpus
        (loaded from ChromaDB after a restart; the corpus also holds the scope's terms) and keeps the merged terms;
        later calls return them with no I/O. Every change of a scope's corpus (reload, ``add_document``,
        ``remove_document``, a search that found the collection rebuilt elsewhere) recomputes the terms of the guilds
        in memory that use it, from memory; a failed reload drops them (read again at the next call). Bounded: one
        entry per guild, dropped by ``forget_guild`` or after ``terms_idle_s`` (TERMS_IDLE_S) unused. Raises
        BackendUnavailable when a ChromaDB server cannot be reached at a guild's first call.
        """
        now = time.monotonic()
        cached = self._guild_terms.get(guild_id)
        if cached is None:
            for scope in self._search_scopes(guild_id):
                collection = await self._get_collection(scope)
                if collection is not None:
                    with contextlib.suppress(ChromaNotFound):  # dropped by a full reload meanwhile
                        await self._lexical_for(scope, collection)
            # Merged after the awaits, from memory: a reload that finished meanwhile is included.
            cached = self._guild_terms.get(guild_id) or _GuildTerms(self._merged_terms(guild_id), now)
            self._guild_terms = {key: entry for key, entry in self._guild_terms.items()
                                 if now - entry.used_at <= self.terms_idle_s}  # fmt: skip
            self._guild_terms[guild_id] = cached
        cached.used_at = now
        return cached.terms

    def forget_guild(self, guild_id: int) -> None:
        """Drop what is kept in memory for a guild the bot left: its document terms and its BM25 corpus (both are
        read from ChromaDB again if needed); its documents and their index stay on disk."""
        self._guild_terms.pop(guild_id, None)
        self._lexical.pop(str(int(guild_id)), None)

    def _merged_terms(self, guild_id: int | None) -> list[Term]:
        """The guild's terms from the BM25 corpora in memory (a scope without one has no collection, or failed)."""
        return merge_terms(*(self._lexical[scope].terms for scope in self._search_scopes(guild_id)
                             if scope in self._lexical))  # fmt: skip

    def _update_terms(self, scope: str) -> None:
        """``scope``'s BM25 corpus changed: recompute the terms of the guilds in memory that use it."""
        for guild_id, entry in self._guild_terms.items():
            if scope in self._search_scopes(guild_id):
                entry.terms = self._merged_terms(guild_id)

    def _forget_terms(self, scope: str) -> None:
        """``scope``'s BM25 corpus is unknown: the guilds that use it read their terms again at their next call."""
        self._guild_terms = {guild_id: entry for guild_id, entry in self._guild_terms.items()
                             if scope not in self._search_scopes(guild_id)}  # fmt: skip

    # -- documents ---------------------------------------------------------------------------------------

    async def list_documents(self, guild_id: int | None) -> list[DocumentInfo]:
        """Indexed documents of the guild's scope, then of the global scope, each sorted by name.

        Reads the manifests, so it reflects what the last reload indexed (not files added since).
        """
        infos: list[DocumentInfo] = []
        for scope in self._search_scopes(guild_id):
            manifest = await self._read_manifest(scope)
            infos.extend(
                DocumentInfo(name, scope, int(entry.get("chunks", 0)), int(entry.get("size_bytes", 0)))
                for name, entry in sorted(manifest.files.items())
            )
        return infos

    async def add_document(self, guild_id: int, filename: str, data: bytes) -> tuple[str, ReloadReport]:
        """Save an uploaded document in the guild's folder and index it; returns (saved name, reload report).

        The name is sanitized (:func:`services.knowledge.documents.sanitize_filename`); a file of that name is replaced.
        The content is checked before anything is written. The file is written atomically, then the guild's
        scope is reloaded incrementally (so only this file is embedded, unless others changed too).
        Raises InvalidInput for a bad name or type, a file over ``doc_max_bytes``, an empty, binary, non-UTF-8
        or unreadable file, or a reload of the guild's documents already running; then what ``reload`` raises.
        """
        scope = str(int(guild_id))
        name = sanitize_filename(filename)
        if len(data) > self.doc_max_bytes:
            raise InvalidInput(f"`{name}` is {len(data):,} bytes; the limit is {self.doc_max_bytes:,} bytes "
                               "(DOC_MAX_BYTES).")
        reason = check_document_bytes(name, data, max_bytes=self.doc_max_bytes)
        if reason is None:
            try:
                await asyncio.to_thread(parse_sections, name, data)
            except DocumentSkipped as skipped:
                reason = skipped.reason
        if reason is not None:
            raise InvalidInput(f"`{name}` cannot be indexed: {reason}.")
        async with self._exclusive(scope):
            await asyncio.to_thread(write_bytes_atomic, self.scope_dir(scope) / name, data)
            report = await self._reload_locked(scope, full=False, progress=None)
        return name, report

    async def remove_document(self, guild_id: int, name: str) -> ReloadReport:
        """Delete a document of the guild (``name`` as listed, relative to the guild's folder) and its chunks.

        A link is deleted itself, never the file it points to; a link a reload skipped (e.g. one leading outside
        the folder) can be removed by the name the report gave. Raises NotFound when no such file is in the
        guild's folder (names that would leave it count as absent); InvalidInput when a reload of the guild's
        documents is running; then what ``reload`` raises.
        """
        scope = str(int(guild_id))
        folder = self.scope_dir(scope)
        path = await asyncio.to_thread(document_entry, folder, name)
        if path is None:
            raise NotFound(f"There is no document named `{name[:100]}` in this server's documents; "
                           "see `/docs list`.")
        async with self._exclusive(scope):
            with contextlib.suppress(FileNotFoundError):  # already gone is the wanted state
                await aiofiles.os.remove(path)
            return await self._reload_locked(scope, full=False, progress=None)

    async def close(self) -> None:
        """Release the ChromaDB client and the caches; idempotent. Waits for running reloads of no scope:
        callers cancel those tasks first (a cancelled reload leaves manifest and collection consistent)."""
        self._closed = True
        self._lexical.clear()
        self._guild_terms.clear()
        client, self._client = self._client, None
        if client is not None:  # frees the embedded database's files, a server's connections, or the worker
            await asyncio.to_thread(client.close)


def _hit(scope: str, chunk: str, text: str | None, meta: Any) -> Hit:
    meta = meta or {}
    return Hit(text=text or "", source=str(meta.get("source", "")), heading=str(meta.get("heading", "")),
               scope=scope, score=0.0, chunk_id=chunk)


def check_chroma_server(host: str, port: int, timeout_s: float) -> None:
    """Raise BackendUnavailable unless a ChromaDB server at ``host:port`` answers its heartbeat
    (``GET /api/v2/heartbeat``) within ``timeout_s`` seconds; blocking."""
    url = httpx.URL(scheme="http", host=host, port=port, path="/api/v2/heartbeat")
    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise _server_down(host, port, timeout_s, exc) from exc
    if response.status_code != 200 or "nanosecond heartbeat" not in response.text:
        log.warning("%s answered its heartbeat with HTTP %d: %.200s", url, response.status_code, response.text)
        raise BackendUnavailable(f"{host}:{port} answers, but not as a ChromaDB server "
                                 f"(HTTP {response.status_code}); check CHROMA_HOST/CHROMA_PORT.")


def _server_down(host: str, port: int, timeout_s: float, exc: BaseException) -> BackendUnavailable:
    where = f"ChromaDB server at {host}:{port}"
    if isinstance(exc, httpx.TimeoutException):
        return BackendUnavailable(f"The document index ({where}) did not answer within {timeout_s:g} s; try again "
                                  "later, or check that server.")
    return BackendUnavailable(f"The document index ({where}) cannot be reached; try again later or check "
                              "CHROMA_HOST/CHROMA_PORT.")
