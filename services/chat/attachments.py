"""Attachments of a chat message as context for its answer: text files become part of the question, with their
names; images go to a model that can see them (Ollama's ``vision`` capability, ``/api/show``).

Only what can be read is taken: a text file is one of ``TEXT_EXTENSIONS`` (or a ``text/*`` content type) decoded
as UTF-8 without NUL bytes; an image is PNG, JPEG, WebP or GIF. Anything else, anything over the size limit
(``ATTACHMENT_MAX_BYTES``), and text that is binary or not UTF-8 is refused with one sentence (AttachmentRefused).
Attachments are not stored: the conversation history keeps the member's words and the files' names only.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Literal

from services.chat.llm import LLMClient
from services.errors import InvalidInput

Kind = Literal["text", "image"]

TEXT_EXTENSIONS = frozenset({
    ".txt", ".md", ".markdown", ".rst", ".log", ".csv", ".tsv", ".json", ".jsonl", ".yaml", ".yml", ".toml", ".ini",
    ".cfg", ".conf", ".xml", ".html", ".css", ".srt", ".tex", ".py", ".js", ".ts", ".tsx", ".jsx", ".java", ".kt",
    ".c", ".h", ".cpp", ".hpp", ".cs", ".go", ".rs", ".rb", ".php", ".swift", ".sh", ".sql", ".lua", ".diff", ".patch",
})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
VISION_MODELS_CHECKED = 20  # models asked about (/api/show each) when looking for one that can see images


class AttachmentRefused(InvalidInput):
    """An attachment the bot does not read; the message is one sentence naming the file and the reason."""


@dataclass(frozen=True)
class TextAttachment:
    """A text file attached to a message: its name and its text (decoded, line endings normalized)."""

    filename: str
    text: str


def kind_of(filename: str, content_type: str | None) -> Kind | None:
    """"text" or "image" by the file's extension (or a ``text/*`` / ``image/*`` content type), None when neither."""
    extension = os.path.splitext(filename)[1].lower()
    mime = (content_type or "").split(";")[0].strip().lower()
    if extension in IMAGE_EXTENSIONS or mime in ("image/png", "image/jpeg", "image/webp", "image/gif"):
        return "image"
    if extension in TEXT_EXTENSIONS or mime.startswith("text/"):
        return "text"
    return None


def check_attachment(filename: str, content_type: str | None, size: int, max_bytes: int) -> Kind:
    """The kind of an attachment the bot reads; raises AttachmentRefused for an unsupported type or when ``size``
    (bytes) is over ``max_bytes``."""
    kind = kind_of(filename, content_type)
    if kind is None:
        raise AttachmentRefused(f"I can't read `{filename}`: I read text files (such as .txt, .md, .py, .json, .csv) "
                                "and images (PNG, JPEG, WebP, GIF).")
    if size > max_bytes:
        raise AttachmentRefused(f"`{filename}` is {size:,} bytes, over my limit of {max_bytes:,} bytes "
                                "(ATTACHMENT_MAX_BYTES).")
    return kind


def decode_text(filename: str, data: bytes) -> TextAttachment:
    """``data`` as text; raises AttachmentRefused when it holds NUL bytes (binary) or is not UTF-8."""
    if b"\x00" in data:
        raise AttachmentRefused(f"`{filename}` looks like a binary file, not text, so I can't read it.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AttachmentRefused(f"`{filename}` is not UTF-8 text, so I can't read it; save it as UTF-8 and "
                                "send it again.") from None
    return TextAttachment(filename, text.replace("\r\n", "\n").replace("\r", "\n"))


def with_attachments(message: str, files: list[TextAttachment], max_chars: int) -> str:
    """``message`` followed by each file as a fenced block under its name, in at most ``max_chars`` characters of
    file text in all (shared evenly between files that need more than their share); a cut file ends with a note
    saying how much of it was left out."""
    if not files:
        return message
    parts = [message]
    left, remaining = max_chars, len(files)
    for file in sorted(files, key=lambda f: len(f.text)):  # short files first: what they leave goes to longer ones
        share = left // remaining
        text = file.text[:share]
        note = "" if len(text) == len(file.text) else (
            f"\n[… truncated: the first {len(text):,} of {len(file.text):,} characters are shown]")
        left, remaining = left - len(text), remaining - 1
        parts.append(f"Attached file `{file.filename}`:\n```\n{text}\n```{note}")
    return "\n\n".join(parts)


def text_budget_chars(token_budget: int, chars_per_token: int) -> int:
    """Characters of attached text sent with a message: half the history token budget, on top of the history."""
    return math.floor(token_budget / 2) * chars_per_token


def stored_question(message: str, filenames: list[str]) -> str:
    """What the history keeps of a message with attachments: the words and the files' names, not their content."""
    return message if not filenames else f"{message}\n[attached: {', '.join(filenames)}]"


async def vision_models(llm: LLMClient) -> list[str]:
    """Pulled models that can see images (``vision`` in ``/api/show``'s capabilities), asking about the first
    VISION_MODELS_CHECKED models of ``/api/tags``. Raises BackendUnavailable when Ollama cannot be reached."""
    found = []
    for name in (await llm.list_models())[:VISION_MODELS_CHECKED]:
        if "vision" in await llm.capabilities(name):
            found.append(name)
    return found
