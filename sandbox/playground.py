"""The playground: a member-side terminal client for the sandbox, interactive or driven by a script.

Each line is one action of a member (a slash command, a message, a click, joining voice, speaking a WAV file...);
what the bot does is printed as a member would see it, or as one JSON object per event (``json_mode``). In script
mode each line waits until the bot settles. The line syntax, the output and the events: docs/sandbox.md.

Printing and reading lines have separate lifetimes: ``async with Playground(...)`` prints events until it exits,
which can be after ``run`` has ended, so ``main.py`` keeps printing while the bot shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from services.speech.speech_text import USER_MENTION

from . import guild
from .guild import UnknownName
from .model import Event, SandboxError

if TYPE_CHECKING:
    from .server import Sandbox

_OPTION_TYPES = {3: "text", 4: "integer", 5: "true|false", 6: "member", 7: "channel", 8: "role", 9: "member|role",
                 10: "number", 11: "file path"}  # fmt: skip


class UsageError(Exception):
    """A playground line that cannot be run; the message says why and what would work."""


def parse_slash(line: str, command: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Split ``/name [sub [sub]] opt: value ...`` against ``command`` (a registered command's schema).

    Returns the command path (e.g. ["docs", "add"]) and raw option strings by name; values are converted
    per schema later by ``Sandbox.invoke``. Raises UsageError for a missing/unknown subcommand, unknown
    option, repeated option or text that belongs to no option.
    """
    words = line.strip().lstrip("/").split(maxsplit=1)
    path, rest = [words[0]], (words[1] if len(words) > 1 else "")
    schema = command.get("options") or []
    while any(o["type"] in (1, 2) for o in schema):
        subs = {o["name"]: o for o in schema if o["type"] in (1, 2)}
        head, _, tail = rest.strip().partition(" ")
        if head not in subs:
            got = f" (got {head!r})" if head else ""
            raise UsageError(f"/{' '.join(path)} needs a subcommand: {', '.join(subs)}{got}")
        path.append(head)
        schema, rest = subs[head].get("options") or [], tail
    names = [o["name"] for o in schema]
    values: dict[str, str] = {}
    if not names:
        if rest.strip():
            raise UsageError(f"/{' '.join(path)} takes no options (got {rest.strip()!r})")
        return path, values
    pattern = re.compile(r"(?:^|\s)(" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) + r"):")
    matches = list(pattern.finditer(rest))
    lead = rest[: matches[0].start()] if matches else rest
    if lead.strip():
        text_options = [o["name"] for o in schema if o["type"] == 3]
        if not matches and len(schema) == 1 and text_options:
            values[text_options[0]] = lead.strip()  # "/ask what is X" with a single text option
            return path, values
        unknown = re.match(r"\s*([\w-]+):", lead)
        if unknown:
            raise UsageError(f"/{' '.join(path)} has no option {unknown.group(1)!r}; options: {', '.join(names)}")
        raise UsageError(f"unexpected text {lead.strip()!r}; write options as name: value ({', '.join(names)})")
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(rest)
        name, value = match.group(1), rest[match.end() : end].strip()
        if name in values:
            raise UsageError(f"option {name!r} given twice")
        if not value:
            raise UsageError(f"option {name!r} needs a value")
        values[name] = value
    return path, values


def describe_command(command: dict[str, Any]) -> list[str]:
    """Help lines for one registered command: ``/docs add file:<file path> - Add a document``."""
    lines: list[str] = []

    def walk(prefix: str, node: dict[str, Any]) -> None:
        options = node.get("options") or []
        subs = [o for o in options if o["type"] in (1, 2)]
        if subs:
            for sub in subs:
                walk(f"{prefix} {sub['name']}", sub)
            return
        parts = []
        for o in options:
            part = f"{o['name']}:<{_OPTION_TYPES.get(o['type'], o['type'])}>"
            parts.append(part if o.get("required") else f"[{part}]")
        lines.append(f"  {' '.join([prefix, *parts])}  - {node.get('description', '')}")

    walk("/" + command["name"], command)
    return lines


HELP = """\
  /command sub option: value ...   run a slash command (see the list below)
  @bot text                        mention the bot          reply text   reply to the bot's last message
  say text                         plain message            as NAME      act as a member ({members})
  click LABEL                      press a button of the bot's latest message in this channel
  complete /command opt: text      type in an option with autocomplete (the last one given): the bot's choices
  in CHANNEL | in thread NAME      switch channel ({channels}) or to a thread
  attach PATH                      the next message (say, @bot, reply) carries this file; repeat for more
  archive thread [NAME]            archive a thread (default: the current one); also unarchive, delete
  join voice [CHANNEL]             enter a voice channel (default Lounge)      leave voice   leave it
  speak PATH                       say an audio file (WAV...) in your voice channel, heard by the bot there
  wait SECONDS | help | quit | # comment"""


