"""Entry point: ``python main.py [run|playground|index|doctor]``.

run (default)  connect to Discord with DISCORD_TOKEN; without a token, start the playground instead
playground     run the bot against the built-in local Discord and talk to it from this terminal
index          re-index the documents folder from the command line (like /docs reload)
doctor         check each part (token, Ollama and its models, ChromaDB, documents, opus) and say what to do
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import discord

from config import ConfigError, Settings, load_settings

log = logging.getLogger("main")


class RedactingFormatter(logging.Formatter):
    """Formats a record with the handler's own formatter, then replaces every secret in the whole text.

    Redacting the formatted text, not only ``record.msg``, also covers arguments, exception messages and
    tracebacks (a token inside an exception's text would otherwise reach the log).
    """

    def __init__(self, inner: logging.Formatter | None, secrets: list[str]) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.secrets = sorted({secret for secret in secrets if secret}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text


def secrets_of(settings: Settings) -> list[str]:
    """The values that must never reach a log: the bot token and passwords inside the service URLs."""
    secrets = [settings.DISCORD_TOKEN.get_secret_value()] if settings.DISCORD_TOKEN else []
    for url in (settings.OLLAMA_HOST, settings.CHROMA_HOST or ""):
        password = urlsplit(url).password if "://" in url else None
        if password:
            secrets += [password, quote(password, safe="")]
    return secrets


def setup_logging(settings: Settings) -> None:
    discord.utils.setup_logging(level=getattr(logging, settings.LOG_LEVEL), root=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Ollama request is noise
    secrets = secrets_of(settings)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter(handler.formatter, secrets))


async def serve(bot: Any, token: str, foreground: Coroutine[Any, Any, int] | None = None) -> int:
    """Run ``bot`` until it stops, ``foreground`` ends, or SIGINT/SIGTERM; then shut down within the deadlines
    (SHUTDOWN_GRACE_S for the answers under way, then SHUTDOWN_TIMEOUT_S).

    Returns the exit code: ``foreground``'s result, else 0 after a signal or a clean stop.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(bot.start(token), name="discord-client")
    waiters = {runner, asyncio.create_task(stop.wait(), name="signal-wait")}
    front = asyncio.create_task(foreground, name="foreground") if foreground is not None else None
    if front is not None:
        waiters.add(front)
    code = 0
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if runner.done() and runner.exception() is not None:
            raise runner.exception()  # type: ignore[misc]
        if stop.is_set():
            log.info("signal received; shutting down")
        if front is not None and front.done():
            code = front.result()
    finally:
        if front is not None and not front.done():
            front.cancel()  # no new input; the playground's printer runs on until its own block ends
        try:
            # The grace period for answers under way, then the deadline for the rest (bot.client.AssistantBot.close).
            await asyncio.wait_for(bot.close(), timeout=bot.settings.SHUTDOWN_GRACE_S + bot.settings.SHUTDOWN_TIMEOUT_S)
        except TimeoutError:
            log.error("shutdown took longer than SHUTDOWN_GRACE_S + SHUTDOWN_TIMEOUT_S; exiting anyway")
        for task in waiters:
            task.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return code


PRIVILEGED_INTENT_NAMES = {"message_content": "Message Content", "members": "Server Members",
                           "presences": "Presence"}
"""discord.Intents attribute -> the name of the privileged intent in the Developer Portal."""


def privileged_intents_line(intents: discord.Intents) -> str:
    """The one line printed when Discord refuses the privileged intents the bot asks for (gateway close 4014,
    ``discord.PrivilegedIntentsRequired``): which ones to enable, and where."""
    names = [name for attr, name in PRIVILEGED_INTENT_NAMES.items() if getattr(intents, attr)]
    listed = " and ".join(f"the {name} intent" for name in names) or "the privileged intents"
    them = "it" if len(names) == 1 else "them"
    return (f"error: Discord refused {listed} the bot asks for; enable {them} in the Developer Portal > your "
            "application > Bot > Privileged Gateway Intents, save, and start the bot again.")


async def run_discord(settings: Settings) -> int:
    from bot.client import AssistantBot

    assert settings.DISCORD_TOKEN is not None
    bot = AssistantBot(settings)
    try:
        return await serve(bot, settings.DISCORD_TOKEN.get_secret_value())
    except discord.PrivilegedIntentsRequired:
        print(privileged_intents_line(bot.intents), file=sys.stderr)
        return 1
    except discord.LoginFailure:
        print("error: Discord refused DISCORD_TOKEN; copy the bot token again from the Developer Portal.",
              file=sys.stderr)
        return 2
    except (aiohttp.ClientError, OSError, TimeoutError, discord.GatewayNotFound, discord.DiscordServerError) as exc:
        # Not a bug of ours: one line (the log above has the details), and exit 1 so a supervisor retries.
        reason = str(exc) or type(exc).__name__
        print(f"error: cannot reach Discord ({reason}); check this machine's network connection and "
              "https://discordstatus.com, then start again.", file=sys.stderr)
        return 1


PLAYGROUND_STATE_FILE = "sandbox.json"
"""The playground's local Discord state, under DATA_DIR (``sandbox.state``)."""


async def run_playground_session(
    settings: Settings, script: Path | None, json_mode: bool, *, dave: bool = True, record: Path | None = None,
    message_content_intent: bool = True, fresh: bool = False,
) -> int:
    """The playground: the bot against a local Discord (``sandbox``), driven by ``script`` or the terminal.

    The local Discord remembers its state (threads, messages, commands...) in ``DATA_DIR/sandbox.json`` from one
    playground to the next, so a restart is a restart of the bot against the same Discord; ``fresh`` starts it
    empty (the file is overwritten at the end). A file that cannot be used is renamed aside, with one line saying so.
    message_content_intent: False starts the local Discord without the Message Content intent granted, as an
    owner who forgot its toggle in the Developer Portal; the bot then stops as it would on Discord (exit code 1).
    """
    from bot.client import AssistantBot
    from sandbox import Playground, Sandbox, SandboxError

    try:
        local_discord = Sandbox(dave=dave, record_dir=record, message_content_intent=message_content_intent,
                                state_path=settings.DATA_DIR / PLAYGROUND_STATE_FILE, fresh=fresh)
    except SandboxError as exc:
        print(f"error: --record: {exc}; give a folder that can be created and written.", file=sys.stderr)
        return 2
    # The playground prints until serve() has shut the bot down, so what the bot does while stopping is shown.
    async with local_discord as sandbox, Playground(sandbox, json_mode=json_mode, out=sys.stdout) as playground:
        if sandbox.state_problem is not None:
            print(f"warning: {sandbox.state_problem}", file=sys.stderr)
        bot = AssistantBot(settings, connector=sandbox.client_connector())
        lines = (await asyncio.to_thread(script.read_text, encoding="utf-8")).splitlines() if script else None

        async def foreground() -> int:
            await sandbox.wait_ready(timeout=30)
            shown = asyncio.create_task(show_startup_problem(bot, playground), name="startup-problem")
            try:
                return await playground.run(lines)
            finally:
                shown.cancel()

        try:
            return await serve(bot, sandbox.bot_token, foreground())
        except discord.PrivilegedIntentsRequired:
            refused = privileged_intents_line(bot.intents)
    print(refused, file=sys.stderr)  # after the playground's last events
    return 1


async def show_startup_problem(bot: Any, playground: Any) -> None:
    """Print the bot's start-up check's line (Ollama unreachable, a model not pulled) in the playground, when it has
    one, once the check is done (it logs it too)."""
    check = bot.startup_check
    if check is None:
        return
    await asyncio.wait({check})
    if not check.cancelled() and check.exception() is None and check.result() is not None:
        playground.warn(check.result())


async def run_index(settings: Settings, scopes: list[str], full: bool) -> int:
    from services.chat.llm import LLMClient
    from services.errors import ServiceError
    from services.knowledge.index import GLOBAL_SCOPE, DocumentIndex

    llm = LLMClient.from_settings(settings)
    index = DocumentIndex.from_settings(settings, llm)
    if not scopes:
        guild_dirs = await asyncio.to_thread(lambda: [p.name for p in settings.DOCUMENTS_DIR.glob("*") if p.is_dir()])
        scopes = [GLOBAL_SCOPE] + sorted(name for name in guild_dirs if name.isdigit())
    try:
        for scope in scopes:
            report = await index.reload(scope, full=full)
            print(
                f"{scope}: {len(report.added)} added, {len(report.updated)} updated, {len(report.removed)} removed, "
                f"{len(report.unchanged)} unchanged, {len(report.skipped)} skipped; "
                f"{report.chunks_embedded} chunks embedded in {report.seconds:.1f} s"
            )
            for name, reason in report.skipped:
                print(f"  skipped {name}: {reason}")
    except ServiceError as exc:
        print(f"error: {exc.user_message}", file=sys.stderr)
        return 1
    finally:
        await index.close()
        await llm.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="main.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="connect to Discord (the playground when DISCORD_TOKEN is unset)")
    play = sub.add_parser(
        "playground",
        help="talk to the bot through the built-in local Discord",
        description="Run the bot against the built-in local Discord (the sandbox) and act as its members from "
        "this terminal: slash commands, mentions, replies, voice. Type `help` for the line syntax.",
        epilog="The lines, the output and the JSON events are described in docs/sandbox.md.",
    )
    play.add_argument("--script", type=Path, help="run the lines of this file instead of reading the terminal")
    play.add_argument("--json", action="store_true", help="print one JSON object per event")
    play.add_argument("--record", type=Path, metavar="DIR",
                      help="write each talk spurt the bot says in voice as a WAV file in DIR (created if missing)")
    play.add_argument("--no-dave", action="store_true",
                      help="voice without end-to-end encryption (DAVE protocol version 0), as before March 2026")
    play.add_argument("--no-message-content-intent", action="store_true",
                      help="a local Discord whose application lacks the privileged Message Content intent, as when "
                      "its Developer Portal toggle is off: the bot stops at start, saying so")
    play.add_argument("--fresh", action="store_true",
                      help=f"start the local Discord empty instead of where the last playground left it "
                      f"(DATA_DIR/{PLAYGROUND_STATE_FILE}, overwritten at the end)")
    idx = sub.add_parser("index", help="re-index the documents folder")
    idx.add_argument("--scope", action="append", default=[], help="'global' or a guild id (default: all)")
    idx.add_argument("--full", action="store_true", help="rebuild from scratch (after an embedding model change)")
    sub.add_parser("doctor", help="check every part and say what to fix")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings)

    command = args.command or "run"
    if command == "doctor":
        from bot.doctor import run_doctor

        return asyncio.run(run_doctor(settings))
    if command == "index":
        return asyncio.run(run_index(settings, args.scope, args.full))
    if command == "run" and settings.DISCORD_TOKEN is not None:
        return asyncio.run(run_discord(settings))
    if command == "run":
        print("DISCORD_TOKEN is not set: starting the local playground instead (type `help`).", file=sys.stderr)
    script = getattr(args, "script", None)
    dave, record = not getattr(args, "no_dave", False), getattr(args, "record", None)
    content_intent = not getattr(args, "no_message_content_intent", False)
    return asyncio.run(run_playground_session(settings, script, getattr(args, "json", False), dave=dave, record=record,
                                              message_content_intent=content_intent,
                                              fresh=getattr(args, "fresh", False)))


if __name__ == "__main__":
    sys.exit(main())
