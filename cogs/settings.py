"""Chat settings: /settings show, persona, model, free-channel, thinking and reset (admins).

The persona (system prompt) and the chat model are set for the guild or for one channel (which then overrides the
guild); free channel, where the bot answers every message without a mention, is set per channel; thinking (whether
a reasoning model's thinking comes with its answers, as a spoiler-marked file) per guild. A thread has its
parent channel's settings, so these commands used in a thread change the parent's. Values live in the database
(``services/chat/chat_settings.py``); every change is logged with the guild, channel and member.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import admin_only, ensure_length, is_admin, member_cooldown, set_max_length
from bot.client import AssistantBot, settings_channel_id
from services.chat.chat_settings import SCOPES, ChatSettings, Field, Setting, check_chat_model
from services.errors import BackendUnavailable

log = logging.getLogger(__name__)

Scope = Literal["channel", "guild"]
AUTOCOMPLETE_TIMEOUT_S = 2.0  # Discord drops an autocomplete answer after 3 s
MAX_CHOICES = 25  # Discord's limit of autocomplete choices
SHOWN_PERSONA_CHARS = 1500

LABELS: dict[Field, str] = {"persona": "Persona", "model": "Model", "free_channel": "Free channel",
                             "show_thinking": "Show thinking"}
FIELD_CHOICES = [app_commands.Choice(name=label, value=field) for field, label in LABELS.items()]


def describe(settings: ChatSettings) -> str:
    """The effective settings as a short message, each with where it comes from."""

    def source(setting: Setting[object]) -> str:
        return {"channel": "set for this channel", "guild": "set for the server", "default": "default"}[setting.source]

    persona = settings.persona.value
    if len(persona) > SHOWN_PERSONA_CHARS:
        persona = persona[:SHOWN_PERSONA_CHARS] + "…"
    free = "on: I answer every message here" if settings.free_channel.value else "off: mention me or use /chat"
    thinking = ("shown: attached to answers as a spoiler file" if settings.show_thinking.value
                else "hidden")
    return (f"**Model**: `{settings.model.value}` ({source(settings.model)})\n"
            f"**Free channel**: {free} ({source(settings.free_channel)})\n"
            f"**Thinking** of reasoning models: {thinking} ({source(settings.show_thinking)})\n"
            f"**Persona** ({source(settings.persona)}):\n>>> {discord.utils.escape_mentions(persona)}")


@app_commands.guild_only()
class Settings(commands.GroupCog, group_name="settings", group_description="Chat settings of this server (admins)"):
    """/settings (see module docstring)."""

    def __init__(self, bot: AssistantBot) -> None:
        self.bot = bot
        super().__init__()

    async def cog_load(self) -> None:
        set_max_length(self.persona, "text", self.bot.settings.PERSONA_MAX_CHARS)

    async def _change(self, interaction: discord.Interaction, field: Field, scope: Scope,
                      value: str | bool | None, what: str) -> None:
        guild_id = interaction.guild_id or 0
        channel_id = settings_channel_id(interaction.channel or interaction.channel_id or 0)
        await self.bot.chat_settings.set(guild_id, None if scope == "guild" else channel_id, field, value)
        log.info("guild %s channel %s: member %s %s %s for the %s", guild_id, channel_id, interaction.user.id,
                 "reset" if value is None else "set", field if value is None else f"{field} to {value!r}", scope)
        text = f"{what} for {'this server' if scope == 'guild' else 'this channel'}."
        if interaction.response.is_done():  # deferred
            await interaction.edit_original_response(content=text)
        else:
            await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="show", description="Show the persona, model and free-channel setting of this channel.")
    @member_cooldown("SETTINGS_COOLDOWN_S")
    @admin_only()
    async def show(self, interaction: discord.Interaction) -> None:
        settings = await self.bot.chat_settings_of(interaction.guild_id, interaction.channel or interaction.channel_id)
        await interaction.response.send_message(describe(settings), ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())

    @app_commands.command(name="persona", description="Set the system prompt the assistant follows (admins).")
    @app_commands.describe(text="How the assistant should behave, e.g. 'You are a pirate. Answer briefly.'",
                           scope="channel: only here (default); guild: the whole server, where no channel sets one")
    @member_cooldown("SETTINGS_COOLDOWN_S")
    @admin_only()
    async def persona(self, interaction: discord.Interaction, text: app_commands.Range[str, 1, 6000],
                      scope: Scope = "channel") -> None:
        persona = ensure_length(text, self.bot.settings.PERSONA_MAX_CHARS, "The persona")
        await self._change(interaction, "persona", scope, persona, "Persona set")

    @app_commands.command(name="model", description="Set the Ollama model that answers chat (admins).")
    @app_commands.describe(name="A model Ollama has pulled, e.g. llama3.2",
                           scope="channel: only here (default); guild: the whole server, where no channel sets one")
    @member_cooldown("SETTINGS_COOLDOWN_S")
    @admin_only()
    async def model(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 200],
                    scope: Scope = "channel") -> None:
        # Deferred: asking Ollama may take up to LLM_TIMEOUT_S, past Discord's 3 s deadline.
        await interaction.response.defer(ephemeral=True, thinking=True)
        model = await check_chat_model(self.bot.llm, ensure_length(name, 200, "The model name"))
        await self._change(interaction, "model", scope, model, f"Chat model set to `{model}`")

    @model.autocomplete("name")
    async def model_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """The models Ollama has whose name contains what was typed; none when Ollama does not answer in time
        or the member is not an admin (the command would refuse them anyway)."""
        if interaction.guild is None or not is_admin(interaction.user, interaction.permissions,
                                                     self.bot.settings.ADMIN_ROLE_IDS):
            return []
        try:
            async with asyncio.timeout(AUTOCOMPLETE_TIMEOUT_S):
                names = await self.bot.llm.list_models()
        except (BackendUnavailable, TimeoutError) as exc:
            log.warning("model autocomplete: Ollama did not list its models (%s)", exc or "timed out")
            return []
        typed = current.strip().lower()
        matching = [name for name in sorted(names) if typed in name.lower()]
        return [app_commands.Choice(name=name[:100], value=name[:100]) for name in matching[:MAX_CHOICES]]

    @app_commands.command(name="free-channel", description="Answer every message in this channel, no mention needed.")
    @app_commands.describe(enabled="True: answer every message here; False: only mentions and /chat")
    @member_cooldown("SETTINGS_COOLDOWN_S")
    @admin_only()
    async def free_channel(self, interaction: discord.Interaction, enabled: bool) -> None:
        what = ("Free channel on: I will answer every message" if enabled
                else "Free channel off: I will answer mentions and /chat only")
        await self._change(interaction, "free_channel", "channel", enabled, what)

    @app_commands.command(name="thinking", description="Attach a reasoning model's thinking to its answers (admins).")
    @app_commands.describe(show="True: attach it as a spoiler-marked file; False: drop it (default). Never spoken.")
    @member_cooldown("SETTINGS_COOLDOWN_S")
    @admin_only()
    async def thinking(self, interaction: discord.Interaction, show: bool) -> None:
        what = ("Thinking shown: answers of reasoning models come with their thinking as a spoiler file" if show
                else "Thinking hidden: answers of reasoning models come without their thinking")
        await self._change(interaction, "show_thinking", "guild", show, what)

    @app_commands.command(name="reset", description="Go back to the server's or the default value of a setting.")
    @app_commands.describe(setting="The setting to reset",
                           scope="channel: this channel's value (default); guild: the server's value")
    @app_commands.choices(setting=FIELD_CHOICES)
    @member_cooldown("SETTINGS_COOLDOWN_S")
    @admin_only()
    async def reset(self, interaction: discord.Interaction, setting: app_commands.Choice[str],
                    scope: Scope = "channel") -> None:
        field: Field = setting.value  # type: ignore[assignment]  # one of FIELD_CHOICES
        if field == "show_thinking":
            scope = SCOPES[field][0]  # a guild setting: no channel value to reset
        await self._change(interaction, field, scope, None, f"{LABELS[field]} reset")


async def setup(bot: AssistantBot) -> None:
    await bot.add_cog(Settings(bot))
