"""The embedded ChromaDB, run in a child process so that its writes never stall the bot's event loop.

ChromaDB's Rust bindings hold Python's GIL for the whole of a call (about 10 ms plus ~1 ms per chunk for an
upsert, measured with chromadb 1.5.9), so even from ``asyncio.to_thread`` an embedded client delays every
other coroutine by tens of milliseconds during a reindex. Here one worker process owns the
``PersistentClient``; ``ProcessChromaClient`` and ``ProcessCollection`` offer the subset of the chromadb
client API that ``services/index.py`` uses, with each call forwarded to the worker and waited for in the
calling thread (which releases the GIL while it waits).

Calls are synchronous, like chromadb's own; run them in a thread. A dead worker raises
``concurrent.futures.process.BrokenProcessPool``; ``close()`` stops the worker.
"""

from __future__ import annotations

import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor
from typing import Any

_client: Any = None  # the worker's PersistentClient
_collections: dict[str, Any] = {}


def _init_worker(path: str) -> None:
    import chromadb
    from chromadb.config import Settings

    global _client
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the bot, which stops us itself
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
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),  # fork is unsafe in a process with threads
            initializer=_init_worker,
            initargs=(path,),
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
