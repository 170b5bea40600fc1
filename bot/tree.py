"""The command tree: refuses new commands while shutting down and turns every error into one sentence.

Each known error type becomes a short reply; anything unexpected is logged with an error id that the
reply quotes, so an admin can find it. Replies are ephemeral, except when the command had already
deferred publicly ("thinking..."): then the placeholder itself is replaced, so it never hangs.
"""

from __future__ import annotations

import logging
import uuid

import discord
from discord import app_commands

from bot.checks import InputTooLong, NotAdmin, ShuttingDown
from services.errors import ServiceError

log = logging.getLogger(__name__)


#: Discord's JSON error code for an interaction whose token expired or was never acknowledged in time.
UNKNOWN_INTERACTION = 10062


def error_message(error: Exception) -> str:
    """The sentence shown to the member for ``error`` (internal errors are logged here with an id)."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, app_commands.TransformerError):
        return f"The value {error.value!r} is not a valid {error.type.name.lower()}; check the option and try again."
    if isinstance(error, ServiceError):
        return error.user_message
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down: you can use this command again in {error.retry_after:.0f} s."
    if isinstance(error, InputTooLong):
        return f"{error} Shorten it and try again."
    if isinstance(error, NotAdmin):
        return "Only admins (Manage Server permission or an admin role) can use this command."
    if isinstance(error, app_commands.MissingPermissions):
        missing = ", ".join(p.replace("_", " ").title() for p in error.missing_permissions)
        return f"You need the {missing} permission to use this command."
    if isinstance(error, app_commands.BotMissingPermissions):
        missing = ", ".join(p.replace("_", " ").title() for p in error.missing_permissions)
        return f"I need the {missing} permission here; ask an admin to grant it."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command only works in a server."
    if isinstance(error, ShuttingDown):
        return "The bot is shutting down; try again in a minute."
    if isinstance(error, app_commands.CheckFailure):
        return "You cannot use this command here."
    error_id = uuid.uuid4().hex[:8]
    log.error("internal error %s", error_id, exc_info=error)
    return f"Something went wrong on my side (error id `{error_id}`); an admin can find it in the log."


async def reply_error(interaction: discord.Interaction, text: str) -> None:
    """Show ``text`` to the member: ephemeral, or in place of a public "thinking..." placeholder."""
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True)
        elif interaction.response.type == discord.InteractionResponseType.deferred_channel_message:
            await interaction.edit_original_response(content=f"⚠️ {text}")
        else:
            await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException as exc:
        # The interaction may have expired or Discord may be unreachable; the log is all that is left.
        log.warning("could not deliver error reply %r: %s", text, exc)


class AssistantTree(app_commands.CommandTree):
    """CommandTree whose checks and errors follow the rules of the house (see the module docstring)."""

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        if getattr(interaction.client, "shutting_down", False):
            await reply_error(interaction, error_message(ShuttingDown()))
            return False
        return True

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError, /) -> None:
        original = getattr(error, "original", error)
        if isinstance(original, discord.NotFound) and original.code == UNKNOWN_INTERACTION:
            # Acknowledged after Discord's 3 s deadline (the bot was overloaded): no reply can reach the member
            # any more, and this is not a bug to trace.
            command = interaction.command.qualified_name if interaction.command else "?"
            log.warning("/%s of interaction %s expired before it was acknowledged (over 3 s)", command, interaction.id)
            return
        await reply_error(interaction, error_message(error))
