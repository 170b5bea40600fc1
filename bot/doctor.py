"""``python main.py doctor``: checks each part of the bot and says, for each, OK or what to do."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import TextIO

import aiohttp
import discord

from bot.opus import load_opus
from config import Settings
from services.chat.llm import LLMClient
from services.chat.ollama_check import check_ollama as ollama_status
from services.errors import ServiceError
from services.knowledge.documents import SUPPORTED_SUFFIXES, list_document_files, suffix_of
from services.knowledge.index import check_chroma_server
from services.speech.lazy_model import LazyModel
from services.speech.stt import create_transcriber
from services.speech.tts import create_synthesizer


@dataclass
class Check:
    part: str
    ok: bool
    detail: str


DISCORD_CHECK_TIMEOUT_S = 15.0
NO_MESSAGE_CONTENT = ("the Message Content intent is off, so Discord would stop the bot at start (close code 4014): "
                      "enable it in the Developer Portal > your application > Bot > Privileged Gateway Intents")


async def check_discord(settings: Settings) -> list[Check]:
    """The token (Discord accepts it) and the application's privileged intents, from its ``flags`` in
    ``GET /applications/@me``: GATEWAY_MESSAGE_CONTENT (1 << 18) or GATEWAY_MESSAGE_CONTENT_LIMITED (1 << 19) means
    the Message Content intent the bot asks for is enabled. Without a token, one FIX line saying how to set it;
    a refused token or an unreachable Discord (within DISCORD_CHECK_TIMEOUT_S), one FIX line saying what to do."""
    if settings.DISCORD_TOKEN is None:
        unset = ("not set: the bot runs against the local sandbox; set DISCORD_TOKEN (Developer Portal > Bot > Token) "
                 "to connect to Discord")
        return [Check("Discord token", False, unset)]
    client = discord.Client(intents=discord.Intents.none())
    try:
        async with asyncio.timeout(DISCORD_CHECK_TIMEOUT_S):
            await client.login(settings.DISCORD_TOKEN.get_secret_value())
            application = await client.application_info()
    except discord.LoginFailure:
        return [Check("Discord token", False, "Discord refused DISCORD_TOKEN; copy the bot token again from the "
                                              "Developer Portal > your application > Bot > Token")]
    except (aiohttp.ClientError, OSError, TimeoutError, discord.HTTPException) as exc:
        reason = str(exc) or type(exc).__name__
        return [Check("Discord token", False, f"cannot reach Discord ({reason}); check this machine's network "
                                              "connection and https://discordstatus.com")]
    finally:
        await client.close()
    flags = application.flags
    content = flags.gateway_message_content or flags.gateway_message_content_limited
    return [
        Check("Discord token", True, f"accepted: the bot is {client.user} (application {application.id})"),
        Check("Discord intents", content, "the Message Content intent is enabled" if content else NO_MESSAGE_CONTENT),
    ]


async def check_ollama(settings: Settings) -> list[Check]:
    """Ollama reachable, and the chat and embedding models pulled (each with the command that pulls it)."""
    llm = LLMClient.from_settings(settings)
    try:
        status = await ollama_status(llm, chat_model=settings.CHAT_MODEL, embed_model=settings.EMBED_MODEL,
                                     timeout_s=settings.LLM_TIMEOUT_S)
    finally:
        await llm.close()
    if status.error is not None:
        return [Check("Ollama", False, status.error)]
    checks = [Check("Ollama", True, f"reachable at {status.host} ({status.model_count} models)")]
    for model in status.models:
        detail = f"`{model.name}` is pulled" if model.pulled else f"`{model.name}` is missing: run `{model.fix}`"
        checks.append(Check(f"Ollama {model.role}", model.pulled, detail))
    return checks


def check_chroma(settings: Settings) -> Check:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    try:
        if settings.CHROMA_HOST:
            check_chroma_server(settings.CHROMA_HOST, settings.CHROMA_PORT, settings.CHROMA_TIMEOUT_S)
            return Check("ChromaDB", True, f"server at {settings.CHROMA_HOST}:{settings.CHROMA_PORT} answers")
        path = settings.index_dir / "chroma"
        client = chromadb.PersistentClient(path=str(path), settings=chroma_settings)
        return Check("ChromaDB", True, f"embedded index at {path} ({len(client.list_collections())} collections)")
    except ServiceError as exc:
        return Check("ChromaDB", False, exc.user_message)
    except Exception as exc:  # noqa: BLE001 - any failure of the index backend is the answer here
        where = f"{settings.CHROMA_HOST}:{settings.CHROMA_PORT}" if settings.CHROMA_HOST else str(settings.index_dir)
        return Check("ChromaDB", False, f"cannot open the index at {where} ({exc}); check CHROMA_HOST or DATA_DIR")


def check_documents(settings: Settings) -> Check:
    """Count the documents of each scope folder (``global/`` and ``<guild_id>/``) as a reload would list them,
    and name the links a reload will not follow (e.g. one leading outside the documents folder)."""
    root = settings.DOCUMENTS_DIR
    if not root.is_dir():
        return Check("Documents", False, f"{root} does not exist: create it and put documents in {root}/global/")
    scopes = sorted(p.name for p in root.iterdir() if p.is_dir() and (p.name == "global" or p.name.isdigit()))
    count, skipped = 0, []
    for scope in scopes:
        listing = list_document_files(root / scope)
        count += sum(1 for name in listing.files if suffix_of(name) in SUPPORTED_SUFFIXES)
        skipped.extend(f"{scope}/{name}: {reason}" for name, reason in listing.skipped)
    found = f"{count} documents in {root} ({', '.join(scopes)})" if count else f"{root} has no documents yet"
    if skipped:
        shown = "; ".join(skipped[:5]) + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        return Check("Documents", False, f"{found}. Links that will not be indexed: {shown}. Copy those files into "
                                         "the folder, or remove the links")
    if not count:
        return Check("Documents", True, f"{found} (add some to {root}/global/ or use /docs add)")
    return Check("Documents", True, found)


def check_opus() -> Check:
    try:
        return Check("Opus", True, f"libopus loaded from {load_opus()}")
    except ServiceError as exc:
        return Check("Opus", False, exc.user_message)


def check_tts(settings: Settings) -> Check:
    """Load the configured voice (a named one may be downloaded) and say which voice will speak, verified or not."""
    return _check_model("Speech (TTS)", "Piper voice", "speaking", create_synthesizer(settings))


def check_stt(settings: Settings) -> Check:
    """Load the configured speech model (a named one may be downloaded) and say which will listen, verified or not."""
    transcriber = create_transcriber(settings)
    try:
        return _check_model("Speech recognition (STT)", "Whisper model", "listening", transcriber)
    finally:
        transcriber.close()


def _check_model(part: str, what: str, doing: str, model: LazyModel) -> Check:
    """OK with the model in use and whether its hashes were verified; FIX when the bundled one stands in for the
    configured one (with why and how to get it), or when nothing can be loaded."""
    try:
        model.load()
    except ServiceError as exc:
        return Check(part, False, exc.user_message)
    assert model.source is not None  # set by load
    if model.fallback_reason is not None:
        return Check(part, False, f"{doing} with {what} {model.source.describe()} for now. "
                                  f"{model.fallback_reason}")  # fmt: skip
    return Check(part, True, f"{what} {model.source.describe()}")


async def run_doctor(settings: Settings, out: TextIO = sys.stdout) -> int:
    """Print one line per part; returns 0 when every part is OK, 1 otherwise."""
    checks = [*await check_discord(settings), *await check_ollama(settings)]
    checks.append(await asyncio.to_thread(check_chroma, settings))
    checks.append(await asyncio.to_thread(check_documents, settings))
    checks.append(check_opus())
    checks.append(await asyncio.to_thread(check_tts, settings))
    checks.append(await asyncio.to_thread(check_stt, settings))
    for check in checks:
        print(f"{'OK  ' if check.ok else 'FIX '} {check.part}: {check.detail}", file=out)
    return 0 if all(check.ok for check in checks) else 1
