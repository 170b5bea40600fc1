"""The sandbox's data model: what it stores about messages, interactions and uploads, and its error type.

Shared by the façade (``sandbox.server``), the REST routes (``sandbox.rest``) and the payload builders
(``sandbox.messages``, ``sandbox.interactions``); it imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .guild import SimChannel, SimUser

Event = dict[str, Any]
"""One sandbox event, as published and printed by the playground with ``--json`` (schema: docs/sandbox.md)."""

INTERACTION_TOKEN_TTL_S = 15 * 60  # interaction webhooks stay usable for 15 minutes
UPLOAD_LIMIT_BYTES = 10 * 1024 * 1024  # per-file limit of a non-boosted guild


class SandboxError(Exception):
    """Invalid use of the sandbox: unknown member, channel, command, option or value; the message says which."""


@dataclass(frozen=True)
class InvokeHandle:
    """An invoked slash command; pass it as ``since=`` to ``wait_for`` to see everything it caused."""

    interaction_id: int
    token: str
    command: str
    user: str
    channel: str
    event_index: int


@dataclass
class Upload:
    """A file in a multipart request or an attachment option: name, bytes and MIME type."""

    filename: str
    data: bytes
    content_type: str | None = None
    description: str | None = None


@dataclass
class StoredMessage:
    """A message as the sandbox keeps it; ``payload`` is the Discord message object REST returns."""

    payload: dict[str, Any]
    author: SimUser
    channel: SimChannel
    ephemeral: bool = False
    interaction_id: int | None = None
    loading: bool = False  # a deferred interaction's "thinking" original response, not yet filled
    deleted: bool = False
    shown_at: float = 0.0  # loop.time() of the last create/edit members saw

    @property
    def id(self) -> int:
        return int(self.payload["id"])


@dataclass
class InteractionRecord:
    """One INTERACTION_CREATE sent to the bot and what the bot has done with it."""

    id: int
    token: str
    user: SimUser
    channel: SimChannel
    command_name: str
    created: float  # loop.time() when dispatched; the callback deadline counts from here
    response_type: int | None = None
    ephemeral: bool = False
    original_id: int | None = None
    message_ids: list[int] = field(default_factory=list)  # original + followups
    kind: int = 2  # interaction type: 2 application command, 3 message component, 4 autocomplete
    component_message_id: int | None = None  # for kind 3: the message whose component was used
