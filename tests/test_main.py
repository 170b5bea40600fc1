"""main.py's start-up paths: secrets kept out of logs, and Discord unreachable ending in one line."""

from __future__ import annotations

import io
import logging
import socket

import discord
import pytest

import main
from config import load_settings

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.fake-token-for-tests-0123456789abcdef"


@pytest.fixture
def root_logging():
    """The root logger as main.setup_logging finds it at start (pytest adds its own later); restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_token_inside_an_exception_is_redacted_from_the_log(root_logging):
    settings = load_settings(DISCORD_TOKEN=TOKEN, OLLAMA_HOST="http://bot:s3cret-pass@127.0.0.1:11434")
    main.setup_logging(settings)
    stream = io.StringIO()
    (handler,) = [h for h in root_logging.handlers if type(h) is logging.StreamHandler]  # discord.py's
    handler.setStream(stream)
    log = logging.getLogger("tests.redaction")
    try:
        raise RuntimeError(f"request with Authorization: Bot {TOKEN} failed")
    except RuntimeError:
        log.exception("calling %s failed", settings.OLLAMA_HOST)
    log.warning("token is %s", TOKEN)
    text = stream.getvalue()
    assert "Traceback" in text and "RuntimeError: request with Authorization: Bot [redacted] failed" in text
    assert TOKEN not in text and "s3cret-pass" not in text
    assert text.count("[redacted]") == 3


async def test_unreachable_discord_ends_in_one_line_and_exit_code_1(tmp_path, monkeypatch, capsys):
    with socket.socket() as closed:  # a loopback port where nothing listens: connection refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{port}/api/v10")
    settings = load_settings(DISCORD_TOKEN=TOKEN, DATA_DIR=tmp_path / "data", DOCUMENTS_DIR=tmp_path / "docs",
                             OLLAMA_HOST="http://127.0.0.1:9", SHUTDOWN_TIMEOUT_S=5)
    code = await main.run_discord(settings)
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: cannot reach Discord") and err.count("\n") == 1 and TOKEN not in err


def test_the_refused_intents_line_names_each_privileged_intent_asked_for():
    intents = discord.Intents.default()
    intents.message_content = intents.members = True
    line = main.privileged_intents_line(intents)
    assert line.startswith("error: Discord refused the Message Content intent and the Server Members intent")
    assert "enable them in the Developer Portal > your application > Bot > Privileged Gateway Intents" in line
    assert "\n" not in line
