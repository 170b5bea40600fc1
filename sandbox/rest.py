"""The sandbox's REST API: the routes discord.py uses (API v10), checked with ``sandbox.validation``.

Every rejection the real API would give becomes a Discord-shaped JSON error (``{"message", "code"[,
"errors"]}``) with the real HTTP status, *and* an error event on the sandbox, so tests and the playground see
it: content over 2000 characters and embed limits (50035), an empty message (50006), an interaction answered
twice (40060) or after its deadline (10062), unknown message/channel/webhook (10008/10003/10015), a file over
the upload limit (40005), editing someone else's message (50005), deleting it without permission (50013).
Unknown routes get ``404 {"message": "404: Not Found", "code": 0}``, are logged and become error events too.
Messages are returned as the application may see them: without the Message Content intent, with blank content
(``Sandbox.rest_message``), and ``GET /applications/@me`` says which privileged intents it is granted (``flags``).

Rate limits (``sandbox.ratelimits``) come first: a request over its bucket or the global limit gets Discord's 429
(not an error event: it is Discord working as documented; ``Sandbox.rate_limits`` counts them), and every API
response carries the bucket's ``X-RateLimit-*`` headers and ``Via``. With ``Sandbox.wire`` set, every API exchange is
recorded there (``sandbox.wire``). Response objects have the shapes of Discord's API description (docs/sandbox.md,
"Payload shapes").
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from . import guild
from .model import INTERACTION_TOKEN_TTL_S, UPLOAD_LIMIT_BYTES, Event, InteractionRecord, StoredMessage, Upload
from .ratelimits import RateLimiter, Verdict
from .threads import AUTO_ARCHIVE_MINUTES, PRIVATE_THREAD, PUBLIC_THREAD, SimThread, thread_payload
from .validation import ApiError, form_error, validate_choices, validate_commands, validate_message
from .wire import RestExchange, WireLog

if TYPE_CHECKING:
    from .gateway import Gateway

_log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API = "/api/v{version:\\d+}"


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON response whose Content-Type is exactly ``application/json``: discord.py compares the header
    verbatim and treats anything else (aiohttp adds ``; charset=utf-8``) as text."""
    body = json.dumps(data, separators=(",", ":")).encode()
    return web.Response(body=body, status=status, headers={"Content-Type": "application/json"})


# ------------------------------------------------------------------------- request parsing


async def read_body(request: web.Request) -> tuple[dict[str, Any], dict[int, Upload]]:
    """The JSON body (or multipart ``payload_json``) and the uploaded ``files[n]`` by index n.

    Raises ApiError 40005 for a file over the upload limit and 50109 for unparsable JSON. The body is also kept in
    ``request[WIRE_BODY]`` for the wire log.
    """
    payload, uploads = await _read_body(request)
    request[WIRE_BODY] = payload
    return payload, uploads


WIRE_BODY = web.RequestKey("wire_body", object)


async def _read_body(request: web.Request) -> tuple[dict[str, Any], dict[int, Upload]]:
    uploads: dict[int, Upload] = {}
    if request.content_type.startswith("multipart/"):
        payload: dict[str, Any] = {}
        reader = await request.multipart()
        async for part in reader:
            name = part.name or ""
            if name == "payload_json":
                payload = json.loads(await part.text())
            elif name.startswith("files["):
                data = await part.read(decode=False)
                if len(data) > UPLOAD_LIMIT_BYTES:
                    raise ApiError(413, 40005, "Request entity too large")
                index = int(name[len("files[") : -1])
                ctype = part.headers.get("Content-Type")
                uploads[index] = Upload(part.filename or f"file{index}", bytes(data), ctype)
        return payload, uploads
    if not request.can_read_body:
        return {}, uploads
    try:
        return await request.json(), uploads
    except ValueError:
        raise ApiError(400, 50109, "The request body contains invalid JSON.") from None


# ------------------------------------------------------------------------- the API


