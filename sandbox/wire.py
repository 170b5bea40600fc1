"""What crossed the wire between the bot and the sandbox, recorded on request: REST exchanges and gateway dispatches.

A test sets ``Sandbox.wire = WireLog()`` (or passes ``Sandbox(wire=WireLog())``) and afterwards reads ``rest`` and
``dispatches``, e.g. to check every payload against Discord's published API description
(``tests/sandbox/test_conformance.py``). Nothing is recorded while ``Sandbox.wire`` is None (the default).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

MAX_RECORDS = 10_000  # each of rest and dispatches keeps the latest this many


@dataclass
class RestExchange:
    """One REST request and its response: ``path`` without the ``/api/v10`` prefix, ``query`` its parameters,
    ``request`` the JSON body (a multipart body's ``payload_json``; None without a body), ``status`` the HTTP status,
    ``response`` the JSON body (None for an empty or non-JSON one, e.g. 204)."""

    method: str
    path: str
    query: dict[str, str]
    request: Any
    status: int
    response: Any


@dataclass
class WireLog:
    """The latest ``MAX_RECORDS`` REST exchanges (``rest``) and gateway dispatches (``dispatches``: ``{"op": 0, "t",
    "s", "d"}`` payloads, as sent), oldest first."""

    rest: deque[RestExchange] = field(default_factory=lambda: deque(maxlen=MAX_RECORDS))
    dispatches: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_RECORDS))
