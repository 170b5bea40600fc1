"""Interaction payloads: what a member's slash command or component use looks like to the bot.

``build_options`` turns option values given by a test or the playground ("true", "3", a member name, a file
path) into ``data.options`` and ``data.resolved`` as Discord sends them, checked against the command's schema
the way the Discord client checks them; ``mark_focused`` makes them an autocomplete request's options;
``interaction_payload`` is the whole INTERACTION_CREATE object.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import guild
from .guild import SimChannel, UnknownName
from .model import UPLOAD_LIMIT_BYTES, InteractionRecord, SandboxError, Upload

StoreUpload = Callable[[SimChannel, Upload], dict[str, Any]]
"""Keeps an upload and returns its Discord attachment object (``Sandbox.store_upload``)."""

_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n"}


def interaction_payload(record: InteractionRecord, data: dict[str, Any], application_id: int) -> dict[str, Any]:
    """The INTERACTION_CREATE object for ``record`` with ``data`` (command options or component data)."""
    return {
        "id": str(record.id),
        "application_id": str(application_id),
        "type": record.kind,
        "data": data,
        "guild_id": str(guild.GUILD_ID),
        "guild": {"id": str(guild.GUILD_ID), "locale": "en-US", "features": []},
        "channel_id": str(record.channel.id),
        "channel": {
            **guild.channel_payload(record.channel),
            "permissions": str(guild.channel_permissions_of(record.user, record.channel)),
        },
        "member": guild.member_payload(record.user, with_permissions=True),
        "token": record.token,
        "version": 1,
        "app_permissions": str(guild.permissions_of(guild.BOT)),
        "locale": "en-US",
        "guild_locale": "en-US",
        "entitlements": [],
        "entitlement_sku_ids": [],
        "authorizing_integration_owners": {"0": str(guild.GUILD_ID)},
        "context": 0,
        "attachment_size_limit": UPLOAD_LIMIT_BYTES,
    }


def mark_focused(options: list[dict[str, Any]], cmd: dict[str, Any], name: str, typed: str) -> None:
    """Turn ``options`` built for ``cmd`` into an APPLICATION_COMMAND_AUTOCOMPLETE request's: the option ``name``
    of the innermost subcommand carries ``"focused": true`` and the text typed so far, a string whatever the
    option's type, as Discord sends it. Raises SandboxError when that option has no autocomplete."""
    container, schema = options, cmd.get("options") or []
    while len(container) == 1 and container[0]["type"] in (1, 2):
        sub = container[0]["name"]
        schema = next(o for o in schema if o["name"] == sub).get("options") or []
        container = container[0]["options"]
    spec = next((o for o in schema if o["name"] == name), None)
    if spec is None or not spec.get("autocomplete"):
        raise SandboxError(f"option {name!r} has no autocomplete")
    container[:] = [o for o in container if o["name"] != name]
    container.append({"name": name, "type": spec["type"], "value": typed, "focused": True})


def find_component(components: list[dict[str, Any]], custom_id: str) -> dict[str, Any] | None:
    """The component with ``custom_id`` anywhere in a message's (nested) component tree, or None."""
    for component in components:
        if component.get("custom_id") == custom_id:
            return component
        for key in ("components", "accessory"):
            child = component.get(key)
            children = child if isinstance(child, list) else [child] if isinstance(child, dict) else []
            found = find_component(children, custom_id)
            if found is not None:
                return found
    return None


