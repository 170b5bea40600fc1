"""Message payloads: a stored message as REST returns it, as the gateway dispatches it, as an event, as a view.

Pure functions of the data model (``sandbox.model``) and the guild; the façade (``sandbox.server``) stores the
messages and decides when to publish or dispatch them.
"""

from __future__ import annotations

import datetime as dt
import mimetypes
import urllib.parse
from collections.abc import Mapping
from typing import Any

from services.speech.speech_text import USER_MENTION

from . import guild
from .guild import SimChannel, SimUser
from .model import Event, InteractionRecord, StoredMessage, Upload


def message_payload(
    msg_id: int,
    author: SimUser,
    channel: SimChannel,
    data: Mapping[str, Any],
    attachments: list[dict[str, Any]],
    *,
    application_id: int,
    reference: StoredMessage | None = None,
    interaction: InteractionRecord | None = None,
    ephemeral: bool = False,
    loading: bool = False,
) -> dict[str, Any]:
    """The Discord message object of a new message; ``data`` holds the body fields (content, embeds, components,
    flags, allowed_mentions, tts, nonce); ``loading`` is a deferred interaction's "thinking" response (flag 128)."""
    content = data.get("content") or ""
    flags = int(data.get("flags") or 0) | (64 if ephemeral else 0) | (128 if loading else 0)
    payload: dict[str, Any] = {
        "id": str(msg_id),
        "channel_id": str(channel.id),
        "author": guild.user_payload(author),
        "content": content,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
        "edited_timestamp": None,
        "tts": bool(data.get("tts", False)),
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": attachments,
        "embeds": list(data.get("embeds") or []),
        "components": with_component_ids(data.get("components") or []),
        "pinned": False,
        "type": 19 if reference else (20 if interaction and interaction.kind == 2 else 0),
        "flags": flags,
    }
    if data.get("nonce") is not None:
        payload["nonce"] = data["nonce"]
    if reference is not None:
        payload["message_reference"] = {
            "type": 0,
            "message_id": str(reference.id),
            "channel_id": str(reference.channel.id),
            "guild_id": str(guild.GUILD_ID),
        }
        # Discord embeds the replied-to message one level deep only.
        payload["referenced_message"] = {k: v for k, v in reference.payload.items() if k != "referenced_message"}
    if interaction is not None:
        payload["webhook_id"] = str(application_id)
        payload["application_id"] = str(application_id)
        user = guild.user_payload(interaction.user)
        metadata: dict[str, Any] = {
            "id": str(interaction.id),
            "type": interaction.kind,
            "user": user,
            "authorizing_integration_owners": {"0": str(guild.GUILD_ID)},
        }
        if interaction.kind == 2:
            metadata.update(name=interaction.command_name, command_type=1)
        else:
            metadata["interacted_message_id"] = str(interaction.component_message_id)
        payload["interaction_metadata"] = metadata
        name = interaction.command_name
        payload["interaction"] = {"id": str(interaction.id), "type": interaction.kind, "name": name, "user": user}
    payload["mentions"] = mentions(content, data.get("allowed_mentions"), reference)
    return payload


