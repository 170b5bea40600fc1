"""The server's documents: /docs ask, search, list, and (admins) add, remove, reload.

A guild's documents are its own folder plus the global folder; reload re-indexes both incrementally and
shows its progress by editing the reply. A reload cut short by shutdown says so in that reply, with how far
it got: the index keeps every file it finished, so the next reload continues from there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import PurePath
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.answers import stream_answer
from bot.checks import admin_only, ensure_length, guild_cooldown, member_cooldown, set_max_length
from bot.client import AssistantBot
from bot.downloads import read_attachment
from bot.kept_questions import from_interaction, keeper
from bot.ratelimits import EditBudget
from bot.streaming import StreamedReply, edit_after_cancel, interaction_budget, interaction_reply
from services.chat.answering import Grounding, Place, Question
from services.errors import InvalidInput
from services.knowledge.documents import SUPPORTED_SUFFIXES
from services.knowledge.index import GLOBAL_SCOPE, ReloadProgress, ReloadReport
from services.storage.waiting_questions import WaitingQuestion

log = logging.getLogger(__name__)

EMBED_DESCRIPTION_MAX = 4096
NOTHING_FOUND = "I found nothing about that in this server's documents."


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_report(reports: list[ReloadReport]) -> str:
    """One paragraph per scope: counts of added, updated, removed, unchanged and skipped, and why skipped."""
    lines = []
    for report in reports:
        where = "Global documents" if report.scope == GLOBAL_SCOPE else "This server's documents"
        lines.append(
            f"**{where}** ({report.seconds:.1f} s): {len(report.added)} added, {len(report.updated)} updated, "
            f"{len(report.removed)} removed, {len(report.unchanged)} unchanged, {len(report.skipped)} skipped."
        )
        lines.extend(f"• skipped `{name}`: {reason}" for name, reason in report.skipped[:20])
        if len(report.skipped) > 20:
            lines.append(f"• … and {len(report.skipped) - 20} more skipped")
    return "\n".join(lines)


def _scope_name(scope: str) -> str:
    return "the global documents" if scope == GLOBAL_SCOPE else "this server's documents"


def format_interrupted(done: list[ReloadReport], scope: str, reached: ReloadProgress | None, *, full: bool,
                       shutting_down: bool) -> str:
    """The reload reply once the reload was cancelled: what finished (``done``), where it stopped (``scope``,
    the last ``reached`` progress, None before the first file) and that the next reload continues from there."""
    why = "the bot is shutting down" if shutting_down else "it was cancelled"
    if reached is None:
        where = f"before it started on {_scope_name(scope)}"
    elif reached.current is None:
        where = f"while finishing {_scope_name(scope)}"
    else:
        where = (f"at file {reached.files_done + 1} of {reached.files_total} of {_scope_name(scope)} "
                 f"(`{reached.current}`)")
    lines = [f"⚠️ Reload interrupted: {why}. It stopped {where}."]
    if done:
        lines.append(format_report(done))
    lines.append(
        f"Files indexed so far are kept: the next `/docs reload`{' (without `full`)' if full else ''} continues "
        "from there and embeds only what is not indexed yet."
    )
    return "\n".join(lines)


@app_commands.guild_only()
class Documents(commands.GroupCog, group_name="docs", group_description="The server's documents"):
    """Document commands (see module docstring)."""

    def __init__(self, bot: AssistantBot) -> None:
        self.bot = bot
        self.settings = bot.settings
        super().__init__()

    async def cog_load(self) -> None:
        set_max_length(self.docs_ask, "question", self.settings.ASK_MAX_CHARS)
        set_max_length(self.docs_search, "query", self.settings.ASK_MAX_CHARS)
        self.bot.resume_handlers.register("docs", self.resume_docs_ask)

    @app_commands.command(name="ask", description="Ask a question answered only from the server's documents.")
    @app_commands.describe(question="Your question")
    @member_cooldown("CHAT_COOLDOWN_S")
    async def docs_ask(self, interaction: discord.Interaction, question: app_commands.Range[str, 1, 6000]) -> None:
        text = ensure_length(question, self.settings.ASK_MAX_CHARS, "Your question")
        await interaction.response.defer(thinking=True)
        reply = interaction_reply(interaction, self.settings.STREAM_EDIT_INTERVAL_S, self.bot.rate_limits)
        reply.keep = keeper(self.bot, from_interaction("docs", interaction, text))
        await self.bot.run_tracked(
            self.answer_from_documents(interaction.guild_id, interaction.channel or interaction.channel_id or 0,
                                       interaction.user.id, text, reply),
            name=f"docs-ask:{interaction.id}",
        )

    async def answer_from_documents(self, guild_id: int | None, channel: Any, member_id: int, question: str,
                                    reply: StreamedReply) -> None:
        """Answer ``question`` of ``member_id`` only from the guild's documents, citing them, with the persona and
        model of ``channel`` (a channel, thread or channel id), into ``reply``; NOTHING_FOUND without passages."""
        channel_id = channel if isinstance(channel, int) else channel.id
        where = Place(guild_id, channel_id, await self.bot.settings_channel_of(channel), member_id)
        prepared = await self.bot.answering.prepare(Question(question, where, Grounding.DOCUMENTS))
        if not prepared.passages:
            await reply.show(NOTHING_FOUND)
            return
        await stream_answer(self.bot.answering, prepared, reply)

    async def resume_docs_ask(self, question: WaitingQuestion, reply: StreamedReply,
                              message: discord.Message | None) -> None:
        """Answer a kept /docs ask question (``bot/kept_questions.py``)."""
        await self.answer_from_documents(question.guild_id, question.channel_id, question.member_id,
                                         question.question, reply)

    @app_commands.command(name="search", description="Show the passages of the documents that best match a query.")
    @app_commands.describe(query="Words or a question to look for")
    @member_cooldown("DOCS_COOLDOWN_S")
    async def docs_search(self, interaction: discord.Interaction, query: app_commands.Range[str, 1, 6000]) -> None:
        text = ensure_length(query, self.settings.ASK_MAX_CHARS, "Your query")
        await interaction.response.defer(thinking=True)
        hits = await self.bot.index.search(interaction.guild_id, text, k=self.settings.RETRIEVAL_TOP_K)
        if not hits:
            await interaction.edit_original_response(content=NOTHING_FOUND)
            return
        embed = discord.Embed(title=_clip(f"Passages for: {text}", 256), colour=discord.Colour.blurple())
        for number, hit in enumerate(hits, start=1):
            name = _clip(f"[{number}] {hit.source}{f' › {hit.heading}' if hit.heading else ''}", 256)
            embed.add_field(name=name, value=_clip(hit.text, 600), inline=False)
        await interaction.edit_original_response(embed=embed)

    @app_commands.command(name="list", description="List the documents the assistant answers from.")
    @member_cooldown("DOCS_COOLDOWN_S")
    async def docs_list(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True, ephemeral=True)
        documents = await self.bot.index.list_documents(interaction.guild_id)
        if not documents:
            await interaction.edit_original_response(
                content="No documents are indexed yet; an admin can add some with `/docs add` or `/docs reload`."
            )
            return
        lines = [
            f"`{doc.name}` ({'global' if doc.scope == GLOBAL_SCOPE else 'server'}, {doc.chunks} chunks, "
            f"{doc.size_bytes / 1024:.0f} KB)"
            for doc in documents
        ]
        body, shown = "", 0
        for line in lines:
            if len(body) + len(line) + 60 > EMBED_DESCRIPTION_MAX:
                break
            body += line + "\n"
            shown += 1
        if shown < len(lines):
            body += f"… and {len(lines) - shown} more"
        embed = discord.Embed(title=f"{len(documents)} documents", description=body, colour=discord.Colour.blurple())
        await interaction.edit_original_response(embed=embed)

    @app_commands.command(name="add", description="Add a document (Markdown, text or PDF) and index it (admins).")
    @app_commands.describe(file="The document to add")
    @guild_cooldown("ADMIN_COOLDOWN_S")
    @admin_only()  # listed last so it runs first: a refused member uses up no cooldown
    async def docs_add(self, interaction: discord.Interaction, file: discord.Attachment) -> None:
        suffix = PurePath(file.filename).suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            raise InvalidInput(
                f"`{file.filename}` is not a supported document; use one of {', '.join(sorted(SUPPORTED_SUFFIXES))}."
            )
        if file.size > self.settings.DOC_MAX_BYTES:
            raise InvalidInput(
                f"`{file.filename}` is {file.size} bytes; the limit is {self.settings.DOC_MAX_BYTES} (DOC_MAX_BYTES)."
            )
        await interaction.response.defer(thinking=True)
        data = await read_attachment(file, self.settings.DOC_MAX_BYTES)
        name, report = await self.bot.run_tracked(
            self.bot.index.add_document(interaction.guild_id or 0, file.filename, data),
            name=f"docs-add:{interaction.id}",
        )
        await interaction.edit_original_response(content=f"Added `{name}`.\n{format_report([report])}")

    @app_commands.command(name="remove", description="Remove a document of this server from the index (admins).")
    @app_commands.describe(name="The document's file name, as shown by /docs list")
    @guild_cooldown("ADMIN_COOLDOWN_S")
    @admin_only()  # listed last so it runs first: a refused member uses up no cooldown
    async def docs_remove(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 200]) -> None:
        await interaction.response.defer(thinking=True)
        report = await self.bot.run_tracked(
            self.bot.index.remove_document(interaction.guild_id or 0, name), name=f"docs-remove:{interaction.id}"
        )
        await interaction.edit_original_response(content=f"Removed `{name}`.\n{format_report([report])}")

    @app_commands.command(
        name="reload", description="Re-index the documents; only changed files are embedded (admins)."
    )
    @app_commands.describe(full="Rebuild everything from scratch (needed after changing the embedding model)")
    @guild_cooldown("ADMIN_COOLDOWN_S")
    @admin_only()  # listed last so it runs first: a refused member uses up no cooldown
    async def docs_reload(self, interaction: discord.Interaction, full: bool = False) -> None:
        await interaction.response.defer(thinking=True)
        budget = interaction_budget(self.bot.rate_limits, interaction.application_id, interaction.token)
        reports = await self.bot.run_tracked(
            self._reload(interaction, full, budget), name=f"docs-reload:{interaction.id}"
        )
        if budget is not None:
            await budget.wait_for_room(1)
        await interaction.edit_original_response(content=format_report(reports))

    async def _reload(self, interaction: discord.Interaction, full: bool,
                      budget: EditBudget | None) -> list[ReloadReport]:
        last_edit = 0.0
        interval = self.settings.STREAM_EDIT_INTERVAL_S
        reached: ReloadProgress | None = None  # the latest progress, shown or not (edits are throttled)

        async def progress(state: ReloadProgress) -> None:
            nonlocal last_edit, reached
            reached = state
            now = time.monotonic()
            if budget is not None and (now - last_edit < budget.gap_s() or not budget.allows(1)):
                return  # the bucket's pace (bot/ratelimits.py): a later progress shows this one's count too
            if now - last_edit < interval:
                return
            last_edit = now
            if budget is not None:
                budget.spend(1)
            current = f": `{state.current}`" if state.current else ""
            await interaction.edit_original_response(
                content=f"Indexing… {state.files_done}/{state.files_total} files{current}"
            )

        reports: list[ReloadReport] = []
        scope = GLOBAL_SCOPE
        try:
            for scope in (GLOBAL_SCOPE, str(interaction.guild_id)):
                reached = None
                reports.append(await self.bot.index.reload(scope, full=full, progress=progress))
        except asyncio.CancelledError:
            # Shutdown: without this the reply would show "Indexing… 21/61 files" for good.
            note = format_interrupted(reports, scope, reached, full=full, shutting_down=self.bot.shutting_down)
            room_s = budget.seconds_to_room(1) if budget is not None else 0.0
            await edit_after_cancel(lambda: interaction.edit_original_response(content=note), "an interrupted reload",
                                    room_s=room_s)
            raise
        return reports


async def setup(bot: AssistantBot) -> None:
    await bot.add_cog(Documents(bot))
