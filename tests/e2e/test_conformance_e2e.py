"""Conformance: what the real bot and the sandbox exchange is what Discord's published API description allows.

An e2e session (/chat, /ask, /docs search, /settings with autocomplete, a mention and a reply, a thread) is recorded
(``sandbox.wire.WireLog``: every REST request and response, every gateway dispatch); then each REST exchange is
matched to its operation in Discord's OpenAPI document (``tests/fixtures/discord-api-spec``, path template + method)
and its request body, query parameter names, status and response body are validated against the operation's schemas;
the gateway dispatches whose objects the document describes (messages, threads, users, members, channels, the guild)
against those component schemas, and the fields the gateway docs say a dispatch always has (``DOCS_REQUIRED``); and
what the schemas cannot say, from Discord's docs: an interaction callback's response describes the interaction with
its own type. Known, deliberate divergences are listed in ``KNOWN`` with a
reason each; any other fails the test. The report (routes used and checked, unchecked ones with why) is printed and
written to ``.pytest_cache/d/conformance/report.md``.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pytest

from sandbox.ratelimits import Verdict
from sandbox.validation import ApiError, form_error
from sandbox.wire import RestExchange, WireLog
from tests.e2e.conftest import Harness
from tests.support.discord_spec import SPEC_DIR, DiscordSpec

# (route label, dispatch name or "*" for any, a fragment of the error) -> why the divergence is deliberate.
KNOWN: dict[tuple[str, str], str] = {
    ("*", "/_errors/0/code: '"): (
        "an Invalid Form Body (50035) names each field's problem with a string code such as BASE_TYPE_MAX_LENGTH, "
        "as Discord's docs show (reference.mdx, Error Messages) and discord.py expects; the document types it as an "
        "integer"),
    ("POST /channels/{channel_id}/messages", "message_reference/channel_id: 1"): (
        "discord.py sends a reply's message_reference ids as JSON numbers; the document types snowflakes as strings "
        "only, but Discord's API accepts a snowflake given as a number, as it always has (the bot's request, not the "
        "sandbox's answer)"),
}

def known_reason(label: str, error: str) -> str | None:
    """Why ``error`` (met on route or dispatch ``label``) is a known, deliberate divergence; None for a new one."""
    return next((why for (where, fragment), why in KNOWN.items() if where in ("*", label) and fragment in error), None)


# Gateway dispatches: which parts of the payload are objects the OpenAPI document describes, by component schema.
Extractor = Callable[[dict[str, Any]], Iterator[tuple[str, Any]]]


def _one(key: str) -> Extractor:
    return lambda d: iter([(key, d[key])] if d.get(key) is not None else [])


def _each(key: str) -> Extractor:
    return lambda d: ((f"{key}/{i}", item) for i, item in enumerate(d.get(key) or []))


def _whole(d: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    yield "(root)", d


def _resolved_users(d: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for user_id, user in ((d.get("data") or {}).get("resolved") or {}).get("users", {}).items():
        yield f"data/resolved/users/{user_id}", user


def _channel(d: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    channel = d.get("channel")
    if channel is not None and channel.get("type") not in (10, 11, 12):
        yield "channel", channel


DISPATCH_SCHEMAS: dict[str, list[tuple[Extractor, str]]] = {
    "READY": [(_one("user"), "UserResponse")],
    # GUILD_CREATE's voice states lack guild_id and member, as the gateway docs say: not VoiceStateResponse.
    "GUILD_CREATE": [(_whole, "GuildResponse"), (_each("members"), "GuildMemberResponse"),
                     (_each("channels"), "GuildChannelResponse"), (_each("threads"), "ThreadResponse")],
    "MESSAGE_CREATE": [(_whole, "MessageResponse")],
    "MESSAGE_UPDATE": [(_whole, "MessageResponse")],
    "THREAD_CREATE": [(_whole, "ThreadResponse")],
    "THREAD_UPDATE": [(_whole, "ThreadResponse")],
    "VOICE_STATE_UPDATE": [(_whole, "VoiceStateResponse")],
    "INTERACTION_CREATE": [(_one("member"), "GuildMemberResponse"), (_channel, "GuildChannelResponse"),
                           (_one("message"), "MessageResponse"), (_resolved_users, "UserResponse")],
}
# The fields the gateway docs (discord-api-docs, events/gateway-events.mdx) list as always sent, for the payloads
# themselves (the objects inside are checked above).
DOCS_REQUIRED: dict[str, list[str]] = {
    "READY": ["v", "user", "guilds", "session_id", "resume_gateway_url", "application"],
    "INTERACTION_CREATE": ["id", "application_id", "type", "token", "version", "app_permissions", "entitlements",
                           "authorizing_integration_owners", "attachment_size_limit"],
    "MESSAGE_DELETE": ["id", "channel_id"],
    "THREAD_DELETE": ["id", "guild_id", "parent_id", "type"],
    "MESSAGE_REACTION_ADD": ["user_id", "channel_id", "message_id", "emoji", "burst", "type"],
    "MESSAGE_REACTION_REMOVE": ["user_id", "channel_id", "message_id", "emoji", "burst", "type"],
    "TYPING_START": ["channel_id", "user_id", "timestamp"],
    "GUILD_MEMBERS_CHUNK": ["guild_id", "members", "chunk_index", "chunk_count"],
}
UNCHECKED_DISPATCH = ("the OpenAPI document describes HTTP only, no component schema fits this event's payload and "
                      "DOCS_REQUIRED does not list it")


@dataclass
class RouteReport:
    """What was seen of one operation (or one dispatch event)."""

    count: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    requests_checked: int = 0
    responses_checked: int = 0
    errors: list[str] = field(default_factory=list)
    known: set[str] = field(default_factory=set)


@dataclass
class Conformance:
    spec: DiscordSpec
    routes: dict[str, RouteReport] = field(default_factory=lambda: defaultdict(RouteReport))
    unmatched: Counter[str] = field(default_factory=Counter)
    dispatches: dict[str, RouteReport] = field(default_factory=lambda: defaultdict(RouteReport))
    unchecked_dispatches: Counter[str] = field(default_factory=Counter)
    new: list[str] = field(default_factory=list)

    def _judge(self, report: RouteReport, label: str, errors: list[str]) -> None:
        for error in errors:
            reason = known_reason(label, error)
            if reason is None:
                report.errors.append(error)
                if error not in self.new:
                    self.new.append(error)
            else:
                report.known.add(f"{label}: {reason}")

    def check_rest(self, exchange: RestExchange, interaction_types: dict[str, int]) -> None:
        op = self.spec.operation(exchange.method, exchange.path)
        if op is None:
            self.unmatched[f"{exchange.method} {exchange.path}"] += 1
            self.new.append(f"{exchange.method} {exchange.path}: no such operation in Discord's API description")
            return
        report = self.routes[op.label]
        report.count += 1
        report.statuses[exchange.status] += 1
        errors: list[str] = []
        documented = self.spec.query_parameters(op)
        errors += [f"{op.label} query parameter {name!r} is not documented"
                   for name in exchange.query if name not in documented]
        if exchange.request is not None and self.spec.request_schema_pointer(op) is not None:
            report.requests_checked += 1
            errors += self.spec.request_errors(op, exchange.request)
        if not self.spec.has_response(op, exchange.status):
            errors.append(f"{op.label}: status {exchange.status} is not a documented response")
        elif self.spec.response_schema_pointer(op, exchange.status) is None:
            if exchange.response is not None:
                errors.append(f"{op.label}: a {exchange.status} response has no body, got {exchange.response!r:.80}")
        else:
            report.responses_checked += 1
            errors += self.spec.response_errors(op, exchange.status, exchange.response)
        if op.template.endswith("/callback") and exchange.status == 200 and isinstance(exchange.response, dict):
            interaction = exchange.response.get("interaction") or {}
            expected = interaction_types.get(str(interaction.get("id")))
            if expected is not None and interaction.get("type") != expected:
                errors.append(f"{op.label}: the response's interaction has type {interaction.get('type')}, "
                              f"the interaction is of type {expected}")
        self._judge(report, op.label, errors)

    def check_dispatch(self, payload: dict[str, Any]) -> None:
        event = payload["t"]
        extractors = DISPATCH_SCHEMAS.get(event, [])
        if not extractors and event not in DOCS_REQUIRED:
            self.unchecked_dispatches[event] += 1
            return
        report = self.dispatches[event]
        report.count += 1
        errors: list[str] = []
        if event in DOCS_REQUIRED:
            report.responses_checked += 1
            required = jsonschema.Draft202012Validator({"type": "object", "required": DOCS_REQUIRED[event]})
            errors += [f"{event} (the gateway docs' fields): {e.message}" for e in required.iter_errors(payload["d"])]
        for extract, schema in extractors:
            for where, instance in extract(payload["d"]):
                report.responses_checked += 1
                errors += self.spec.schema_errors(schema, instance, f"{event} {where} ({schema})")
        self._judge(report, event, errors)

    def report(self) -> str:
        lines = [f"# Conformance with Discord's API description ({SPEC_DIR.name}, see its README.md)", "",
                 "## REST routes used and checked", "",
                 "| route | calls | statuses | request bodies checked | responses checked | divergences |",
                 "| --- | --- | --- | --- | --- | --- |"]
        for label, r in sorted(self.routes.items()):
            statuses = ", ".join(f"{s}×{n}" for s, n in sorted(r.statuses.items()))
            lines.append(f"| `{label}` | {r.count} | {statuses} | {r.requests_checked} | {r.responses_checked} | "
                         f"{len(r.errors)} new, {len(r.known)} known |")
        lines += ["", "## Gateway dispatches checked (objects the document describes)", "",
                  "| event | dispatches | objects checked | divergences |", "| --- | --- | --- | --- |"]
        for event, r in sorted(self.dispatches.items()):
            divergences = f"{len(r.errors)} new, {len(r.known)} known"
            lines.append(f"| `{event}` | {r.count} | {r.responses_checked} | {divergences} |")
        lines += ["", "## Unchecked", ""]
        lines += [f"- REST `{route}` ×{n}: not an operation of the document"
                  for route, n in sorted(self.unmatched.items())]
        lines += [f"- dispatch `{event}` ×{n}: {UNCHECKED_DISPATCH}"
                  for event, n in sorted(self.unchecked_dispatches.items())]
        lines += ["- REST responses without a JSON body (204, documented as such): status checked only",
                  "- query parameters: names checked against the operation's, values not",
                  "- multipart requests: their `payload_json` checked, not the files"]
        known = sorted({k for r in [*self.routes.values(), *self.dispatches.values()] for k in r.known})
        lines += ["", "## Known divergences seen", ""] + [f"- {k}" for k in known or ["none"]]
        lines += ["", "## New divergences", ""] + [f"- {e}" for e in self.new or ["none"]]
        return "\n".join(lines) + "\n"


async def session(harness: Harness) -> None:
    """A short session touching what the bot does in text: commands, autocomplete, a mention and a reply, a thread
    (archived and deleted at the end)."""
    await harness.answer("alice", "chat", {"message": "hello there"})
    await harness.answer("bob", "ask", {"question": "what does the handbook say about onboarding?"})
    await harness.answer("alice", "docs search", {"query": "onboarding"})
    assert await harness.sandbox.autocomplete("admin", "settings model", {"name": "ll"}, focused="name")
    await harness.answer("admin", "settings model", {"name": "llama3.2"})
    await harness.answer("admin", "settings show")
    said = await harness.sandbox.send_message("bob", "general", "hi bot", mention_bot=True)
    await harness.settle()
    reply = next(m for m in harness.bot_messages() if m["reference_id"] == said["id"])
    await harness.sandbox.send_message("bob", "general", "and again", reply_to=reply["id"])
    await harness.settle()
    handle = await harness.sandbox.invoke("alice", "chat", {"message": "a thread please", "thread": True})
    created = await harness.sandbox.wait_for(lambda e: e["event"] == "thread" and e["action"] == "create", since=handle)
    await harness.settle()
    await harness.sandbox.send_message("alice", created["thread"], "and in the thread?")
    await harness.settle(interaction_id=None)
    await harness.sandbox.archive_thread(created["thread"])
    await harness.sandbox.delete_thread(created["thread"])


async def test_what_the_bot_and_the_sandbox_exchange_conforms_to_discords_api_description(
        make_harness, request: pytest.FixtureRequest) -> None:
    wire = WireLog()
    harness = await make_harness(docs=True, wire=wire)
    await harness.answer("admin", "docs reload", timeout=60)
    await session(harness)

    conformance = Conformance(DiscordSpec.load())
    interaction_types = {p["d"]["id"]: p["d"]["type"] for p in wire.dispatches if p["t"] == "INTERACTION_CREATE"}
    for exchange in wire.rest:
        conformance.check_rest(exchange, interaction_types)
    for payload in wire.dispatches:
        conformance.check_dispatch(payload)
    report = conformance.report()
    print(report)
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    folder = cache.mkdir("conformance") if cache is not None else None
    if folder is not None:
        (folder / "report.md").write_text(report, encoding="utf-8")

    used = set(conformance.routes)
    for route in ("PUT /applications/{application_id}/commands",
                  "POST /interactions/{interaction_id}/{interaction_token}/callback",
                  "POST /channels/{channel_id}/messages", "POST /channels/{channel_id}/messages/{message_id}/threads",
                  "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original"):
        assert route in used, f"{route} was not exercised"
    assert {"READY", "GUILD_CREATE", "INTERACTION_CREATE", "MESSAGE_CREATE", "MESSAGE_UPDATE", "THREAD_CREATE",
            "THREAD_UPDATE", "THREAD_DELETE"} <= set(conformance.dispatches)
    assert not conformance.new, "new divergences from Discord's API description:\n" + "\n".join(conformance.new)


def test_error_and_rate_limit_bodies_conform() -> None:
    """The sandbox's error bodies, which an e2e session meets only by chance (a 429) or not at all."""
    spec = DiscordSpec.load()
    op = spec.operation("POST", "/channels/1/messages")
    assert op is not None
    verdict = Verdict(retry_after_s=1.5, scope="user")
    assert spec.response_errors(op, 429, verdict.body()) == []
    invalid = form_error("embeds.0.title", "BASE_TYPE_MAX_LENGTH", "Too long").body()
    errors = spec.response_errors(op, 400, invalid)
    assert errors and all(known_reason(op.label, error) for error in errors)
    assert spec.response_errors(op, 404, ApiError(404, 10003, "Unknown Channel").body()) == []


def test_operations_are_matched_by_template_literal_segments_first() -> None:
    spec = DiscordSpec.load()
    assert spec.operation("GET", "/users/@me").template == "/users/@me"  # type: ignore[union-attr]
    assert spec.operation("GET", "/users/123").template == "/users/{user_id}"  # type: ignore[union-attr]
    original = spec.operation("PATCH", "/webhooks/1/tok/messages/@original")
    assert original is not None and original.template.endswith("/messages/@original")
    assert spec.operation("GET", "/no/such/route") is None
    op = spec.operation("POST", "/channels/1/messages")
    assert op is not None
    assert spec.request_errors(op, {"content": "hi"}) == []
    assert re.search(r"content: 5 is not of type", spec.request_errors(op, {"content": 5})[0])