class RestBackend(Protocol):
    """What the routes need from the sandbox (``sandbox.server.Sandbox`` is one): its identity, the stores they
    read, the gateway (for intents and reaction dispatches) and the operations that publish and dispatch."""

    @property
    def bot_token(self) -> str: ...
    @property
    def application_id(self) -> int: ...
    @property
    def interaction_deadline_s(self) -> float: ...
    @property
    def message_content_intent(self) -> bool: ...
    @property
    def rate_limits(self) -> RateLimiter: ...
    @property
    def wire(self) -> WireLog | None: ...
    @property
    def gateway_url(self) -> str: ...
    @property
    def gateway(self) -> Gateway: ...
    @property
    def messages(self) -> Mapping[int, StoredMessage]: ...
    @property
    def interactions(self) -> Mapping[int, InteractionRecord]: ...
    @property
    def attachments(self) -> Mapping[int, Upload]: ...
    @property
    def global_commands(self) -> list[dict[str, Any]]: ...
    @property
    def guild_commands(self) -> Mapping[int, list[dict[str, Any]]]: ...

    def publish(self, event: Event) -> Event: ...
    def record_error(self, route: str, code: int, message: str) -> None: ...
    def store_upload(self, channel: guild.SimChannel, upload: Upload) -> dict[str, Any]: ...
    def store_commands(self, guild_id: int | None, payload: list[dict[str, Any]]) -> list[dict[str, Any]]: ...
    def rest_message(self, stored: StoredMessage) -> dict[str, Any]: ...

    async def create_message(
        self,
        author: guild.SimUser,
        channel: guild.SimChannel,
        data: Mapping[str, Any],
        attachments: list[dict[str, Any]],
        *,
        reference: StoredMessage | None = None,
        interaction: InteractionRecord | None = None,
        ephemeral: bool = False,
        loading: bool = False,
        message_id: int | None = None,
    ) -> StoredMessage: ...

    async def edit_message(
        self, stored: StoredMessage, data: Mapping[str, Any], attachments: list[dict[str, Any]] | None
    ) -> None: ...

    async def delete_message(self, stored: StoredMessage) -> None: ...

    @property
    def threads(self) -> Mapping[int, SimThread]: ...

    def find_channel(self, channel_id: int) -> guild.SimChannel | None: ...

    def thread_name_error(self, name: Any) -> str | None: ...

    async def reopen_thread(self, channel: guild.SimChannel) -> None: ...

    async def create_thread(
        self, creator: guild.SimUser, parent: guild.SimChannel, name: str, *, message: StoredMessage | None = None,
        kind: int = PUBLIC_THREAD, auto_archive_duration: int = 1440,
    ) -> SimThread: ...


