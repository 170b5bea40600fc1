"""Models loaded once, lazily, in a worker thread: the shared base of the speech engines."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod

log = logging.getLogger(__name__)


class LazyModel(ABC):
    """Something with a slow ``_load`` run at most once, on first use, from any thread.

    ``load`` is idempotent and thread-safe; a failed load raises and is retried on the next call. ``kind``
    names what is loaded in the log ("speech voice", "speech recognition model").
    """

    kind = "model"
    name: str
    """What is loaded, for logs and messages, e.g. "piper:en_US-lessac-medium"."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._load_lock = threading.Lock()
        self._loaded = False

    @property
    def loaded(self) -> bool:
        """Whether ``load`` has completed."""
        return self._loaded

    def load(self) -> None:
        """Load (blocking: call it from a thread). Raises what ``_load`` raises."""
        if self._loaded:
            return
        with self._load_lock:
            if self._loaded:
                return
            log.info("Loading %s %s...", self.kind, self.name)
            started = time.perf_counter()
            self._load()
            self._loaded = True
            log.info("%s %s loaded in %.2f s", self.kind.capitalize(), self.name, time.perf_counter() - started)

    @abstractmethod
    def _load(self) -> None:
        """Do the loading (called once, under the load lock)."""
