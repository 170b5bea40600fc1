"""The sandbox's state on disk: what the local Discord holds, saved so that the next playground finds it again.

A restart of the playground is then a restart of the bot against the same Discord: the threads it opened (with their
ids, which the bot remembers in its own database), the messages (authors, replies, attachment metadata, components),
the registered application commands (with their ids), the interactions whose tokens are still usable, and the id
counter, so that no new id collides with a saved one. What is not saved: the guild, its channels, roles and members,
which are fixed by ``sandbox.guild`` (nothing changes them, so they are the same on every start and saved records
name them by id); uploaded files' bytes (their metadata stays in the messages, their URLs answer 404 afterwards, as
an expired CDN link); who is in voice; the events.

The file is one JSON object (``FORMAT``, ``VERSION``), written atomically (``services.files.write_json_atomic``).
``snapshot`` and ``restore`` run on the event loop (they read and set the sandbox's stores, no I/O); ``read_state``,
``write_state`` and ``set_aside`` block (file I/O): run them in a thread.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from services.files import write_json_atomic

from . import guild
from .guild import SimChannel
from .model import INTERACTION_TOKEN_TTL_S, InteractionRecord, StoredMessage
from .threads import SimThread, thread_channel

FORMAT = "discord-assistant-sandbox-state"
VERSION = 1
"""The format version this sandbox writes and reads; a file with a higher one is set aside, never misread."""


class StateSource(Protocol):
    """What ``snapshot`` reads of a sandbox (``sandbox.server.Sandbox`` has it all)."""

    @property
    def last_snowflake(self) -> int: ...
    @property
    def command_ids(self) -> dict[tuple[int | None, str, int], int]: ...

    global_commands: list[dict[str, Any]]
    guild_commands: dict[int, list[dict[str, Any]]]
    threads: OrderedDict[int, SimThread]
    messages: OrderedDict[int, StoredMessage]
    interactions: OrderedDict[int, InteractionRecord]


class StateUnreadable(Exception):
    """A state file that cannot be used: not JSON, not a sandbox state, or written by a newer version; the message
    says which, in words for the owner."""


@dataclass
class RestoredState:
    """The stores of a state file, rebuilt and checked, ready to be put in a sandbox (``Sandbox.adopt_state``)."""

    last_snowflake: int = 0
    global_commands: list[dict[str, Any]] = field(default_factory=list)
    guild_commands: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    command_ids: dict[tuple[int | None, str, int], int] = field(default_factory=dict)
    threads: OrderedDict[int, SimThread] = field(default_factory=OrderedDict)
    messages: OrderedDict[int, StoredMessage] = field(default_factory=OrderedDict)
    interactions: OrderedDict[int, InteractionRecord] = field(default_factory=OrderedDict)
    dropped: int = 0  # records naming a member or channel the guild does not have (any more)

    def summary(self) -> str:
        """``3 threads, 42 messages, 9 commands`` (what came back)."""
        commands = len(self.global_commands) + sum(len(c) for c in self.guild_commands.values())
        dropped = f", {_count(self.dropped, 'record')} dropped (unknown member or channel)" if self.dropped else ""
        return (f"{_count(len(self.threads), 'thread')}, {_count(len(self.messages), 'message')}, "
                f"{_count(commands, 'command')}{dropped}")


def snapshot(sb: StateSource, *, loop_time: float) -> dict[str, Any]:
    """The JSON-ready state of ``sb`` (``loop_time``: the loop's clock now, to turn interaction times into ages).

    Cheap enough for the loop: payloads are copied one level deep (edits replace their top-level fields, never
    mutate them in place), so the result can be serialized in a thread while the sandbox goes on.
    """
    now = time.time()
    return {
        "format": FORMAT,
        "version": VERSION,
        "saved_at": dt.datetime.now(dt.UTC).isoformat(),
        "guild_id": guild.GUILD_ID,
        "last_snowflake": sb.last_snowflake,
        "commands": {
            "global": [dict(c) for c in sb.global_commands],
            "guilds": {str(g): [dict(c) for c in cmds] for g, cmds in sb.guild_commands.items()},
            "ids": [[g, name, kind, cmd_id] for (g, name, kind), cmd_id in sb.command_ids.items()],
        },
        "threads": [_thread_record(t) for t in sb.threads.values()],
        "messages": [_message_record(m) for m in sb.messages.values()],
        "interactions": [
            _interaction_record(r, created_at=now - (loop_time - r.created))
            for r in sb.interactions.values()
            if loop_time - r.created <= INTERACTION_TOKEN_TTL_S  # an older token is refused anyway
        ],
    }


def restore(data: Any, *, loop_time: float) -> RestoredState:
    """The stores saved in ``data`` (a parsed state file), checked; raises StateUnreadable for anything that is not
    a state of this format and version. ``loop_time``: the loop's clock now, to turn saved times back into it.
    Records naming a member or channel the guild lacks are dropped (counted in ``dropped``)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StateUnreadable("it is not a saved sandbox state")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise StateUnreadable(f"its format version {version!r} is not a number")
    if version > VERSION:
        raise StateUnreadable(f"it was written by a newer version (format {version}; this one reads {VERSION})")
    if data.get("guild_id") != guild.GUILD_ID:
        raise StateUnreadable(f"it is the state of another guild ({data.get('guild_id')!r})")
    try:
        return _restore(data, loop_time)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateUnreadable(f"it is damaged ({type(exc).__name__}: {exc})") from None


def read_state(path: Path) -> Any | None:
    """The parsed JSON of ``path``, or None when there is no such file; blocking. Raises StateUnreadable when it
    cannot be read or is not JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StateUnreadable(f"it cannot be read ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateUnreadable(f"it is not valid JSON ({exc})") from None


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (from ``snapshot``) to ``path`` atomically; blocking. Raises OSError (``path`` unchanged)."""
    write_json_atomic(path, state, indent=None)


def set_aside(path: Path) -> Path:
    """Rename the unusable ``path`` to ``<name>.unreadable-<UTC timestamp>`` beside it, so nothing overwrites it;
    returns the new path; blocking. Raises OSError when it cannot be renamed."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.unreadable-{stamp}")
    counter = 1
    while target.exists():
        counter += 1
        target = path.with_name(f"{path.name}.unreadable-{stamp}-{counter}")
    path.rename(target)
    return target


# ----------------------------------------------------------------------------------------------- records


def _thread_record(thread: SimThread) -> dict[str, Any]:
    return {
        "id": thread.id, "name": thread.name, "type": thread.channel.type, "parent_id": thread.channel.parent_id,
        "owner_id": thread.owner.id, "auto_archive_duration": thread.auto_archive_duration,
        "archived": thread.archived, "locked": thread.locked, "deleted": thread.deleted,
        "message_count": thread.message_count, "created_at": thread.created_at,
        "archive_timestamp": thread.archive_timestamp,
    }  # fmt: skip


def _message_record(stored: StoredMessage) -> dict[str, Any]:
    return {
        "payload": dict(stored.payload), "author_id": stored.author.id, "channel_id": stored.channel.id,
        "ephemeral": stored.ephemeral, "interaction_id": stored.interaction_id, "loading": stored.loading,
        "deleted": stored.deleted,
    }  # fmt: skip


def _interaction_record(record: InteractionRecord, *, created_at: float) -> dict[str, Any]:
    return {
        "id": record.id, "token": record.token, "user_id": record.user.id, "channel_id": record.channel.id,
        "command_name": record.command_name, "created_at": created_at, "response_type": record.response_type,
        "ephemeral": record.ephemeral, "original_id": record.original_id, "message_ids": list(record.message_ids),
        "kind": record.kind, "component_message_id": record.component_message_id,
    }  # fmt: skip


def _restore(data: dict[str, Any], loop_time: float) -> RestoredState:
    state = RestoredState(last_snowflake=_int(data["last_snowflake"]))
    commands = data["commands"]
    state.global_commands = [_command(c) for c in commands["global"]]
    state.guild_commands = {int(g): [_command(c) for c in cmds] for g, cmds in commands["guilds"].items()}
    for guild_id, name, kind, cmd_id in commands["ids"]:
        state.command_ids[(None if guild_id is None else int(guild_id), str(name), int(kind))] = _int(cmd_id)
    for rec in data["threads"]:
        parent = guild.channel_by_id(_int(rec["parent_id"]))
        owner = guild.user_by_id(_int(rec["owner_id"]))
        if parent is None or owner is None:
            state.dropped += 1
            continue
        thread = SimThread(
            thread_channel(_int(rec["id"]), str(rec["name"]), parent, int(rec["type"])), owner,
            auto_archive_duration=int(rec["auto_archive_duration"]), archived=bool(rec["archived"]),
            locked=bool(rec["locked"]), deleted=bool(rec["deleted"]), message_count=int(rec["message_count"]),
            created_at=str(rec["created_at"]), archive_timestamp=str(rec["archive_timestamp"]),
        )  # fmt: skip
        state.threads[thread.id] = thread
    for rec in data["messages"]:
        author, channel = guild.user_by_id(_int(rec["author_id"])), _channel(state, _int(rec["channel_id"]))
        payload = rec["payload"]
        if author is None or channel is None:
            state.dropped += 1
            continue
        if not isinstance(payload, dict) or _int(payload["id"]) <= 0:
            raise ValueError("a message without an id")
        interaction_id = rec["interaction_id"]
        state.messages[_int(payload["id"])] = StoredMessage(
            payload, author, channel, ephemeral=bool(rec["ephemeral"]),
            interaction_id=None if interaction_id is None else _int(interaction_id), loading=bool(rec["loading"]),
            deleted=bool(rec["deleted"]),
        )  # fmt: skip
    now = time.time()
    for rec in data["interactions"]:
        user, channel = guild.user_by_id(_int(rec["user_id"])), _channel(state, _int(rec["channel_id"]))
        age = now - float(rec["created_at"])
        if user is None or channel is None:
            state.dropped += 1
            continue
        if age > INTERACTION_TOKEN_TTL_S:
            continue  # expired while the playground was stopped: Discord refuses its token too
        record = InteractionRecord(
            id=_int(rec["id"]), token=str(rec["token"]), user=user, channel=channel,
            command_name=str(rec["command_name"]), created=loop_time - max(0.0, age),
            response_type=None if rec["response_type"] is None else int(rec["response_type"]),
            ephemeral=bool(rec["ephemeral"]),
            original_id=None if rec["original_id"] is None else _int(rec["original_id"]),
            message_ids=[_int(m) for m in rec["message_ids"]], kind=int(rec["kind"]),
            component_message_id=(None if rec["component_message_id"] is None
                                  else _int(rec["component_message_id"])),
        )  # fmt: skip
        state.interactions[record.id] = record
    newest = max([state.last_snowflake, *state.messages, *state.threads, *state.interactions,
                  *state.command_ids.values()])
    state.last_snowflake = newest  # never below an id in use, whatever the counter said
    return state


def _command(cmd: Any) -> dict[str, Any]:
    if not isinstance(cmd, dict) or not isinstance(cmd.get("name"), str) or "id" not in cmd:
        raise ValueError("an application command without a name or id")
    return cmd


def _channel(state: RestoredState, channel_id: int) -> SimChannel | None:
    thread = state.threads.get(channel_id)
    return thread.channel if thread is not None else guild.channel_by_id(channel_id)


def _int(value: Any) -> int:
    """A saved id or count: an int (a string of digits is accepted); raises TypeError/ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"expected an id, got {value!r}")
    return int(value)



def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
