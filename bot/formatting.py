"""Formatting answers for Discord: splitting long text into messages of at most 2000 characters.

Splits prefer, in order: a paragraph break, a line break, a sentence end, a space. A split never loses
text, and a split inside a fenced code block closes the fence at the end of one message and reopens it
(with its language) at the start of the next, so each message renders on its own.
"""

from __future__ import annotations

import re

DISCORD_MESSAGE_LIMIT = 2000

_FENCE = re.compile(r"^\s*(```+|~~~+)(\S*)", re.MULTILINE)
_SENTENCE_END = re.compile(r"[.!?…][)\]\"']*\s")


def _open_fence(text: str) -> str | None:
    """The opening line of a code fence left open at the end of ``text`` (e.g. "```py"), else None."""
    opener: str | None = None
    for match in _FENCE.finditer(text):
        if opener is None:
            opener = match.group(1) + match.group(2)
        else:
            opener = None
    return opener


def _cut(text: str, limit: int) -> int:
    """Index at which to cut ``text`` (len(text) > limit) so the first part is <= limit characters."""
    window = text[:limit]
    floor = limit // 3  # never cut so early that messages become tiny
    for separator in ("\n\n", "\n"):
        at = window.rfind(separator)
        if at >= floor:
            return at + len(separator)
    ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() >= floor]
    if ends:
        return ends[-1]
    at = window.rfind(" ")
    if at >= floor:
        return at + 1
    return limit


def split_message(text: str, limit: int = DISCORD_MESSAGE_LIMIT) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters each.

    Joining the parts, after removing the fence lines this function adds, gives back ``text``. Returns
    an empty list for empty text.
    """
    parts: list[str] = []
    rest = text
    reopen = ""
    while rest:
        piece = reopen + rest
        if len(piece) <= limit:
            parts.append(piece)
            break
        # Reserve room for a closing fence in case the cut falls inside a code block.
        budget = limit - 4
        at = _cut(piece, budget)
        if at <= len(reopen):  # the reopened fence alone fills the budget: cut hard after it
            at = budget
        head = piece[:at]
        fence = _open_fence(head)
        if fence is not None:
            head = head.rstrip("\n") + "\n```"
            reopen = fence + "\n"
        else:
            reopen = ""
        parts.append(head)
        rest = piece[at:]
    return [part for part in parts if part.strip()]
