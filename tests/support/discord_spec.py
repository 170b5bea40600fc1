"""Discord's published OpenAPI description (vendored in ``tests/fixtures/discord-api-spec``) as a validator.

``DiscordSpec.load()`` reads the document once; ``operation(method, path)`` finds the operation a concrete request
path is an instance of (``/channels/123/messages`` -> ``/channels/{channel_id}/messages``; a literal segment such
as ``@me`` or ``@original`` wins over a parameter); ``request_errors`` and ``response_errors`` validate a JSON body
against that operation's schemas with ``jsonschema`` (Draft 2020-12, which OpenAPI 3.1 schemas are), ``$ref``\\s
resolved inside the document; ``schema_errors`` validates against a named component schema (``MessageResponse``).
Each returns the errors as short strings (``"<where>: <message>"``), an empty list when the body conforms.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import referencing
from referencing.jsonschema import DRAFT202012

SPEC_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "discord-api-spec"
SPEC_PATH = SPEC_DIR / "openapi.json"
SPEC_URI = "urn:discord-api-spec:openapi.json"
MAX_ERRORS = 20  # per body: the first few say what is wrong


@dataclass(frozen=True)
class Operation:
    """One operation of the document: its path template (``/channels/{channel_id}/messages``), lower-case method
    and the JSON pointer of its object in the document."""

    template: str
    method: str
    pointer: str

    @property
    def label(self) -> str:
        return f"{self.method.upper()} {self.template}"


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class DiscordSpec:
    """The vendored OpenAPI document and validators for its operations' bodies."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = referencing.Resource.from_contents(document, default_specification=DRAFT202012)
        self._registry: referencing.Registry = referencing.Registry().with_resource(SPEC_URI, resource)
        self._routes: list[tuple[re.Pattern[str], int, str]] = []
        for template in document["paths"]:
            pattern = "".join(
                "/[^/]+" if segment.startswith("{") else "/" + re.escape(segment)
                for segment in template.strip("/").split("/")
            )
            literals = sum(not segment.startswith("{") for segment in template.strip("/").split("/"))
            self._routes.append((re.compile(f"^{pattern}$"), literals, template))

    @classmethod
    @functools.cache
    def load(cls) -> DiscordSpec:
        """The vendored document (read once per process)."""
        return cls(json.loads(SPEC_PATH.read_text(encoding="utf-8")))

    def operation(self, method: str, path: str) -> Operation | None:
        """The operation ``method path`` (a concrete path, no query, no ``/api/v10``) is an instance of, or None."""
        matches = [(literals, template) for pattern, literals, template in self._routes if pattern.match(path)]
        method = method.lower()
        for _, template in sorted(matches, reverse=True):
            if method in self.document["paths"][template]:
                return Operation(template, method, f"/paths/{_escape(template)}/{method}")
        return None

    def _at(self, pointer: str) -> Any:
        node: Any = self.document
        for token in pointer.strip("/").split("/"):
            node = node[token.replace("~1", "/").replace("~0", "~")]
        return node

    def _resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and set(node) == {"$ref"}:
            node = self._at(node["$ref"].removeprefix("#"))
        return node

    def _errors(self, pointer: str, instance: Any, where: str) -> list[str]:
        validator = _validator(self, pointer)
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
        out = []
        for error in errors[:MAX_ERRORS]:
            location = "/".join(str(p) for p in error.absolute_path) or "(root)"
            out.append(f"{where} {location}: {_short(error)}")
        return out

    def request_schema_pointer(self, op: Operation) -> str | None:
        """The pointer of the operation's JSON request body schema, or None when it takes no JSON body."""
        body = self._resolve(self._at(op.pointer).get("requestBody"))
        if not body or "application/json" not in body.get("content", {}):
            return None
        return f"{op.pointer}/requestBody/content/application~1json/schema"

    def response_schema_pointer(self, op: Operation, status: int) -> str | None:
        """The pointer of the JSON schema of the operation's response with ``status`` (exact, then ``4XX``-style),
        or None when that response has no JSON body (e.g. 204)."""
        responses = self._at(op.pointer)["responses"]
        for key in (str(status), f"{str(status)[0]}XX"):
            if key in responses:
                response = self._resolve(responses[key])
                if "application/json" not in response.get("content", {}):
                    return None
                if "$ref" in responses[key]:
                    return f"{responses[key]['$ref'].removeprefix('#')}/content/application~1json/schema"
                return f"{op.pointer}/responses/{key}/content/application~1json/schema"
        return None

    def query_parameters(self, op: Operation) -> set[str]:
        """The names of the operation's documented query parameters (its own and its path's)."""
        path_item = self._at(op.pointer.rsplit("/", 1)[0])
        parameters = [*path_item.get("parameters", []), *self._at(op.pointer).get("parameters", [])]
        return {p["name"] for p in map(self._resolve, parameters) if p.get("in") == "query"}

    def has_response(self, op: Operation, status: int) -> bool:
        """Whether the operation documents a response with ``status`` (exactly or as ``4XX``)."""
        responses = self._at(op.pointer)["responses"]
        return str(status) in responses or f"{str(status)[0]}XX" in responses

    def request_errors(self, op: Operation, body: Any) -> list[str]:
        pointer = self.request_schema_pointer(op)
        return [] if pointer is None else self._errors(pointer, body, f"{op.label} request")

    def response_errors(self, op: Operation, status: int, body: Any) -> list[str]:
        pointer = self.response_schema_pointer(op, status)
        return [] if pointer is None else self._errors(pointer, body, f"{op.label} {status} response")

    def schema_errors(self, name: str, instance: Any, where: str) -> list[str]:
        """Errors of ``instance`` against the component schema ``name`` (e.g. ``MessageResponse``)."""
        return self._errors(f"/components/schemas/{_escape(name)}", instance, where)


@functools.cache
def _validator(spec: DiscordSpec, pointer: str) -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator({"$ref": f"{SPEC_URI}#{pointer}"}, registry=spec._registry)


def _short(error: jsonschema.ValidationError) -> str:
    """A validation error in one line; for an anyOf/oneOf that no branch matched, the deepest reasons of its
    branches (the instance itself is not repeated: it can be large)."""
    if error.context:
        depth = max(len(e.absolute_path) for e in error.context)
        deepest = [e for e in error.context if len(e.absolute_path) == depth]
        reasons = sorted({f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {_short(e)}" for e in deepest})
        message = f"matches none of its {error.validator} schemas: " + "; ".join(reasons[:3])
    else:
        message = error.message
    return message if len(message) <= 400 else message[:150] + " ... " + message[-245:]  # the tail is the deepest