class Playground:
    """Runs playground lines against a Sandbox and prints what a member sees.

    Use it as ``async with Playground(sb, json_mode=..., out=...) as pg: code = await pg.run(lines)``: inside the
    block every sandbox event is printed to ``out`` in order (a bot already connected gets its ``ready`` printed
    first); on exit what was published until then is printed and printing stops.
    """

    def __init__(
        self,
        sb: Sandbox,
        *,
        json_mode: bool,
        out: TextIO,
        settle_s: float = 2.0,
        max_wait_s: float = 120.0,
        user: str = "alice",
        channel: str = "general",
    ) -> None:
        self.sb, self.json_mode, self.out = sb, json_mode, out
        self.settle_s, self.max_wait_s = settle_s, max_wait_s
        self.user = guild.member_by_name(user).name
        self.channel = guild.channel_by_name(channel).name
        self.usage_errors = 0
        self._attachments: list[str] = []  # files the next message carries (``attach PATH``)
        self._errors_before = 0
        self._queue: asyncio.Queue[Event] | None = None
        self._printer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ output

    async def __aenter__(self) -> Playground:
        """Start printing: subscribe to the sandbox's events (its latest ``ready`` first, if the bot is connected)."""
        self._errors_before = len(self.sb.errors)
        self._queue = self.sb.subscribe()
        ready = next((e for e in reversed(self.sb.events()) if e["event"] == "ready"), None)
        if ready is not None:
            self._queue.put_nowait(ready)  # no await since subscribing: it comes before anything newer
        self._printer = asyncio.create_task(self._print_events(self._queue), name="playground-printer")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Print every event published until now, then stop printing."""
        if self._printer is None or self._queue is None:
            return
        self._printer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._printer
        while not self._queue.empty():  # print what arrived after the printer's last turn
            self.emit(self._queue.get_nowait())
        self.sb.unsubscribe(self._queue)
        self._printer = self._queue = None

    async def _print_events(self, queue: asyncio.Queue[Event]) -> None:
        while True:
            self.emit(await queue.get())

    def emit(self, event: Event) -> None:
        """Print one event (a JSON line, or human lines)."""
        if event["event"] == "note":
            if not self.json_mode:
                print(f"-- {event['text']}", file=self.out, flush=True)
            return
        if self.json_mode:
            print(json.dumps(event, default=str), file=self.out, flush=True)
            return
        for line in self._human(event):
            print(line, file=self.out, flush=True)

    def _show(self, event: Event) -> None:
        """Print a playground-made event (a note, a usage error, help) behind the sandbox events already queued,
        so the output keeps the order things happened in."""
        if self._queue is None:
            raise RuntimeError("the playground is not started; use it as `async with Playground(...) as pg:`")
        self._queue.put_nowait(event)

    def note(self, text: str) -> None:
        """A human-only status line (nothing in json mode)."""
        self._show({"event": "note", "text": text})

    def warn(self, text: str) -> None:
        """A line about the bot's own set-up (e.g. Ollama lacking a model): ``!! text``, or in json mode
        ``{"event": "warning", "text": text}``; it does not change the exit code."""
        self._show({"event": "warning", "text": text})

    def usage(self, line: str, message: str) -> None:
        self.usage_errors += 1
        self._show({"event": "usage_error", "line": line, "message": message})

    def _human(self, ev: Event) -> list[str]:
        kind = ev["event"]
        if kind == "ready":
            return [f"-- {guild.BOT_NAME} is connected to {guild.GUILD_NAME}; type help for the syntax"]
        if kind == "usage_error":
            return [f"!! {ev['message']}"]
        if kind == "warning":
            return [f"!! {ev['text']}"]
        if kind == "help":
            return list(ev["lines"])
        if kind == "resumed":
            return ["-- gateway session resumed"]
        if kind == "command":
            opts = " ".join(f"{k}: {v}" for k, v in ev["options"].items())
            return [f"[#{ev['channel']}] {ev['user']} used /{ev['command']} {opts}".rstrip()]
        if kind == "deferred":
            record = self.sb.interactions.get(ev["interaction_id"])
            where = f"[#{record.channel.name}] " if record else ""
            return [f"{where}{guild.BOT_NAME} is thinking...{' (only you)' if ev['ephemeral'] else ''}"]
        if kind == "error":
            return [f"!! error {ev['code']} on {ev['route']}: {ev['message']}"]
        if kind == "click":
            return [f"[#{ev['channel']}] {ev['user']} clicked {ev['custom_id']!r}"]
        if kind == "autocomplete":
            return [f"[#{ev['channel']}] {ev['user']} types /{ev['command']} {ev['option']}: {ev['typed']}"]
        if kind == "choices":
            return [f"-- choices: {', '.join(c['name'] for c in ev['choices']) or '(none)'}"]
        if kind == "reaction":
            verb = "reacted" if ev["added"] else "removed the reaction"
            return [f"[#{ev['channel']}] {guild.BOT_NAME} {verb} {ev['emoji']} on message {ev['message_id']}"]
        if kind == "modal":
            return [f"-- {guild.BOT_NAME} opened a form {ev.get('title')!r} (forms are not supported here)"]
        if kind == "thread":
            action = {"create": "started", "archive": "archived", "unarchive": "unarchived", "delete": "deleted"}
            return [f"[#{ev['parent']}] thread #{ev['thread']} {action.get(ev['action'], ev['action'])}"
                    f"{' by ' + ev['by'] if ev.get('by') else ''}"]
        if kind == "voice_state":
            if ev["channel"] is None:
                return [f"[voice] {ev['member']} left voice"]
            return [f"[voice {ev['channel']}] {ev['member']} joined"]
        if kind == "voice_audio":
            e2ee = "E2EE" if ev.get("e2ee") else "not E2EE"
            saved = ""
            if "file" in ev:
                saved = f" -> {ev['file']}" if ev["file"] else " (could not be recorded; see the log)"
            return [
                f"[voice {ev['channel']}] {ev['member']} spoke {ev['seconds']:.2f} s (rms {ev['rms']:.2f}, "
                f"{ev['frames']} frames, gap p99 {ev['gap_p99_ms']:.1f} ms, {e2ee}){saved}"
            ]
        if kind == "member_speech":
            extra = "".join(
                f", {ev[key]} {label}" for key, label in (("frames_dropped", "dropped"), ("corrupted", "corrupted"))
                if ev.get(key)
            )  # fmt: skip
            return [
                f"[voice {ev['channel']}] {ev['member']} said {ev['seconds']:.2f} s: {ev['spurts']} spurts, "
                f"{ev['frames_sent']} frames sent{extra}"
            ]
        if kind not in ("message", "edit", "delete"):
            return []  # typing and future event kinds: JSON mode only
        tags = {"edit": " (edit)", "delete": " (deleted)"}.get(kind, "")
        tags += " (only you)" if ev["ephemeral"] else ""
        tags += " (reply)" if ev["reference_id"] and kind == "message" else ""
        head = f"[#{ev['channel']}] {ev['author']}{tags}:"
        if kind == "delete":
            return [f"{head} message {ev['message_id']}"]
        content = USER_MENTION.sub(_mention_name, ev["content"]).splitlines() or [""]
        lines = [f"{head} {content[0]}".rstrip()] + [f"    {line}" for line in content[1:]]
        for embed in ev["embeds"]:
            lines += _embed_lines(embed)
        lines += [f"    [file] {a['filename']} ({a['size']} bytes)" for a in ev["attachments"]]
        return lines

    # ------------------------------------------------------------ lines

    async def run(self, lines: AsyncIterator[str] | Iterable[str] | None) -> int:
        """Run ``lines`` once the bot is ready (waiting up to ``max_wait_s``).

        ``lines`` None: interactive, reading stdin (in a thread) until its end or ``quit``; otherwise a script,
        each action waiting for the bot to settle. Returns 0, or 1 if any error event happened since the
        playground started (or, in a script, a line could not be run).
        """
        try:
            await self.sb.wait_ready(timeout=self.max_wait_s)
        except TimeoutError:
            self.usage("", f"{guild.BOT_NAME} did not connect to the sandbox within {self.max_wait_s:g} s")
            return 1
        script = lines is not None
        source = _aiter_lines(lines) if lines is not None else _stdin_lines()
        async for line in source:
            if not await self.run_line(line, settle=script):
                break
        failed = len(self.sb.errors) > self._errors_before or (script and self.usage_errors > 0)
        return 1 if failed else 0

    async def run_line(self, line: str, *, settle: bool) -> bool:
        """Run one line; returns False for ``quit``. Usage errors are printed, not raised."""
        text = line.strip()
        if not text or text.startswith("#"):
            return True
        verb, _, arg = text.partition(" ")
        arg = arg.strip()
        try:
            if verb in ("quit", "exit"):
                return False
            if verb == "help":
                self._help()
            elif verb == "as":
                self.user = guild.member_by_name(arg).name
                self.note(f"acting as {self.user}")
            elif verb == "in":
                self.channel = self._channel_or_thread(arg.removeprefix("thread ").strip())
                self.note(f"now in #{self.channel}")
            elif verb == "attach":
                self._attachments.append(_need(arg, verb))
                self.note(f"the next message carries {arg}")
            elif verb in ("archive", "unarchive", "delete") and arg.split(maxsplit=1)[:1] == ["thread"]:
                thread = self.sb.thread_named(arg.removeprefix("thread").strip() or self.channel)
                if thread is None:
                    raise UsageError(f"no thread named {arg.removeprefix('thread').strip() or self.channel!r}")
                if verb == "delete":
                    call = self.sb.delete_thread(thread.name)
                    if self.channel == thread.name:
                        self.channel = thread.parent.name
                else:
                    call = self.sb.archive_thread(thread.name, archived=verb == "archive")
                await self._act(call, expect_reply=False, settle=settle)
            elif verb in ("join", "leave") and arg.split(maxsplit=1)[:1] == ["voice"]:
                await self._act(self._voice_line(verb, arg), expect_reply=False, settle=settle)
            elif verb == "speak":
                await self._act(self.sb.speak(self.user, _need(arg, verb)), expect_reply=False, settle=settle)
            elif verb == "wait":
                await asyncio.sleep(_seconds(arg))
            elif text.startswith("/"):
                path, values = parse_slash(text, await self._command(text[1:].split(maxsplit=1)[0]))
                call = self.sb.invoke(self.user, " ".join(path), values, channel=self.channel)
                await self._act(call, expect_reply=True, settle=settle)
            elif verb.lower() in ("@bot", f"@{guild.BOT_NAME.lower()}"):
                call = self.sb.send_message(self.user, self.channel, _need(arg, verb), mention_bot=True,
                                            attachments=self._take_attachments())
                await self._act(call, expect_reply=True, settle=settle)
            elif verb == "reply":
                target = self._last_bot_message()
                call = self.sb.send_message(self.user, self.channel, _need(arg, verb), reply_to=target,
                                            attachments=self._take_attachments())
                await self._act(call, expect_reply=True, settle=settle)
            elif verb == "click":
                message_id, custom_id = self._find_button(_need(arg, verb))
                await self._act(self.sb.click(self.user, message_id, custom_id), expect_reply=True, settle=settle)
            elif verb == "complete":
                slash = _need(arg, verb)
                path, values = parse_slash(slash, await self._command(slash.lstrip("/").split(maxsplit=1)[0]))
                if not values:
                    raise UsageError("write the option being typed last, e.g. complete /settings model name: ll")
                focused = list(values)[-1]
                try:
                    await self.sb.autocomplete(self.user, " ".join(path), values, focused=focused,
                                               channel=self.channel)
                except TimeoutError:
                    raise UsageError(f"{guild.BOT_NAME} offered no choices within 5 s") from None
            elif verb == "say":
                call = self.sb.send_message(self.user, self.channel, _need(arg, verb),
                                            attachments=self._take_attachments())
                await self._act(call, expect_reply=False, settle=settle)
            else:
                raise UsageError(f"unknown line {text!r}; type help for the syntax")
        except (UsageError, SandboxError, UnknownName) as exc:
            self.usage(text, str(exc).strip("'\""))
        return True

    def _channel_or_thread(self, name: str) -> str:
        """The name of the channel, else of the thread, called ``name``; raises UnknownName."""
        try:
            return guild.channel_by_name(name).name
        except UnknownName:
            thread = self.sb.thread_named(name)
            if thread is None:
                raise
            return thread.name

    def _take_attachments(self) -> list[str]:
        taken, self._attachments = self._attachments, []
        return taken

    def _voice_line(self, verb: str, arg: str) -> Any:
        """The sandbox call for ``join voice [CHANNEL]`` / ``leave voice`` by the acting member."""
        rest = arg.split(maxsplit=1)[1].strip() if len(arg.split(maxsplit=1)) > 1 else ""
        if verb == "leave":
            if rest:
                raise UsageError("leave voice takes no channel")
            return self.sb.leave_voice(self.user)
        return self.sb.join_voice(self.user, guild.channel_by_name(rest or "Lounge").name)

    async def _command(self, name: str) -> dict[str, Any]:
        """The registered command ``name``; waits up to ``settle_s`` for a command sync still in flight."""
        deadline = asyncio.get_running_loop().time() + self.settle_s
        while True:
            try:
                return self.sb.find_command(name)
            except SandboxError:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                await asyncio.sleep(0.05)

    def _find_button(self, label: str) -> tuple[int, str]:
        """(message id, custom_id) of the newest bot message here with a component labelled/named ``label``."""
        wanted = label.strip().lower()
        for stored in reversed(self.sb.messages.values()):
            if stored.deleted or stored.channel.name != self.channel or stored.author.id != guild.BOT_USER_ID:
                continue
            for component in _walk_components(stored.payload.get("components") or []):
                names = {str(component.get("label", "")).lower(), str(component.get("custom_id", "")).lower()}
                if wanted in names and component.get("custom_id"):
                    return stored.id, component["custom_id"]
        raise UsageError(f"no button {label!r} on {guild.BOT_NAME}'s messages in #{self.channel}")

    def _last_bot_message(self) -> int:
        for message in reversed(self.sb.channel_messages(self.channel)):
            if message["author"] == guild.BOT_NAME and not message["ephemeral"]:
                return message["id"]
        raise UsageError(f"{guild.BOT_NAME} has no message in #{self.channel} to reply to")

    async def _act(self, call: Any, *, expect_reply: bool, settle: bool) -> None:
        """Await ``call`` (an invoke/send coroutine); in script mode then wait for the bot to settle."""
        if not settle:
            await call
            return
        queue = self.sb.subscribe()
        try:
            await call
            await self._settle(queue, expect_reply)
        finally:
            self.sb.unsubscribe(queue)

    async def _settle(self, queue: asyncio.Queue[Event], expect_reply: bool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        replied = not expect_reply
        last = loop.time()
        while True:
            now = loop.time()
            if now >= deadline:
                self.note(f"gave up waiting for {guild.BOT_NAME} after {self.max_wait_s:g} s")
                return
            if replied and now - last >= self.settle_s:
                return
            wait = deadline - now if not replied else min(deadline - now, self.settle_s - (now - last))
            try:
                event = await asyncio.wait_for(queue.get(), timeout=wait)
            except TimeoutError:
                continue
            last = loop.time()
            if event["event"] == "error" or (
                event["event"] in ("message", "edit", "delete", "modal")
                and event.get("author", guild.BOT_NAME) == guild.BOT_NAME
            ):
                replied = True

    def _help(self) -> None:
        lines = HELP.format(members=guild.MEMBER_NAMES, channels=", ".join(guild.CHANNELS)).splitlines()
        lines.append(f"  now: as {self.user} in #{self.channel}; registered commands:")
        for command in self.sb.commands:
            if int(command.get("type", 1)) == 1:
                lines += describe_command(command)
        self._show({"event": "help", "lines": lines})


def _mention_name(match: re.Match[str]) -> str:
    user = guild.user_by_id(int(match.group(1)))
    return f"@{user.name}" if user else match.group(0)


def _walk_components(components: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for component in components:
        yield component
        yield from _walk_components(component.get("components") or [])


def _embed_lines(embed: dict[str, Any]) -> list[str]:
    lines = []
    for key in ("title", "description"):
        if embed.get(key):
            lines += [f"    | {line}" for line in str(embed[key]).splitlines()]
    for fld in embed.get("fields") or []:
        lines.append(f"    | {fld.get('name')}: {fld.get('value')}")
    if (embed.get("footer") or {}).get("text"):
        lines.append(f"    | -- {embed['footer']['text']}")
    return lines


def _seconds(arg: str) -> float:
    try:
        value = float(arg)
    except ValueError:
        raise UsageError(f"wait needs a number of seconds, got {arg!r}") from None
    if not 0 <= value <= 3600:
        raise UsageError("wait takes 0..3600 seconds")
    return value


def _need(arg: str, verb: str) -> str:
    if not arg:
        raise UsageError(f"{verb} needs some text")
    return arg


async def _aiter_lines(lines: AsyncIterator[str] | Iterable[str]) -> AsyncIterator[str]:
    if hasattr(lines, "__aiter__"):
        async for line in lines:  # type: ignore[union-attr]
            yield line
    else:
        for line in lines:  # type: ignore[union-attr]
            yield line


async def _stdin_lines() -> AsyncIterator[str]:
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        yield line


async def run_playground(
    sandbox: Sandbox,
    *,
    lines: AsyncIterator[str] | Iterable[str] | None,
    json_mode: bool,
    out: TextIO,
    settle_s: float = 2.0,
    max_wait_s: float = 120.0,
    user: str = "alice",
    channel: str = "general",
) -> int:
    """``Playground.run`` inside ``async with Playground(...)``: printing stops when the lines end."""
    async with Playground(
        sandbox, json_mode=json_mode, out=out, settle_s=settle_s, max_wait_s=max_wait_s, user=user, channel=channel
    ) as playground:
        return await playground.run(lines)
