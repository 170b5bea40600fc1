"""Chat settings per guild and channel: the persona (system prompt), the chat model and free channels.

Admins set them with ``/settings``; they are kept in the ``chat_settings`` table of ``services.storage.database``, one
row per scope: ``channel_id`` 0 is the guild's row, any other id a channel's. A value left NULL is not set at that scope
and falls through: channel, then guild, then the defaults from ``config.py`` (``SYSTEM_PROMPT``, ``CHAT_MODEL``;
a channel is not free by default). The persona and the model can be set for the guild and overridden per channel;
free channel is per channel only; show thinking (attach a reasoning model's thinking to its answers as a file, see
``services.chat.thinking``) per guild only. Threads have no settings of their own: the caller passes the parent
channel's id (see ``bot.client.AssistantBot.chat_settings``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from services.chat.llm import LLMClient
from services.errors import InvalidInput, ModelNotFound
from services.storage.database import Database

log = logging.getLogger(__name__)

T = TypeVar("T")
Source = Literal["channel", "guild", "default"]
Field = Literal["persona", "model", "free_channel", "show_thinking"]
FIELDS: tuple[Field, ...] = ("persona", "model", "free_channel", "show_thinking")
GUILD_SCOPE = 0  # the channel_id of a guild's own row

#: Which scopes each setting can be set at.
SCOPES: dict[Field, tuple[str, ...]] = {"persona": ("channel", "guild"), "model": ("channel", "guild"),
                                        "free_channel": ("channel",), "show_thinking": ("guild",)}


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One effective value and where it comes from: set on the channel, on the guild, or the default."""

    value: T
    source: Source


@dataclass(frozen=True)
class ChatSettings:
    """The effective chat settings of one channel."""

    persona: Setting[str]
    model: Setting[str]
    free_channel: Setting[bool]
    show_thinking: Setting[bool]


Row = tuple[str | None, str | None, int | None, int | None]  # persona, model, free_channel, show_thinking
UNSET: Row = (None, None, None, None)


class ChatSettingsStore:
    """Reads and writes ``chat_settings`` in the bot's :class:`Database` (opened by its owner).

    default_persona / default_model: the values where nothing is set (``SYSTEM_PROMPT``, ``CHAT_MODEL``).
    A guild's rows (a handful: one per configured channel) are read once and cached until they change.
    """

    def __init__(self, database: Database, *, default_persona: str, default_model: str) -> None:
        self.database = database
        self.default_persona = default_persona
        self.default_model = default_model
        self._guilds: dict[int, dict[int, Row]] = {}

    async def _rows(self, guild_id: int) -> dict[int, Row]:
        rows = self._guilds.get(guild_id)
        if rows is None:
            fetched = await self.database.fetchall(
                "SELECT channel_id, persona, model, free_channel, show_thinking FROM chat_settings WHERE guild_id = ?",
                (guild_id,))
            rows = {channel_id: tuple(values) for channel_id, *values in fetched}
            self._guilds[guild_id] = rows
        return rows

    async def effective(self, guild_id: int | None, channel_id: int) -> ChatSettings:
        """The settings that apply in ``channel_id`` of ``guild_id`` (None: a direct message, the defaults).

        channel_id: the channel, or a thread's parent channel.
        """
        rows = await self._rows(guild_id) if guild_id is not None else {}
        channel = rows.get(channel_id, UNSET) if channel_id != GUILD_SCOPE else UNSET
        guild = rows.get(GUILD_SCOPE, UNSET)

        def pick(index: int, default: T) -> Setting[T]:
            if channel[index] is not None:
                return Setting(channel[index], "channel")  # type: ignore[arg-type]
            if guild[index] is not None:
                return Setting(guild[index], "guild")  # type: ignore[arg-type]
            return Setting(default, "default")

        free, show_thinking = channel[2], guild[3]
        return ChatSettings(
            persona=pick(0, self.default_persona),
            model=pick(1, self.default_model),
            free_channel=Setting(bool(free), "channel") if free is not None else Setting(False, "default"),
            show_thinking=(Setting(bool(show_thinking), "guild") if show_thinking is not None
                           else Setting(False, "default")),
        )

    async def set(self, guild_id: int, channel_id: int | None, field: Field, value: str | bool | None) -> None:
        """Set ``field`` for the channel (``channel_id``) or the whole guild (None); ``value`` None resets it.

        Raises InvalidInput when the field cannot be set at that scope (free channel for a guild, show thinking for
        a channel).
        """
        scope = "guild" if channel_id is None else "channel"
        if scope not in SCOPES[field]:
            only = "a channel" if SCOPES[field] == ("channel",) else "the whole server"
            raise InvalidInput(f"The {field.replace('_', ' ')} setting can only be set for {only}.")
        key = GUILD_SCOPE if channel_id is None else channel_id
        stored = int(value) if isinstance(value, bool) else value
        async with self.database.transaction() as db:
            # The column name comes from FIELDS (a Literal), never from user input.
            await db.execute(
                f"INSERT INTO chat_settings (guild_id, channel_id, {field}) VALUES (?, ?, ?)"
                f" ON CONFLICT (guild_id, channel_id) DO UPDATE SET {field} = excluded.{field}",
                (guild_id, key, stored),
            )
            await db.execute(
                "DELETE FROM chat_settings WHERE guild_id = ? AND channel_id = ?"
                " AND persona IS NULL AND model IS NULL AND free_channel IS NULL AND show_thinking IS NULL",
                (guild_id, key),
            )
        self._guilds.pop(guild_id, None)  # re-read on next use


async def check_chat_model(llm: LLMClient, name: str) -> str:
    """``name`` when Ollama has it and it can chat.

    Raises ModelNotFound (whose message says ``ollama pull NAME``) when it is not pulled, InvalidInput when its
    capabilities (``/api/show``) lack "completion" (an embedding model), BackendUnavailable when Ollama cannot be
    reached. A server too old to report capabilities is trusted.
    """
    name = name.strip()
    if not await llm.has_model(name):
        raise ModelNotFound(name)
    capabilities = await llm.capabilities(name)
    if capabilities and "completion" not in capabilities:
        raise InvalidInput(f"The model `{name}` cannot chat (its capabilities: {', '.join(capabilities)}); "
                           "choose a chat model such as llama3.2.")
    return name
