"""Finding and loading libopus for discord.py's Opus encoder and decoder.

discord.py encodes what the bot says (and the sandbox decodes what it receives) with libopus through ctypes.
The system library is preferred (``ctypes.util.find_library("opus")``, e.g. from ``apt install libopus0``);
without it, the copy bundled in PyAV's wheel (``av.libs/libopus-*.so.*``, ``av/.dylibs/libopus*.dylib`` or
``av.libs/*opus*.dll``) is used, so a plain ``pip install`` is enough.

The library has to be loaded *into* ``discord.opus`` (its module-level handle), which is why this module lives in
``bot/``. It is a leaf (it imports only ``services.errors``, and discord inside ``load_opus``), so the sandbox uses it
too.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import logging
import threading
from pathlib import Path

from services.errors import ServiceError

_log = logging.getLogger(__name__)

_PYAV_PATTERNS = ("av.libs/libopus*.so*", "av/.dylibs/libopus*.dylib", "av.libs/*opus*.dll")
_lock = threading.Lock()
_loaded: str | None = None


class OpusUnavailable(ServiceError):
    """No libopus could be loaded, so voice cannot be encoded or decoded."""

    def __init__(self, tried: list[str]) -> None:
        super().__init__(
            "Voice needs the Opus codec, which is not installed; install libopus (e.g. apt install libopus0)."
        )
        self.tried = tried


def candidate_paths() -> list[str]:
    """Libraries to try, best first: the system libopus (a name or path), then PyAV's bundled copies."""
    candidates: list[str] = []
    system = ctypes.util.find_library("opus")
    if system:
        candidates.append(system)
    spec = importlib.util.find_spec("av")  # locate the wheel without importing PyAV (and its FFmpeg libraries)
    if spec is not None and spec.origin is not None:
        site = Path(spec.origin).resolve().parent.parent
        for pattern in _PYAV_PATTERNS:
            candidates += sorted(str(p) for p in site.glob(pattern))
    return candidates


def load_opus() -> str:
    """Load libopus into ``discord.opus`` and return the path (or soname) that was loaded.

    Idempotent and thread-safe: later calls return the first result. Raises OpusUnavailable (its
    ``user_message`` says to install libopus) when no candidate loads.
    """
    global _loaded
    import discord.opus  # see the module docstring: the handle lives in discord.opus

    with _lock:
        if _loaded is not None and discord.opus.is_loaded():
            return _loaded
        tried: list[str] = []
        for path in candidate_paths():
            try:
                discord.opus.load_opus(path)
            except (OSError, AttributeError) as exc:  # not dlopen-able, or a library without the opus symbols
                tried.append(f"{path}: {exc}")
                continue
            _loaded = path
            _log.info("libopus loaded from %s", path)
            return path
        raise OpusUnavailable(tried)