def with_component_ids(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A message's components as Discord stores them: each one without an ``id`` gets one, numbered from 1 in
    tree order (a parent before its children), skipping the ids the bot chose itself; the bot's own are kept.
    Returns new dicts; raises nothing (a malformed tree is numbered as far as it goes)."""
    copied = _copy_components(components)
    used = {c["id"] for c in _walk(copied) if isinstance(c.get("id"), int)}
    next_id = 1
    for component in _walk(copied):
        if not isinstance(component.get("id"), int):
            while next_id in used:
                next_id += 1
            component["id"] = next_id
            used.add(next_id)
    return copied


def _copy_components(components: list[Any]) -> list[Any]:
    out = []
    for component in components:
        if not isinstance(component, dict):
            out.append(component)
            continue
        copy = dict(component)
        for key in ("components", "accessory"):
            child = copy.get(key)
            if isinstance(child, list):
                copy[key] = _copy_components(child)
            elif isinstance(child, dict):
                copy[key] = _copy_components([child])[0]
        out.append(copy)
    return out


def _walk(components: list[Any]) -> Any:
    for component in components:
        if not isinstance(component, dict):
            continue
        yield component
        for key in ("components", "accessory"):
            child = component.get(key)
            yield from _walk(child if isinstance(child, list) else [child] if isinstance(child, dict) else [])


def mentions(content: str, allowed: Mapping[str, Any] | None, reference: StoredMessage | None) -> list[dict[str, Any]]:
    """The ``mentions`` of a message: users mentioned in ``content`` that ``allowed`` (allowed_mentions) lets
    through, plus the replied-to author unless ``replied_user`` is false."""
    ids = [int(m) for m in USER_MENTION.findall(content)]
    if allowed is not None:
        parse = allowed.get("parse", [])
        listed = {int(u) for u in allowed.get("users", [])}
        ids = [i for i in ids if "users" in parse or i in listed]
    replied_user = allowed is None or allowed.get("replied_user", True)
    if reference is not None and replied_user:
        ids.append(reference.author.id)
    users = []
    for user_id in dict.fromkeys(ids):
        user = guild.user_by_id(user_id)
        if user is not None:
            users.append({**guild.user_payload(user), "member": guild.member_payload(user, with_user=False)})
    return users


def gateway_message(stored: StoredMessage, intents: int, bot_user_id: int) -> dict[str, Any]:
    """MESSAGE_CREATE/UPDATE data: the REST object plus guild_id and member, its content blanked as
    ``as_seen_by_bot`` does when the session's ``intents`` lack MESSAGE_CONTENT."""
    data = {
        **stored.payload,
        "guild_id": str(guild.GUILD_ID),
        "member": guild.member_payload(stored.author, with_user=False),
    }
    return as_seen_by_bot(data, stored.channel, content_intent=bool(intents & guild.INTENT_MESSAGE_CONTENT),
                          bot_user_id=bot_user_id)


CONTENT_FIELDS = ("content", "embeds", "attachments", "components")
"""The message fields Discord empties for an app without the Message Content intent (``poll`` is left out)."""


def as_seen_by_bot(
    payload: dict[str, Any], channel: SimChannel, *, content_intent: bool, bot_user_id: int
) -> dict[str, Any]:
    """A message object (REST or gateway) as an app with or without the Message Content intent receives it.

    With the intent, ``payload`` itself. Without it, a copy whose ``content`` is "" and ``embeds``, ``attachments``
    and ``components`` are [] with ``poll`` omitted, as Discord documents (gateway "Message Content Intent"), except
    for the documented exceptions: a message the app sent, one in a DM with the app (``channel``'s type), and one
    in which the app is mentioned (in ``mentions``, which includes the author of a message replied to with a ping).
    The ``referenced_message`` inside is treated the same way, on its own.
    """
    if content_intent:
        return payload
    in_dm = channel.type in guild.DM_CHANNEL_TYPES
    return _blank_unless_exempt(payload, in_dm=in_dm, bot_user_id=bot_user_id)


def _blank_unless_exempt(message: dict[str, Any], *, in_dm: bool, bot_user_id: int) -> dict[str, Any]:
    data = dict(message)
    exempt = (
        in_dm
        or int(data["author"]["id"]) == bot_user_id
        or any(int(user["id"]) == bot_user_id for user in data.get("mentions") or [])
    )
    if not exempt:
        data.update(content="", embeds=[], attachments=[], components=[])
        data.pop("poll", None)
    if data.get("referenced_message"):
        data["referenced_message"] = _blank_unless_exempt(data["referenced_message"], in_dm=in_dm,
                                                          bot_user_id=bot_user_id)
    return data


def message_event(kind: str, stored: StoredMessage) -> Event:
    """The "message", "edit" or "delete" event (``kind``) of ``stored``, without ``t_ms``."""
    p = stored.payload
    ref = p.get("message_reference")
    return {
        "event": kind,
        "channel": stored.channel.name,
        "message_id": stored.id,
        "author": stored.author.name,
        "content": p["content"],
        "embeds": p["embeds"],
        "attachments": [{"filename": a["filename"], "size": a["size"]} for a in p["attachments"]],
        "ephemeral": stored.ephemeral,
        "interaction_id": stored.interaction_id,
        "reference_id": int(ref["message_id"]) if ref else None,
    }


def message_view(stored: StoredMessage) -> dict[str, Any]:
    """``stored`` as ``Sandbox.channel_messages`` shows it: id, channel, author, content, embeds, attachments
    (filename, size, url), ephemeral, interaction_id, reference_id, edited."""
    p = stored.payload
    ref = p.get("message_reference")
    return {
        "id": stored.id,
        "channel": stored.channel.name,
        "author": stored.author.name,
        "content": p["content"],
        "embeds": p["embeds"],
        "attachments": [{"filename": a["filename"], "size": a["size"], "url": a["url"]} for a in p["attachments"]],
        "ephemeral": stored.ephemeral,
        "interaction_id": stored.interaction_id,
        "reference_id": int(ref["message_id"]) if ref else None,
        "edited": p.get("edited_timestamp") is not None,
    }


def attachment_payload(att_id: int, channel: SimChannel, upload: Upload, base_url: str) -> dict[str, Any]:
    """The Discord attachment object of ``upload``, served by the sandbox at ``base_url/attachments/...``.

    The file name stays as uploaded in ``filename`` and is percent-encoded in the URL, as Discord's CDN does, so a
    name with ``/``, ``..``, ``?`` or ``#`` still reaches the bot (and its own sanitizing) as one URL segment.
    """
    url = f"{base_url}/attachments/{channel.id}/{att_id}/{urllib.parse.quote(upload.filename, safe='')}"
    content_type = upload.content_type or mimetypes.guess_type(upload.filename)[0] or "application/octet-stream"
    data: dict[str, Any] = {
        "id": str(att_id),
        "filename": upload.filename,
        "size": len(upload.data),
        "url": url,
        "proxy_url": url,
        "content_type": content_type,
    }
    if upload.description:
        data["description"] = upload.description
    return data
