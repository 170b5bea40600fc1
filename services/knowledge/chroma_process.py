"""The embedded ChromaDB, run in a child process so that its writes never stall the bot's event loop.

ChromaDB's Rust bindings hold Python's GIL for the whole of a call (about 10 ms plus ~1 ms per chunk for an
upsert, measured with chromadb 1.5.9), so even from ``asyncio.to_thread`` an embedded client delays every
other coroutine by tens of milliseconds during a reindex. Here one worker process owns the
``PersistentClient``; ``ProcessChromaClient`` and ``ProcessCollection`` offer the subset of the chromadb
client API that ``services/knowledge/index.py`` uses, with each call forwarded to the worker and waited for in the
calling thread (which releases the GIL while it waits).

Calls are synchronous, like chromadb's own; run them in a thread. A dead worker raises
``concurrent.futures.process.BrokenProcessPool``; ``close()`` stops the worker.

The worker dies with the bot, however the bot ends (SIGKILL and crashes included): it watches the read end of a
pipe whose only write end the bot holds, and exits at end of file, which the kernel delivers when the bot's
process is gone. Once the worker is gone, multiprocessing's resource tracker sees end of file on its own pipe and
exits too. Without this both were orphaned, kept the index files open, and a restarted bot opened them again.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

_client: Any = None  # the worker's PersistentClient
_collections: dict[str, Any] = {}


def _exit_when_parent_dies(parent_alive: Connection) -> None:
    """Block on the pipe from the bot until end of file (the bot's process is gone), then end this process."""
    try:
        while True:
            parent_alive.recv_bytes()  # the bot never writes; returning at all means end of file or an error
    except (EOFError, OSError):
        pass
    # os._exit, not sys.exit: the pool's main thread is blocked on its call queue, whose write end this process
    # also holds, so nothing else would ever wake it. Nothing is lost: chromadb commits each call itself.
    os._exit(0)


def _init_worker(path: str, parent_alive: Connection) -> None:
    import chromadb
    from chromadb.config import Settings

    global _client
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the bot, which stops us itself
    threading.Thread(target=_exit_when_parent_dies, args=(parent_alive,), name="parent-watch", daemon=True).start()
    _client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))


def _describe(collection: Any) -> tuple[str, dict[str, Any] | None]:
    _collections[collection.name] = collection
    return collection.name, collection.metadata


def _client_call(method: str, name: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any] | None] | None:
    if method == "delete_collection":
        _collections.pop(name, None)
        _client.delete_collection(name)
        return None
    return _describe(getattr(_client, method)(name, embedding_function=None, **kwargs))


def _collection_call(name: str, method: str, kwargs: dict[str, Any]) -> Any:
    collection = _collections.get(name)
    if collection is None:
        collection = _client.get_collection(name, embedding_function=None)
        _collections[name] = collection
    return getattr(collection, method)(**kwargs)


class ProcessCollection:
    """A collection living in the worker: ``name``, ``metadata`` (as of when it was got), and the data calls."""

    def __init__(self, owner: ProcessChromaClient, name: str, metadata: dict[str, Any] | None) -> None:
        self._owner = owner
        self.name = name
        self.metadata = metadata

    def _call(self, method: str, kwargs: dict[str, Any]) -> Any:
        return self._owner.submit(_collection_call, self.name, method, kwargs)

    def upsert(self, **kwargs: Any) -> None:
        return self._call("upsert", kwargs)

    def delete(self, **kwargs: Any) -> None:
        return self._call("delete", kwargs)

    def get(self, **kwargs: Any) -> Any:
        return self._call("get", kwargs)

    def query(self, **kwargs: Any) -> Any:
        return self._call("query", kwargs)

    def count(self) -> int:
        return self._call("count", {})


class ProcessChromaClient:
    """A ``PersistentClient`` at ``path``, in a child process started on first use."""

    def __init__(self, path: str) -> None:
        context = multiprocessing.get_context("spawn")  # fork is unsafe in a process with threads
        # The worker gets the read end; the write end stays here only (pipes are close-on-exec, and spawn passes
        # a child just the descriptors it is given), so the worker reads end of file exactly when we are gone.
        self._parent_alive, self._alive_writer = context.Pipe(duplex=False)
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=context,
            initializer=_init_worker,
            initargs=(path, self._parent_alive),
        )

    def submit(self, func: Any, *args: Any) -> Any:
        return self._pool.submit(func, *args).result()

    def _collection(self, method: str, name: str, **kwargs: Any) -> ProcessCollection:
        found_name, metadata = self.submit(_client_call, method, name, kwargs)
        return ProcessCollection(self, found_name, metadata)

    def get_collection(self, name: str, embedding_function: None = None) -> ProcessCollection:
        return self._collection("get_collection", name)

    def create_collection(self, name: str, embedding_function: None = None, **kwargs: Any) -> ProcessCollection:
        return self._collection("create_collection", name, **kwargs)

    def delete_collection(self, name: str) -> None:
        self.submit(_client_call, "delete_collection", name, {})

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._alive_writer.close()
        self._parent_alive.close()