async def build_options(
    cmd: dict[str, Any],
    subpath: list[str],
    values: dict[str, Any],
    validate: bool,
    resolved: dict[str, dict[str, Any]],
    store_upload: StoreUpload,
    channel: SimChannel,
) -> list[dict[str, Any]]:
    """Interaction ``data.options`` for ``cmd`` + subcommand path + option values; fills ``resolved``.

    Attachment options are read (``read_upload``) and kept with ``store_upload`` as uploads to ``channel``.
    Raises SandboxError naming the unknown subcommand/option, missing required option or bad value.
    """
    top: list[dict[str, Any]] = []
    container = top
    schema = cmd.get("options") or []
    where = "/" + cmd["name"]
    for name in subpath:
        sub = next((o for o in schema if o["name"] == name and o["type"] in (1, 2)), None)
        if sub is None:
            subs = [o["name"] for o in schema if o["type"] in (1, 2)]
            raise SandboxError(f"{where} has no subcommand {name!r}; it has: {', '.join(subs) or 'none'}")
        node: dict[str, Any] = {"name": name, "type": sub["type"], "options": []}
        container.append(node)
        container = node["options"]
        schema = sub.get("options") or []
        where += " " + name
    subs = [o["name"] for o in schema if o["type"] in (1, 2)]
    if subs:
        raise SandboxError(f"{where} needs a subcommand: {', '.join(subs)}")
    known = {o["name"]: o for o in schema}
    for name in values:
        if name not in known:
            raise SandboxError(f"{where} has no option {name!r}; options: {', '.join(known) or 'none'}")
    for name, spec in known.items():
        if name not in values:
            if spec.get("required") and validate:
                raise SandboxError(f"{where} needs option {name!r}")
            continue
        if spec["type"] == 11:
            try:
                upload = await read_upload(values[name])
            except OSError as exc:
                raise SandboxError(f"cannot read the file for {where} {name}: {exc}") from None
            attachment = store_upload(channel, upload)
            attachment["ephemeral"] = True  # option attachments are ephemeral uploads on Discord
            resolved.setdefault("attachments", {})[attachment["id"]] = attachment
            container.append({"name": name, "type": 11, "value": attachment["id"]})
            continue
        value = coerce(spec, values[name], validate, resolved, f"{where} {name}")
        container.append({"name": name, "type": spec["type"], "value": value})
    return top


def coerce(spec: dict[str, Any], raw: Any, validate: bool, resolved: dict[str, dict[str, Any]], where: str) -> Any:
    """An option value converted to the schema's type (resolved users/roles/channels recorded)."""
    kind = spec["type"]
    try:
        if kind == 3:
            value: Any = str(raw)
        elif kind == 4:
            if isinstance(raw, bool):
                raise ValueError("a bool is not an integer")
            value = int(raw)
        elif kind == 10:
            value = float(raw)
        elif kind == 5:
            value = _to_bool(raw)
        elif kind in (6, 9) and not (kind == 9 and _is_role(raw)):
            user = guild.member_by_name(str(raw)) if not isinstance(raw, int) else guild.user_by_id(raw)
            if user is None:
                raise ValueError(f"unknown user id {raw}")
            resolved.setdefault("users", {})[str(user.id)] = guild.user_payload(user)
            member = guild.member_payload(user, with_user=False, with_permissions=True)
            resolved.setdefault("members", {})[str(user.id)] = member
            return str(user.id)
        elif kind in (8, 9):
            role_id = guild.role_by_name(str(raw))
            resolved.setdefault("roles", {})[str(role_id)] = guild.role_payload(role_id)
            return str(role_id)
        elif kind == 7:
            chan = guild.channel_by_name(str(raw))
            data = {**guild.channel_payload(chan), "permissions": str(guild.EVERYONE_PERMISSIONS)}
            resolved.setdefault("channels", {})[str(chan.id)] = data
            return str(chan.id)
        else:
            raise ValueError(f"option type {kind} is not supported by the sandbox")
    except (ValueError, UnknownName) as exc:
        raise SandboxError(f"bad value {raw!r} for {where}: {exc}") from None
    if validate:
        check_constraints(spec, value, where)
    return value


def check_constraints(spec: dict[str, Any], value: Any, where: str) -> None:
    """Raise SandboxError when ``value`` breaks the option's choices, length or range, as the client refuses it."""
    choices = spec.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        names = ", ".join(str(c["value"]) for c in choices)
        raise SandboxError(f"{where} must be one of: {names}")
    if isinstance(value, str):
        if len(value) < spec.get("min_length", 0) or len(value) > spec.get("max_length", 6000):
            lo, hi = spec.get("min_length", 0), spec.get("max_length", 6000)
            raise SandboxError(f"{where} must be {lo}..{hi} characters long (got {len(value)})")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        lo, hi = spec.get("min_value"), spec.get("max_value")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise SandboxError(f"{where} must be within {lo}..{hi} (got {value})")


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected true or false")


def _is_role(raw: Any) -> bool:
    try:
        guild.role_by_name(str(raw))
    except UnknownName:
        return False
    return True


async def read_upload(raw: Any) -> Upload:
    """An attachment option value: a local path (str/Path, read in a thread), ``(filename, bytes)`` or an
    ``Upload``; raises OSError when the file cannot be read."""
    if isinstance(raw, Upload):
        return raw
    if isinstance(raw, tuple) and len(raw) == 2:
        return Upload(str(raw[0]), bytes(raw[1]))
    path = Path(raw)
    return Upload(path.name, await asyncio.to_thread(lambda: path.expanduser().read_bytes()))
