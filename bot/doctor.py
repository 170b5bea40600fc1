"""``python main.py doctor``: checks each part of the bot and says, for each, OK or what to do."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import TextIO

from bot.opus import load_opus
from config import Settings
from services.chat.llm import LLMClient
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


async def check_ollama(settings: Settings) -> list[Check]:
    llm = LLMClient.from_settings(settings)
    try:
        models = await llm.list_models()
    except ServiceError as exc:
        return [Check("Ollama", False, exc.user_message)]
    finally:
        await llm.close()
    checks = [Check("Ollama", True, f"reachable at {llm.display_host} ({len(models)} models)")]
    for role, name in (("chat model", settings.CHAT_MODEL), ("embedding model", settings.EMBED_MODEL)):
        pulled = any(model == name or model.split(":")[0] == name for model in models)
        detail = f"`{name}` is pulled" if pulled else f"`{name}` is missing: run `ollama pull {name}`"
        checks.append(Check(f"Ollama {role}", pulled, detail))
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
    token = Check(
        "Discord token",
        settings.DISCORD_TOKEN is not None,
        "set" if settings.DISCORD_TOKEN else "not set: the bot runs against the local sandbox; "
        "set DISCORD_TOKEN (Developer Portal > Bot > Token) to connect to Discord",
    )
    checks = [token, *await check_ollama(settings)]
    checks.append(await asyncio.to_thread(check_chroma, settings))
    checks.append(await asyncio.to_thread(check_documents, settings))
    checks.append(check_opus())
    checks.append(await asyncio.to_thread(check_tts, settings))
    checks.append(await asyncio.to_thread(check_stt, settings))
    for check in checks:
        print(f"{'OK  ' if check.ok else 'FIX '} {check.part}: {check.detail}", file=out)
    return 0 if all(check.ok for check in checks) else 1