class RestApi:
    """Route handlers bound to one sandbox; ``middleware`` turns ApiError into responses + error events."""

    def __init__(self, sandbox: RestBackend) -> None:
        self.sb = sandbox

    # ----------------------------------------------------------- plumbing

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/users/@me", self.get_me),
            ("GET", "/users/{user_id}", self.get_user),
            ("GET", "/gateway", self.get_gateway),
            ("GET", "/gateway/bot", self.get_gateway_bot),
            ("GET", "/applications/@me", self.get_application),
            ("GET", "/oauth2/applications/@me", self.get_application),
            ("GET", "/applications/{app_id}/commands", self.get_commands),
            ("PUT", "/applications/{app_id}/commands", self.put_commands),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self.get_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self.put_commands),
            ("GET", "/channels/{channel_id}", self.get_channel),
            ("GET", "/channels/{channel_id}/messages", self.get_messages),
            ("POST", "/channels/{channel_id}/threads", self.post_thread),
            ("POST", "/channels/{channel_id}/messages/{message_id}/threads", self.post_thread),
            ("POST", "/channels/{channel_id}/messages", self.post_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self.get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self.patch_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self.delete_message),
            ("POST", "/channels/{channel_id}/typing", self.post_typing),
            ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self.put_reaction),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self.delete_reaction),
            ("GET", "/guilds/{guild_id}", self.get_guild),
            ("GET", "/guilds/{guild_id}/channels", self.get_guild_channels),
            ("GET", "/guilds/{guild_id}/roles", self.get_guild_roles),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self.get_member),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self.interaction_callback),
            ("POST", "/webhooks/{app_id}/{token}", self.execute_webhook),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self.get_webhook_message),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self.patch_webhook_message),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self.delete_webhook_message),
        ]
        for method, path, handler in routes:
            r.add_route(method, API + path, handler)
        r.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self.get_attachment)
        r.add_route("*", "/{tail:.*}", self.not_found)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = self._route_label(request)
        verdict = self._rate_limit(request, route)
        if verdict.limited:
            response: web.StreamResponse = json_response(verdict.body(), status=429)
        else:
            response = await self._handle(request, handler, route)
        if request.path.startswith("/api/"):
            response.headers.update(verdict.headers)
            response.headers["Via"] = "1.1 google"  # discord.py takes a 429 without Via for a Cloudflare ban
            if self.sb.wire is not None:
                self._record(self.sb.wire, request, response)
        return response

    @staticmethod
    def _record(wire: WireLog, request: web.Request, response: web.StreamResponse) -> None:
        body = response.body if isinstance(response, web.Response) else None
        is_json = response.headers.get("Content-Type") == "application/json" and isinstance(body, bytes)
        wire.rest.append(RestExchange(
            method=request.method, path=re.sub(r"^/api/v\d+", "", request.path), query=dict(request.query),
            request=request.get(WIRE_BODY), status=response.status, response=json.loads(body) if is_json else None,
        ))

    def _rate_limit(self, request: web.Request, route: str) -> Verdict:
        """Discord's rate limits (``sandbox.ratelimits``) for a request to a known API route; others pass."""
        if not request.path.startswith("/api/") or "tail" in request.match_info:
            return Verdict()
        template = re.sub(r"^/api/v\{version\}", "", request.match_info.route.resource.canonical)  # type: ignore[union-attr]
        params = {k: v for k, v in request.match_info.items() if k != "version"}
        return self.sb.rate_limits.check(request.method, template, params, route=route)

    async def _handle(self, request: web.Request, handler: Handler, route: str) -> web.StreamResponse:
        try:
            self._check_auth(request)
            return await handler(request)
        except ApiError as exc:
            self.sb.record_error(route, exc.code, exc.message)
            return json_response(exc.body(), status=exc.status)
        except web.HTTPException:
            raise
        except Exception as exc:
            # A sandbox bug: answer 400 (not 5xx, which discord.py retries for ~25 s) and make it visible.
            _log.exception("sandbox failed to handle %s", route)
            self.sb.record_error(route, 0, f"sandbox internal error: {exc!r}")
            return json_response({"message": f"Sandbox internal error: {exc!r}", "code": 0}, status=400)

    @staticmethod
    def _route_label(request: web.Request) -> str:
        """``METHOD /path`` without the API prefix, interaction tokens shortened (they are long, not secret)."""
        path = re.sub(r"^/api/v\d+", "", request.path)
        path = re.sub(r"/(interactions|webhooks)/(\d+)/[^/]+", r"/\1/\2/<token>", path)
        return f"{request.method} {path}"

    def _check_auth(self, request: web.Request) -> None:
        path = request.path
        if not path.startswith("/api/") or re.match(r"^/api/v\d+/(webhooks|interactions)/", path):
            return  # webhook and interaction routes authenticate by their token, the CDN not at all
        if request.headers.get("Authorization") != f"Bot {self.sb.bot_token}":
            raise ApiError(401, 0, "401: Unauthorized")

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        _log.warning("sandbox has no route for %s %s", request.method, request.path)
        raise ApiError(404, 0, "404: Not Found")

    @staticmethod
    def _snowflake(request: web.Request, key: str) -> int:
        try:
            return int(request.match_info[key])
        except ValueError:
            raise form_error(key, "NUMBER_TYPE_COERCE", "Value is not snowflake.") from None

    def _channel(self, request: web.Request) -> guild.SimChannel:
        channel = self.sb.find_channel(self._snowflake(request, "channel_id"))
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return channel

    def _message(self, request: web.Request, channel: guild.SimChannel | None = None) -> StoredMessage:
        msg_id = self._snowflake(request, "message_id")
        stored = self.sb.messages.get(msg_id)
        if stored is None or stored.deleted or (channel is not None and stored.channel.id != channel.id):
            raise ApiError(404, 10008, "Unknown Message")
        return stored

    def _attachments(
        self, channel: guild.SimChannel, data: dict[str, Any], uploads: dict[int, Upload], current: list | None
    ) -> list[dict[str, Any]] | None:
        """New attachment list: kept existing ones (by id) + uploads; None means "leave unchanged"."""
        if "attachments" not in data and not uploads:
            return None
        existing = {a["id"]: a for a in current or []}
        result: list[dict[str, Any]] = []
        used: set[int] = set()
        for entry in data.get("attachments") or []:
            key = str(entry.get("id"))
            if key in existing:
                result.append(existing[key])
            elif key.isdigit() and int(key) in uploads:
                upload = uploads[int(key)]
                upload.filename = entry.get("filename") or upload.filename
                upload.description = entry.get("description")
                result.append(self.sb.store_upload(channel, upload))
                used.add(int(key))
        for index in sorted(set(uploads) - used):
            result.append(self.sb.store_upload(channel, uploads[index]))
        return result

    # ----------------------------------------------------------- users, gateway, application, guild

    async def get_me(self, request: web.Request) -> web.Response:
        return json_response({**guild.user_payload(guild.BOT), "verified": True, "mfa_enabled": False,
                              "locale": "en-US", "premium_type": 0, "email": None})

    async def get_user(self, request: web.Request) -> web.Response:
        user = guild.user_by_id(self._snowflake(request, "user_id"))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return json_response(guild.user_payload(user))

    async def get_gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self.sb.gateway_url})

    async def get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1}
        return json_response({"url": self.sb.gateway_url, "shards": 1, "session_start_limit": limit})

    async def get_application(self, request: web.Request) -> web.Response:
        return json_response(guild.application_payload(message_content=self.sb.message_content_intent))

    def _check_app_and_guild(self, request: web.Request) -> int | None:
        if self._snowflake(request, "app_id") != self.sb.application_id:
            raise ApiError(403, 20012, "You are not authorized to perform this action on this application")
        if "guild_id" not in request.match_info:
            return None
        guild_id = self._snowflake(request, "guild_id")
        if guild_id != guild.GUILD_ID:
            raise ApiError(403, 50001, "Missing Access")
        return guild_id

    async def get_commands(self, request: web.Request) -> web.Response:
        guild_id = self._check_app_and_guild(request)
        cmds = self.sb.global_commands if guild_id is None else self.sb.guild_commands.get(guild_id, [])
        return json_response(cmds)

    async def put_commands(self, request: web.Request) -> web.Response:
        guild_id = self._check_app_and_guild(request)
        payload, _ = await read_body(request)
        validate_commands(payload)
        return json_response(self.sb.store_commands(guild_id, payload))  # type: ignore[arg-type]

    def _guild(self, request: web.Request) -> None:
        if self._snowflake(request, "guild_id") != guild.GUILD_ID:
            raise ApiError(404, 10004, "Unknown Guild")

    async def get_guild(self, request: web.Request) -> web.Response:
        self._guild(request)
        data = guild.guild_payload()
        if request.query.get("with_counts") in ("1", "true"):
            data.update(approximate_member_count=guild.MEMBER_COUNT, approximate_presence_count=0)
        return json_response(data)

    async def get_guild_channels(self, request: web.Request) -> web.Response:
        self._guild(request)
        return json_response([guild.channel_payload(c) for c in guild.CHANNELS.values()])

    async def get_guild_roles(self, request: web.Request) -> web.Response:
        self._guild(request)
        return json_response([guild.role_payload(r) for r in guild.ROLES])

    async def get_member(self, request: web.Request) -> web.Response:
        self._guild(request)
        user = guild.user_by_id(self._snowflake(request, "user_id"))
        if user is None:
            raise ApiError(404, 10007, "Unknown Member")
        return json_response(guild.member_payload(user))

    # ----------------------------------------------------------- channels and messages

    async def get_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel.is_thread:
            return json_response(thread_payload(self.sb.threads[channel.id]))
        return json_response(guild.channel_payload(channel))

    async def post_thread(self, request: web.Request) -> web.Response:
        """The bot starts a thread in a text channel, from one of its messages (``message_id`` in the route: the
        thread takes the message's id; one thread per message, 160004) or without one (``type`` 11 or 12; Discord
        still defaults to 12, private). ``name`` 1..100 characters (50035); a thread in a thread or a voice channel
        is refused (50024 "Cannot execute action on this channel type")."""
        channel = self._channel(request)
        if channel.type != 0:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        data, _ = await read_body(request)
        if (problem := self.sb.thread_name_error(data.get("name"))) is not None:
            raise form_error("name", "BASE_TYPE_BAD_LENGTH", problem)
        duration = int(data.get("auto_archive_duration") or 1440)
        if duration not in AUTO_ARCHIVE_MINUTES:
            raise form_error("auto_archive_duration", "BASE_TYPE_CHOICES",
                             f"Value must be one of {AUTO_ARCHIVE_MINUTES}.")
        message = None
        kind = PUBLIC_THREAD
        if "message_id" in request.match_info:
            message = self._message(request, channel)
            if message.id in self.sb.threads:
                raise ApiError(400, 160004, "A thread has already been created for this message")
        else:
            kind = int(data.get("type") or PRIVATE_THREAD)
            if kind not in (PUBLIC_THREAD, PRIVATE_THREAD):
                raise form_error("type", "BASE_TYPE_CHOICES", "Value must be one of (11, 12).")
        thread = await self.sb.create_thread(guild.BOT, channel, data["name"].strip(), message=message, kind=kind,
                                             auto_archive_duration=duration)
        return json_response(thread_payload(thread), status=201)

    async def get_messages(self, request: web.Request) -> web.Response:
        """Channel history, newest first; ``limit`` 1..100 (default 50), ``before``/``after`` ids."""
        channel = self._channel(request)
        limit = max(1, min(100, int(request.query.get("limit", 50))))
        before = int(request.query.get("before", 0)) or None
        after = int(request.query.get("after", 0)) or None
        found = [
            self.sb.rest_message(m)
            for m in reversed(self.sb.messages.values())
            if m.channel.id == channel.id
            and not (m.deleted or m.ephemeral)
            and (before is None or m.id < before)
            and (after is None or m.id > after)
        ]
        return json_response(found[-limit:] if after is not None else found[:limit])

    async def post_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        data, uploads = await read_body(request)
        validate_message(data, len(uploads) + len(data.get("attachments") or []))
        thread = self.sb.threads.get(channel.id)
        if thread is not None and thread.locked:
            raise ApiError(403, 50083, "Thread is archived")
        await self.sb.reopen_thread(channel)  # sending in an archived thread unarchives it, as on Discord
        reference = None
        ref = data.get("message_reference")
        if ref and ref.get("message_id"):
            reference = self.sb.messages.get(int(ref["message_id"]))
            if reference is None or reference.deleted or reference.ephemeral:
                reference = None
                if ref.get("fail_if_not_exists", True):
                    raise form_error("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
        attachments = self._attachments(channel, data, uploads, None) or []
        stored = await self.sb.create_message(guild.BOT, channel, data, attachments, reference=reference)
        return json_response(self.sb.rest_message(stored))

    async def get_message(self, request: web.Request) -> web.Response:
        return json_response(self.sb.rest_message(self._message(request, self._channel(request))))

    async def patch_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        stored = self._message(request, channel)
        if stored.author.id != guild.BOT_USER_ID or stored.ephemeral:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        data, uploads = await read_body(request)
        attachments = self._attachments(channel, data, uploads, stored.payload["attachments"])
        count = len(attachments) if attachments is not None else len(stored.payload["attachments"])
        validate_message(data, count, base=stored.payload)
        await self.sb.edit_message(stored, data, attachments)
        return json_response(self.sb.rest_message(stored))

    async def delete_message(self, request: web.Request) -> web.Response:
        stored = self._message(request, self._channel(request))
        if stored.author.id != guild.BOT_USER_ID and not guild.permissions_of(guild.BOT) & guild.MANAGE_MESSAGES:
            raise ApiError(403, 50013, "Missing Permissions")
        await self.sb.delete_message(stored)
        return web.Response(status=204)

    async def post_typing(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self.sb.publish({"event": "typing", "channel": channel.name})
        return web.Response(status=204)

    async def put_reaction(self, request: web.Request) -> web.Response:
        return await self._reaction(request, added=True)

    async def delete_reaction(self, request: web.Request) -> web.Response:
        return await self._reaction(request, added=False)

    async def _reaction(self, request: web.Request, *, added: bool) -> web.Response:
        """The bot adds/removes its reaction: a "reaction" event; MESSAGE_REACTION_ADD/REMOVE with the intent."""
        channel = self._channel(request)
        stored = self._message(request, channel)
        emoji = request.match_info["emoji"]  # unicode emoji, or name:id for a custom one
        self.sb.publish(
            {"event": "reaction", "channel": channel.name, "message_id": stored.id, "emoji": emoji, "added": added}
        )
        name, _, emoji_id = emoji.partition(":")
        data: dict[str, Any] = {
            "user_id": str(guild.BOT_USER_ID),
            "channel_id": str(channel.id),
            "message_id": str(stored.id),
            "guild_id": str(guild.GUILD_ID),
            "emoji": {"id": emoji_id or None, "name": name},
            "burst": False,
            "type": 0,
        }
        if added:
            data.update(member=guild.member_payload(guild.BOT), message_author_id=str(stored.author.id))
        if self.sb.gateway.intents & guild.INTENT_GUILD_MESSAGE_REACTIONS:
            await self.sb.gateway.dispatch("MESSAGE_REACTION_ADD" if added else "MESSAGE_REACTION_REMOVE", data)
        return web.Response(status=204)

    async def get_attachment(self, request: web.Request) -> web.Response:
        try:
            upload = self.sb.attachments.get(int(request.match_info["attachment_id"]))
        except ValueError:
            upload = None
        if upload is None:
            raise ApiError(404, 0, "404: Not Found")
        ctype = upload.content_type or "application/octet-stream"
        return web.Response(body=upload.data, content_type=ctype.split(";")[0])

    # ----------------------------------------------------------- interactions and their webhooks

    def _interaction_by_token(self, request: web.Request) -> InteractionRecord:
        """The interaction a webhook route's token belongs to; 404 10015 / 401 50027 like Discord."""
        token = request.match_info["token"]
        record = next((r for r in reversed(self.sb.interactions.values()) if r.token == token), None)
        if record is None or self._snowflake(request, "app_id") != self.sb.application_id:
            raise ApiError(404, 10015, "Unknown Webhook")
        if asyncio.get_running_loop().time() - record.created > INTERACTION_TOKEN_TTL_S:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        return record

    async def interaction_callback(self, request: web.Request) -> web.Response:
        """POST /interactions/{id}/{token}/callback: types 4 (message), 5 (deferred message), 6 (deferred
        update), 7 (update message), 8 (autocomplete choices, only and always for an autocomplete interaction),
        9 (modal). ``with_response`` selects a 200 body over 204."""
        record = self.sb.interactions.get(self._snowflake(request, "interaction_id"))
        if record is None or record.token != request.match_info["token"]:
            raise ApiError(404, 10062, "Unknown interaction")
        if asyncio.get_running_loop().time() - record.created > self.sb.interaction_deadline_s:
            raise ApiError(404, 10062, "Unknown interaction")
        if record.response_type is not None:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        body, uploads = await read_body(request)
        cb_type = body.get("type")
        data = body.get("data") or {}
        ephemeral = bool(int(data.get("flags") or 0) & 64)
        message: StoredMessage | None = None
        if (cb_type == 8) != (record.kind == 4):
            text = ("Autocomplete interactions can only be answered with choices (type 8)" if record.kind == 4
                    else "Interaction response type 8 is only valid for autocomplete interactions")
            raise form_error("type", "INTERACTION_RESPONSE_TYPE_INVALID", text)
        if cb_type == 8:
            choices = validate_choices(data)
            record.response_type = 8
            self.sb.publish({"event": "choices", "interaction_id": record.id, "choices": choices})
        elif cb_type == 4:
            validate_message(data, len(uploads) + len(data.get("attachments") or []))
            record.response_type, record.ephemeral = 4, ephemeral  # acknowledged before any await
            attachments = self._attachments(record.channel, data, uploads, None) or []
            message = await self.sb.create_message(
                guild.BOT, record.channel, data, attachments, interaction=record, ephemeral=ephemeral
            )
        elif cb_type == 5:
            record.response_type, record.ephemeral = 5, ephemeral
            message = await self.sb.create_message(
                guild.BOT, record.channel, {}, [], interaction=record, ephemeral=ephemeral, loading=True
            )
            self.sb.publish({"event": "deferred", "interaction_id": record.id, "ephemeral": ephemeral})
        elif cb_type in (6, 7):
            message = await self._update_component_message(record, cb_type, data, uploads)
        elif cb_type == 9:
            record.response_type = 9
            self.sb.publish(
                {
                    "event": "modal",
                    "interaction_id": record.id,
                    "custom_id": data.get("custom_id"),
                    "title": data.get("title"),
                }
            )
        else:
            raise form_error("type", "BASE_TYPE_CHOICES", f"Value must be one of (4, 5, 6, 7, 8, 9); got {cb_type!r}")
        if message is not None:
            record.original_id = message.id
            record.message_ids.append(message.id)
        if cb_type == 6:
            message = None  # nothing was created or changed: no resource in the response
        if request.query.get("with_response", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        return json_response(self._callback_response(record, cb_type, message))

    async def _update_component_message(
        self, record: InteractionRecord, cb_type: int, data: dict[str, Any], uploads: dict[int, Upload]
    ) -> StoredMessage:
        """Types 6 (deferred update) and 7 (update message): only for component interactions, whose message
        becomes the interaction's original response (7 edits it now)."""
        stored = self.sb.messages.get(record.component_message_id or 0)
        if record.kind != 3 or stored is None or stored.deleted:
            text = f"Interaction response type {cb_type} is only valid for component interactions"
            raise form_error("type", "INTERACTION_RESPONSE_TYPE_INVALID", text)
        if cb_type == 7:
            attachments = self._attachments(record.channel, data, uploads, stored.payload["attachments"])
            count = len(attachments) if attachments is not None else len(stored.payload["attachments"])
            validate_message(data, count, base=stored.payload)
            record.response_type = 7
            await self.sb.edit_message(stored, data, attachments)
        record.response_type = cb_type
        return stored

    @staticmethod
    def _callback_response(record: InteractionRecord, cb_type: int, message: StoredMessage | None) -> dict:
        """The ``with_response`` body (``InteractionCallbackResponse``): the interaction, with its own type and the
        message its response created or will be (a deferred one: loading), and a ``resource`` only for the types
        that create or update a message (4, 7), as Discord's API description has it."""
        interaction: dict[str, Any] = {"id": str(record.id), "type": record.kind}
        response: dict[str, Any] = {"interaction": interaction}
        if message is not None:
            interaction.update(
                response_message_id=str(message.id),
                response_message_loading=message.loading,
                response_message_ephemeral=message.ephemeral,
            )
            if cb_type in (4, 7):
                response["resource"] = {"type": cb_type, "message": message.payload}
        return response

    def _webhook_message(self, request: web.Request, record: InteractionRecord) -> StoredMessage:
        key = request.match_info["message_id"]
        if key == "@original":
            msg_id = record.original_id
        else:
            msg_id = self._snowflake(request, "message_id")
            if msg_id not in record.message_ids:
                msg_id = None
        stored = self.sb.messages.get(msg_id) if msg_id is not None else None
        if stored is None or stored.deleted:
            raise ApiError(404, 10008, "Unknown Message")
        return stored

    async def execute_webhook(self, request: web.Request) -> web.Response:
        """A followup. After a type-5 defer the first one fills the "thinking" original response (and keeps
        the defer's ephemerality), as on Discord; later ones are new messages (ephemeral with flags 64)."""
        record = self._interaction_by_token(request)
        if record.response_type is None:
            raise ApiError(404, 10015, "Unknown Webhook")
        data, uploads = await read_body(request)
        validate_message(data, len(uploads) + len(data.get("attachments") or []))
        original = self.sb.messages.get(record.original_id) if record.original_id else None
        attachments = self._attachments(record.channel, data, uploads, None)
        if original is not None and original.loading and not original.deleted:
            await self.sb.edit_message(original, data, attachments)
            stored = original
        else:
            ephemeral = bool(int(data.get("flags") or 0) & 64)
            stored = await self.sb.create_message(
                guild.BOT, record.channel, data, attachments or [], interaction=record, ephemeral=ephemeral
            )
            record.message_ids.append(stored.id)
        if request.query.get("wait", "").lower() in ("1", "true"):
            return json_response(self.sb.rest_message(stored))
        return web.Response(status=204)

    async def get_webhook_message(self, request: web.Request) -> web.Response:
        record = self._interaction_by_token(request)
        return json_response(self.sb.rest_message(self._webhook_message(request, record)))

    async def patch_webhook_message(self, request: web.Request) -> web.Response:
        record = self._interaction_by_token(request)
        stored = self._webhook_message(request, record)
        data, uploads = await read_body(request)
        attachments = self._attachments(record.channel, data, uploads, stored.payload["attachments"])
        count = len(attachments) if attachments is not None else len(stored.payload["attachments"])
        validate_message(data, count, base=None if stored.loading else stored.payload)
        await self.sb.edit_message(stored, data, attachments)
        return json_response(self.sb.rest_message(stored))

    async def delete_webhook_message(self, request: web.Request) -> web.Response:
        record = self._interaction_by_token(request)
        await self.sb.delete_message(self._webhook_message(request, record))
        return web.Response(status=204)
