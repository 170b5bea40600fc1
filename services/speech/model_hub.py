"""Named models from the Hugging Face Hub (where Piper voices and faster-whisper models are published).

``fetch`` takes a model from huggingface_hub's cache in ``MODELS_DIR`` when it is there, and otherwise downloads it
(huggingface_hub writes ``*.incomplete`` files and renames them when complete: an interrupted download leaves no
truncated model). Before any download it asks the Hub once, with CONNECT_TIMEOUT_S to connect: without network, or
behind a firewall that drops packets, a model that cannot be had is known within about a second, instead of after
minutes (huggingface_hub's first metadata request of a ``snapshot_download`` has no timeout at all, and would hold
the loading thread, and with it the bot's shutdown). ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and proxy variables apply
as huggingface_hub documents them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

# huggingface_hub (2.4) builds the user agent of every request, even a lookup in the local cache, after fetching its
# list of AI agents from the Hub (a 3 s timeout of its own: a Hub that never answers doubled the wait for a named
# model to fall back), unless telemetry is off. A self-hosted bot turns it off unless the owner set
# HF_HUB_DISABLE_TELEMETRY; huggingface_hub reads it once, when first imported (by ``fetch``, after this module).
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

CONNECT_TIMEOUT_S = 1.0
"""Seconds to connect to the Hub before taking it as unreachable."""
ANSWER_TIMEOUT_S = 3.0
"""Seconds for the Hub to answer the reachability request once connected."""


class HubUnavailable(Exception):
    """The model is not cached and cannot be downloaded; ``reason`` says why in a short clause."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def unreachable_reason() -> str | None:
    """None when the Hub answers (any HTTP status); else why not, e.g. "offline mode is on (HF_HUB_OFFLINE)".

    Blocking: at most CONNECT_TIMEOUT_S + ANSWER_TIMEOUT_S seconds. Uses huggingface_hub's own HTTP session, so its
    endpoint, proxy and certificate settings are the ones a download would use.
    """
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub import constants, get_session, is_offline_mode

    if is_offline_mode():
        return "offline mode is on (HF_HUB_OFFLINE)"
    try:
        get_session().head(constants.ENDPOINT, timeout=httpx2.Timeout(ANSWER_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
    except httpx2.HTTPError as exc:
        return f"the Hugging Face Hub at {constants.ENDPOINT} cannot be reached: {type(exc).__name__}: {exc}"
    return None


def fetch(download: Callable[[bool], T], what: str, cache_dir: Path) -> T:
    """``download(local_files_only)`` from the cache, else (when the Hub answers) from the Hub.

    download: calls huggingface_hub (``hf_hub_download`` / ``snapshot_download``, directly or through a library)
        with ``local_files_only`` as given and ``cache_dir``, and returns what it returns.
    what, cache_dir: for the log, e.g. "Piper voice en_US-lessac-medium", MODELS_DIR.
    Raises HubUnavailable when the model is neither cached nor downloadable (Hub unreachable, offline mode, no such
    model, HTTP or disk error). Blocking: call it from a worker thread.
    """
    import httpx2

    try:
        return download(True)
    except OSError:  # LocalEntryNotFoundError: not cached yet
        pass
    reason = unreachable_reason()
    if reason is not None:
        raise HubUnavailable(reason)
    log.info("%s is not in %s; downloading it from the Hugging Face Hub", what, cache_dir)
    try:
        result = download(False)
    except (OSError, httpx2.HTTPError) as exc:  # HfHubHTTPError (404...), LocalEntryNotFoundError, disk errors
        # huggingface_hub's messages run over several lines; the first one names the cause.
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubUnavailable(f"download failed: {first_line}") from exc
    log.info("Downloaded %s into %s", what, cache_dir)
    return result
