"""Discord's request validation, as the sandbox's REST routes apply it: the limits on messages, embeds and
application commands, and the Discord-shaped errors (``ApiError``) that a rejected request gets.
"""

from __future__ import annotations

import re
from typing import Any

_COMMAND_NAME_RE = re.compile(r"^[-_\w]{1,32}$")
_EMBED_LIMITS = (("title", 256), ("description", 4096))


class ApiError(Exception):
    """A Discord API error response: HTTP ``status``, JSON ``code`` and ``message`` (and ``errors`` detail)."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body


def form_error(path: str, code: str, message: str) -> ApiError:
    """A 400 "Invalid Form Body" (50035) with the nested ``errors`` object Discord uses for field ``path``."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path.split(".")):
        errors = {part: errors}
    return ApiError(400, 50035, f"Invalid Form Body\nIn {path}: {message}", errors)


def validate_message(data: dict[str, Any], attachment_count: int, *, base: dict[str, Any] | None = None) -> None:
    """Raise ApiError as Discord would for a message create (``base`` None) or an edit of ``base``.

    Checks content (<= 2000 characters), embeds (<= 10; title 256, description 4096, 25 fields, field name
    256 / value 1024, footer 2048, author 256, 6000 characters in all) and emptiness (code 50006).
    """
    content = data.get("content")
    if content is not None and not isinstance(content, str):
        raise form_error("content", "BASE_TYPE_STRING", "Could not interpret value as string.")
    if content is not None and len(content) > 2000:
        raise form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
    embeds = data.get("embeds") or []
    if len(embeds) > 10:
        raise form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    total = 0
    for i, embed in enumerate(embeds):
        total += _validate_embed(embed, f"embeds.{i}")
    if total > 6000:
        raise form_error("embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")

    def final(key: str) -> Any:
        return data[key] if key in data else (base or {}).get(key)

    has_components = bool(final("components"))
    if not (final("content") or final("embeds") or attachment_count or has_components or data.get("sticker_ids")):
        if data.get("poll") is None:
            raise ApiError(400, 50006, "Cannot send an empty message")


def _validate_embed(embed: dict[str, Any], path: str) -> int:
    """Check one embed's limits; returns its character count toward the 6000 total."""
    size = 0
    for key, limit in _EMBED_LIMITS:
        value = embed.get(key) or ""
        if len(value) > limit:
            raise form_error(f"{path}.{key}", "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
        size += len(value)
    fields = embed.get("fields") or []
    if len(fields) > 25:
        raise form_error(f"{path}.fields", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    for j, fld in enumerate(fields):
        for key, limit in (("name", 256), ("value", 1024)):
            value = fld.get(key) or ""
            if not value:
                raise form_error(f"{path}.fields.{j}.{key}", "BASE_TYPE_REQUIRED", "This field is required")
            if len(value) > limit:
                where = f"{path}.fields.{j}.{key}"
                raise form_error(where, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
            size += len(value)
    for key, sub, limit in (("footer", "text", 2048), ("author", "name", 256)):
        value = (embed.get(key) or {}).get(sub) or ""
        if len(value) > limit:
            raise form_error(f"{path}.{key}.{sub}", "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
        size += len(value)
    return size


def validate_commands(payload: Any) -> None:
    """Reject a bulk command overwrite the way Discord does for the common schema mistakes (50035)."""
    if not isinstance(payload, list):
        raise form_error("_root", "BASE_TYPE_ARRAY", "Must be an array.")
    if len(payload) > 100:
        raise form_error("_root", "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
    seen: set[tuple[str, int]] = set()
    for i, cmd in enumerate(payload):
        kind = int(cmd.get("type", 1))
        if (cmd.get("name"), kind) in seen:
            raise ApiError(400, 50035, f"Invalid Form Body\nIn {i}.name: Application command names must be unique")
        seen.add((cmd.get("name"), kind))
        if kind == 1:
            _validate_option_list(cmd, str(i))


def _validate_option_list(node: dict[str, Any], path: str) -> None:
    name = node.get("name") or ""
    if not _COMMAND_NAME_RE.match(name) or name != name.lower():
        raise form_error(f"{path}.name", "APPLICATION_COMMAND_INVALID_NAME", f"Command name is invalid: {name!r}")
    if not 1 <= len(node.get("description") or "") <= 100:
        raise form_error(f"{path}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    options = node.get("options") or []
    if len(options) > 25:
        raise form_error(f"{path}.options", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    optional_seen = False
    for j, opt in enumerate(options):
        where = f"{path}.options.{j}"
        if opt.get("type") in (1, 2):
            _validate_option_list(opt, where)
            continue
        _validate_option_list({**opt, "options": []}, where)
        if opt.get("required"):
            if optional_seen:
                code = "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID"
                raise form_error(where, code, "Required options must be before optional options")
        else:
            optional_seen = True
        if len(opt.get("choices") or []) > 25:
            raise form_error(f"{where}.choices", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")


MAX_CHOICES = 25  # autocomplete choices Discord accepts in one answer


def validate_choices(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The choices of an autocomplete answer (response type 8), checked as Discord checks them; raises ApiError."""
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise form_error("data.choices", "BASE_TYPE_REQUIRED", "This field is required")
    if len(choices) > MAX_CHOICES:
        raise form_error("data.choices", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CHOICES} or fewer in length.")
    for index, choice in enumerate(choices):
        name = choice.get("name") if isinstance(choice, dict) else None
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise form_error(f"data.choices.{index}.name", "BASE_TYPE_BAD_LENGTH",
                             "Must be between 1 and 100 in length.")
        value = choice.get("value")
        if isinstance(value, str) and len(value) > 100:
            raise form_error(f"data.choices.{index}.value", "BASE_TYPE_BAD_LENGTH", "Must be 100 or fewer in length.")
        if value is None:
            raise form_error(f"data.choices.{index}.value", "BASE_TYPE_REQUIRED", "This field is required")
    return choices
