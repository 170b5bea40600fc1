"""Start-up that says what is missing: the Message Content intent refused (4014), Ollama unreachable or without a
model, the voice loaded when it is needed, and admin commands on their own cooldown; the real bot through the
sandbox."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

import main
from bot.doctor import NO_MESSAGE_CONTENT, check_discord
from sandbox import Sandbox
from tests.e2e.conftest import ephemeral_replies, make_settings

PULL_EMBED = "run `ollama pull nomic-embed-text`"


def closed_port() -> int:
    """A loopback port where nothing listens: connection refused at once."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return closed.getsockname()[1]


# ------------------------------------------------------------------------- the Message Content intent


async def test_without_the_message_content_intent_the_bot_exits_1_with_one_line(tmp_path, ollama, capsys):
    async with Sandbox(message_content_intent=False) as sandbox:
        settings = make_settings(tmp_path, ollama.url, DISCORD_TOKEN=sandbox.bot_token)
        code = await asyncio.wait_for(main.run_discord(settings), timeout=30)
    err = capsys.readouterr().err
    assert code == 1
    assert err == ("error: Discord refused the Message Content intent the bot asks for; enable it in the Developer "
                   "Portal > your application > Bot > Privileged Gateway Intents, save, and start the bot again.\n")


async def test_doctor_reports_the_missing_message_content_intent(tmp_path, ollama):
    async with Sandbox(message_content_intent=False) as sandbox:
        settings = make_settings(tmp_path, ollama.url, DISCORD_TOKEN=sandbox.bot_token)
        token, intents = await check_discord(settings)
    assert token.ok and "accepted: the bot is Assistant" in token.detail
    assert (intents.part, intents.ok, intents.detail) == ("Discord intents", False, NO_MESSAGE_CONTENT)
    assert "Message Content intent" in NO_MESSAGE_CONTENT and "Developer Portal" in NO_MESSAGE_CONTENT


async def test_doctor_says_the_intent_is_enabled_and_names_a_refused_token(tmp_path, ollama):
    async with Sandbox() as sandbox:
        settings = make_settings(tmp_path, ollama.url, DISCORD_TOKEN=sandbox.bot_token)
        _, intents = await check_discord(settings)
        [refused] = await check_discord(make_settings(tmp_path, ollama.url, DISCORD_TOKEN="not.a-token.at-all"))
    assert intents.ok and intents.detail == "the Message Content intent is enabled"
    assert not refused.ok and refused.detail.startswith("Discord refused DISCORD_TOKEN")


# ------------------------------------------------------------------------- Ollama at start-up


async def test_a_missing_model_is_logged_in_one_line_and_the_bot_still_answers(make_harness, ollama, caplog):
    ollama.models = ["llama3.2"]  # the embedding model is not pulled
    with caplog.at_level(logging.WARNING, logger="bot.client"):
        harness = await make_harness()
        problem = await asyncio.wait_for(harness.bot.startup_check, timeout=10)
    assert problem is not None and problem.endswith(PULL_EMBED + ".")
    assert [r.getMessage() for r in caplog.records if r.name == "bot.client"] == [problem]
    _, events = await harness.answer("alice", "chat", {"message": "hi"})
    assert harness.bot_messages()[-1]["content"] == "You said: hi"


async def test_everything_there_logs_nothing(make_harness):
    harness = await make_harness()
    assert await asyncio.wait_for(harness.bot.startup_check, timeout=10) is None


async def test_an_unreachable_ollama_is_logged_and_the_bot_is_ready(make_harness):
    harness = await make_harness(OLLAMA_HOST=f"http://127.0.0.1:{closed_port()}")
    problem = await asyncio.wait_for(harness.bot.startup_check, timeout=10)
    assert problem is not None and "could not be reached" in problem and "`ollama serve`" in problem


async def test_a_silent_ollama_never_delays_readiness(make_harness, silent_server):
    harness = await make_harness(OLLAMA_HOST=f"http://127.0.0.1:{silent_server}")
    assert harness.bot.is_ready() and not harness.bot.startup_check.done()
    assert "startup-check" in harness.bot.tasks.running  # tracked: shutdown cancels and awaits it


# ------------------------------------------------------------------------- the voice


async def test_the_voice_is_not_loaded_at_start_by_default(make_harness, tmp_path):
    harness = await make_harness(MODELS_DIR=tmp_path / "own-models")  # its own voice, not the session's shared one
    assert not harness.bot.synthesizer.loaded and "tts-load" not in harness.bot.tasks.running


@pytest.mark.timeout(60)
async def test_voice_preload_loads_it_in_the_background_after_readiness(make_harness, tmp_path):
    harness = await make_harness(MODELS_DIR=tmp_path / "own-models", VOICE_PRELOAD=True)
    loading = harness.bot.voice_sessions.voice_loading
    assert loading is not None
    await asyncio.wait_for(asyncio.shield(loading), timeout=45)  # a few seconds of CPU for Piper, in a thread
    assert harness.bot.synthesizer.loaded


# ------------------------------------------------------------------------- admin commands' cooldown


async def test_admin_settings_commands_are_not_throttled_by_the_chat_cooldown(make_harness):
    harness = await make_harness(CHAT_COOLDOWN_S=60, SETTINGS_COOLDOWN_S=0, ADMIN_COOLDOWN_S=30)
    await harness.answer("admin", "chat", {"message": "hello"})
    for text in ("You are a pirate.", "You are a librarian."):
        _, events = await harness.answer("admin", "settings persona", {"text": text})
        assert ephemeral_replies(events) == ["Persona set for this channel."], events
    _, events = await harness.answer("admin", "settings show")
    assert "You are a librarian." in ephemeral_replies(events)[0]
    _, events = await harness.answer("admin", "docs reload")
    assert not any(reply.startswith("Slow down") for reply in ephemeral_replies(events)), events


async def test_admin_settings_commands_have_their_own_cooldown(make_harness):
    harness = await make_harness(CHAT_COOLDOWN_S=0, SETTINGS_COOLDOWN_S=60)
    await harness.answer("admin", "settings persona", {"text": "You are a pirate."})
    _, events = await harness.answer("admin", "settings persona", {"text": "You are a librarian."})
    [refused] = ephemeral_replies(events)
    assert refused.startswith("Slow down")
