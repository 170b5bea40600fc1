"""Cooldowns, length limits and the admin check, all taken from the settings at run time.

Discord enforces an option's ``max_length`` in its client, but a modified client can send anything, so
every length is checked again here; the admin check reads the member's permissions from the interaction,
never trusting the command's default permissions alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Protocol, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from config import Settings
from services.errors import InvalidInput

T = TypeVar("T")


class Configured(Protocol):
    """What the checks read of the client: its settings (the bot is one)."""

    @property
    def settings(self) -> Settings: ...


def settings_of(interaction: discord.Interaction) -> Settings:
    """The settings of the client the interaction came to."""
    client: Configured = interaction.client  # type: ignore[assignment]
    return client.settings


class InputTooLong(app_commands.AppCommandError):
    """An option or message is longer than its configured limit."""

    def __init__(self, what: str, length: int, limit: int) -> None:
        super().__init__(f"{what} is {length} characters long; the limit is {limit}.")
        self.what = what
        self.length = length
        self.limit = limit


class NotAdmin(app_commands.CheckFailure):
    """The member has neither Manage Server nor a configured admin role."""


class ShuttingDown(app_commands.CheckFailure):
    """The bot is shutting down and takes no new commands."""


def ensure_length(text: str, limit: int, what: str = "Your message") -> str:
    """Return ``text`` stripped; raise InputTooLong when it exceeds ``limit`` characters, InvalidInput when it
    is blank (only whitespace passes an option's min_length, and would reach the model as an empty message)."""
    if len(text) > limit:
        raise InputTooLong(what, len(text), limit)
    stripped = text.strip()
    if not stripped:
        raise InvalidInput(f"{what} is blank; write some text and try again.")
    return stripped


def is_admin(member: discord.abc.User, permissions: discord.Permissions, admin_role_ids: list[int]) -> bool:
    """True when the member has Manage Server (or Administrator) or one of ``admin_role_ids``."""
    if permissions.manage_guild or permissions.administrator:
        return True
    roles = getattr(member, "roles", [])
    return any(role.id in admin_role_ids for role in roles)


def admin_only() -> Callable[[T], T]:
    """Make an app command admins-only: hidden by default (Manage Server) and refused at run time (``is_admin``).

    Discord's default permissions only hide the command in its client and a server can override them, so the
    run-time check is what enforces it. List it last (nearest the function) so it runs before the cooldowns: a
    refused member uses up no cooldown.
    """

    async def predicate(interaction: discord.Interaction) -> bool:
        if interaction.guild is None or not is_admin(
            interaction.user, interaction.permissions, settings_of(interaction).ADMIN_ROLE_IDS
        ):
            raise NotAdmin("admin only")
        return True

    def decorator(command: T) -> T:
        return app_commands.default_permissions(manage_guild=True)(app_commands.check(predicate)(command))

    return decorator


def member_cooldown(setting: str) -> Callable:
    """Per-member cooldown of one use per ``settings.<setting>`` seconds (0 disables it)."""

    def factory(interaction: discord.Interaction) -> app_commands.Cooldown | None:
        per = getattr(settings_of(interaction), setting)
        return app_commands.Cooldown(1, per) if per > 0 else None

    return app_commands.checks.dynamic_cooldown(factory, key=lambda i: (i.guild_id, i.user.id))


def guild_cooldown(setting: str) -> Callable:
    """Per-guild cooldown of one use per ``settings.<setting>`` seconds (0 disables it)."""

    def factory(interaction: discord.Interaction) -> app_commands.Cooldown | None:
        per = getattr(settings_of(interaction), setting)
        return app_commands.Cooldown(1, per) if per > 0 else None

    return app_commands.checks.dynamic_cooldown(factory, key=lambda i: i.guild_id)


def message_cooldown(per_s: float) -> commands.CooldownMapping:
    """Per-member cooldown for mention replies (messages are not app commands); bounded by discord.py."""
    return commands.CooldownMapping.from_cooldown(1, per_s, commands.BucketType.member)


def set_max_length(command: app_commands.Command, parameter: str, limit: int) -> None:
    """Advertise ``limit`` as the string option's max_length to Discord's client (Discord accepts at most 6000).

    ``command`` is the cog instance's copy (``self.chat`` in ``cog_load``), so that each bot advertises its
    own settings. Raises KeyError for an unknown parameter and TypeError for a non-string one.
    """
    # DEP-WARN(discord.py 2.7.1): ``Command._params`` is private; if it changes this raises at cog load
    # (AttributeError/KeyError) and the cog fails to load rather than advertising a wrong limit. discord.py
    # writes a string option's max_length from ``CommandParameter.max_value`` (setting ``max_length`` did
    # nothing); tests/e2e/test_chat_e2e.py checks the synced payload. The parameter object is shared with the
    # class-level command (cogs copy commands shallowly), so this command gets its own copy.
    param = command._params[parameter]
    if param.type is not discord.AppCommandOptionType.string:
        raise TypeError(f"{command.qualified_name} {parameter} is not a string option")
    param = copy.copy(param)
    param.max_value = min(limit, 6000)
    command._params[parameter] = param
