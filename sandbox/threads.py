"""Threads of the sandbox's guild, as Discord has them: thread channels (type 11 public, 12 private) under a text
channel, created from a message (the thread takes the message's id) or without one, archived and deleted.

Pure data and payloads; the façade (``sandbox.server``) keeps the threads and dispatches THREAD_CREATE,
THREAD_UPDATE and THREAD_DELETE. Discord's shapes: https://discord.com/developers/docs/resources/channel#thread-metadata-object
and https://discord.com/developers/docs/topics/threads.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from . import guild
from .guild import SimChannel, SimUser

PUBLIC_THREAD = 11
PRIVATE_THREAD = 12
THREAD_NAME_MAX = 100  # characters; Discord rejects longer names (50035)
AUTO_ARCHIVE_MINUTES = (60, 1440, 4320, 10080)


@dataclass
class SimThread:
    """A thread: ``channel`` is its channel (type 11/12, ``parent_id`` set); archived/deleted change over time."""

    channel: SimChannel
    owner: SimUser
    auto_archive_duration: int = 1440
    archived: bool = False
    locked: bool = False
    deleted: bool = False
    message_count: int = 0
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    archive_timestamp: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    @property
    def id(self) -> int:
        return self.channel.id

    @property
    def name(self) -> str:
        return self.channel.name

    @property
    def parent(self) -> SimChannel:
        parent = guild.channel_by_id(self.channel.parent_id or 0)
        assert parent is not None
        return parent


def thread_channel(thread_id: int, name: str, parent: SimChannel, kind: int = PUBLIC_THREAD) -> SimChannel:
    """The channel of a new thread under ``parent``; it has the parent's overwrites, as threads inherit them."""
    return SimChannel(thread_id, name, kind, 0, parent.overwrites, parent_id=parent.id)


def thread_payload(thread: SimThread, *, newly_created: bool = False) -> dict[str, Any]:
    """The thread channel object (REST, THREAD_CREATE/UPDATE and GUILD_CREATE's ``threads``)."""
    data: dict[str, Any] = {
        "id": str(thread.id),
        "type": thread.channel.type,
        "guild_id": str(guild.GUILD_ID),
        "parent_id": str(thread.channel.parent_id),
        "owner_id": str(thread.owner.id),
        "name": thread.name,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "message_count": thread.message_count,
        "member_count": 1,
        "total_message_sent": thread.message_count,
        "flags": 0,
        "thread_metadata": {
            "archived": thread.archived,
            "auto_archive_duration": thread.auto_archive_duration,
            "archive_timestamp": thread.archive_timestamp,
            "locked": thread.locked,
            "create_timestamp": thread.created_at,
        },
    }
    if newly_created:
        data["newly_created"] = True
    return data


def thread_delete_payload(thread: SimThread) -> dict[str, Any]:
    """THREAD_DELETE's data: the id, guild_id, parent_id and type of the thread."""
    return {"id": str(thread.id), "guild_id": str(guild.GUILD_ID), "parent_id": str(thread.channel.parent_id),
            "type": thread.channel.type}
