"""Models loaded once, lazily, in a worker thread: the shared base of the speech engines.

A speech engine is configured with a model name or path. When that model cannot be had (not downloadable, broken),
``load`` logs a warning that says how to get it and loads the bundled model instead
(``services.speech.bundled_models``),
so the bot always speaks and hears; the bundled model itself is refused when it is not the published file.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from services.errors import ServiceError

log = logging.getLogger(__name__)

# ONNX Runtime, which runs Piper voices and faster-whisper's voice activity detection, sends usage events to
# Microsoft from Linux and macOS since 1.29, and keeps a device id and an offline event cache under
# ~/.cache/Microsoft to send them once the network is back. A self-hosted bot turns that off unless the owner set
# ORT_DISABLE_TELEMETRY; ONNX Runtime reads it once, when first imported (by a model's load, after this module).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Which model a LazyModel loaded.

    name: the model's name ("en_US-joe-medium", "base.en"), or the file or folder name of a path.
    path: the file or folder that was loaded.
    verified: the digests checked against the publisher's ("md5", "sha256"), or "" when none were (only the
        bundled models have digests checked).
    bundled: whether it is one of the models shipped as Python packages.
    """

    name: str
    path: Path
    verified: str = ""
    bundled: bool = False

    def describe(self) -> str:
        """E.g. "en_US-joe-medium (bundled, md5 verified)" or "base.en (data/models/..., hash not checked)"."""
        if self.bundled:
            return f"{self.name} (bundled, {self.verified} verified)"
        return f"{self.name} ({self.path}, hash not checked)"


class LazyModel(ABC):
    """Something with a slow load run at most once, on first use, from any thread.

    ``load`` is idempotent and thread-safe; a failed load raises and is retried on the next call. ``kind`` names
    what is loaded in the log ("speech voice", "speech recognition model"); ``engine`` prefixes ``name``.

    Subclasses implement ``_load_configured`` and ``_load_bundled``, each returning the ModelSource it loaded, and
    set ``unavailable`` to the error their configured model raises when it cannot be had: that error makes ``load``
    fall back to the bundled model when ``fallback`` is true.
    """

    kind = "model"
    engine = "model"
    unavailable: type[ServiceError] = ServiceError
    name: str
    """What is loaded, for logs and messages: "piper:en_US-lessac-medium", then what was really loaded."""

    def __init__(self, model_name: str, *, bundled: bool, fallback: bool) -> None:
        self.name = f"{self.engine}:{model_name}"
        self.bundled = bundled
        """Whether the configured model is the bundled one."""
        self.fallback = fallback and not bundled
        self.source: ModelSource | None = None
        """What ``load`` loaded; None before."""
        self.fallback_reason: str | None = None
        """Why the configured model was not used (its error's message), when ``load`` fell back to the bundled one."""
        self._load_lock = threading.Lock()
        self._loaded = False

    @property
    def plan(self) -> str:
        """What ``load`` will load, for the start-up log, e.g. "piper:en_US-joe-medium (bundled)"."""
        if self.bundled:
            return f"{self.name} (bundled)"
        return f"{self.name} (or the bundled one if it cannot be had)" if self.fallback else self.name

    @property
    def loaded(self) -> bool:
        """Whether ``load`` has completed."""
        return self._loaded

    def load(self) -> None:
        """Load (blocking: call it from a thread). Raises ``unavailable`` (only with ``fallback`` off) and what the
        bundled model's load raises (BundledModelError when it is not installed or not the published file)."""
        if self._loaded:
            return
        with self._load_lock:
            if self._loaded:
                return
            log.info("Loading %s %s...", self.kind, self.name)
            started = time.perf_counter()
            try:
                source = self._load_configured()
            except self.unavailable as exc:
                if not self.fallback:
                    raise
                log.warning("Using the bundled %s instead of %s. %s", self.kind, self.name, exc.user_message)
                source = self._load_bundled()
                self.fallback_reason = exc.user_message
            self.source = source
            self.name = f"{self.engine}:{source.name}"
            self._loaded = True
            log.info("%s %s loaded in %.2f s: %s", self.kind.capitalize(), self.name, time.perf_counter() - started,
                     source.describe())  # fmt: skip

    @abstractmethod
    def _load_configured(self) -> ModelSource:
        """Load the configured model (called once, under the load lock); raise ``unavailable`` when it cannot."""

    @abstractmethod
    def _load_bundled(self) -> ModelSource:
        """Load the bundled model, its files verified (called under the load lock)."""
