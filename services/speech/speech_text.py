"""Text to be spoken: Discord Markdown and markup turned into plain sentences, then split for streaming TTS.

A synthesiser reads what it is given symbol by symbol, so an answer written for a Discord channel (Markdown,
mentions, URLs, emoji) has to be rewritten first: ``prepare_for_speech`` does that, ``split_sentences`` cuts the
result into sentences so speech can start after the first one is synthesised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

import emoji

CODE_OMITTED = "(code omitted)"
"""Spoken once in place of each fenced code block."""

DEFAULT_MAX_SENTENCE_CHARS = 250
"""Longest piece ``split_sentences`` returns by default: about 15 s of speech, so the first piece of a long
unpunctuated answer is synthesised (and heard) quickly."""

# Abbreviations whose trailing dot does not end a sentence (compared lower-case, without the final dot).
ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "cf", "approx",
        "inc", "ltd", "co", "corp", "no", "vol", "fig", "dept", "est", "min", "max", "jan", "feb", "mar", "apr",
        "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "a.m", "p.m", "u.s", "u.k",
    }
)  # fmt: skip

_FENCED_CODE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)  # an unclosed fence (cut-off answer) runs to the end
_INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_ESCAPED = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|~>:<])")
USER_MENTION = re.compile(r"<@!?(\d+)>")
"""A user mention as Discord writes it in message content: ``<@id>`` or the legacy ``<@!id>``; group 1 is the id."""
_CHANNEL_MENTION = re.compile(r"<#\d+>")
_ROLE_MENTION = re.compile(r"<@&\d+>")
_COMMAND_MENTION = re.compile(r"</([\w -]+):\d+>")
_TIMESTAMP = re.compile(r"<t:(-?\d{1,13})(?::[tTdDfFR])?>")
_CUSTOM_EMOJI = re.compile(r"<a?:(\w{2,32}):\d+>")
_IMAGE_OR_LINK = re.compile(r"!?\[([^\]]*)\]\(\s*<?[^)\s>]*>?(?:\s+\"[^\"]*\")?\s*\)")
_URL = re.compile(r"<?(?:https?://|www\.)[^\s<>]+>?", re.IGNORECASE)
_URL_TRAILING = ".,;:!?)]}'\""
_HEADING = re.compile(r"^\s{0,3}(?:#{1,6}|-#)\s+")
_QUOTE = re.compile(r"^\s{0,3}>{1,3}\s?")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_RULE_OR_TABLE_SEPARATOR = re.compile(r"^\s*(?:[-*_]\s*){3,}$|^\s*\|?(?:\s*:?-{3,}:?\s*\|)+\s*:?-*:?\s*$")
_EMPHASIS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\*\*\*(?=\S)(.+?)(?<=\S)\*\*\*", re.DOTALL), r"\1"),
    (re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", re.DOTALL), r"\1"),
    (re.compile(r"__(?=\S)(.+?)(?<=\S)__", re.DOTALL), r"\1"),
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])", re.DOTALL), r"\1"),
    (re.compile(r"(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])", re.DOTALL), r"\1"),
    (re.compile(r"~~(?=\S)(.+?)(?<=\S)~~", re.DOTALL), r"\1"),
    (re.compile(r"\|\|(.+?)\|\|", re.DOTALL), r"\1"),
)
_SKIN_TONE = re.compile(r"_(?:light|medium-light|medium|medium-dark|dark)_skin_tone")
_PLACEHOLDER = re.compile(r"\x00(\d+)\x00")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([.,;:!?])")
_LINE_END_PUNCTUATION = tuple(".!?:;,…")


def prepare_for_speech(text: str, *, mentions: Mapping[int, str] | None = None) -> str:
    """Rewrite a Discord message or LLM answer as plain text to be read aloud.

    - Fenced code blocks become CODE_OMITTED, once per block; inline code keeps its text without the backticks.
    - Markdown markers are dropped (bold, italics, underline, strikethrough, spoilers, headings, block quotes,
      list bullets, rules); ``[label](url)`` reads its label; a bare URL reads "a link to <host>".
    - ``<@id>``/``<@!id>`` read ``mentions[id]`` (a display name) or "someone"; ``<#id>`` "a channel";
      ``<@&id>`` "a role"; ``</name:id>`` "the name command"; ``<t:unix:style>`` a UTC date and time.
    - Custom emoji ``<:name:id>``/``<a:name:id>`` read their name; Unicode emoji their CLDR name (``emoji`` package),
      skin tones left out.
    - A heading, list item or line without final punctuation ends with a full stop, so it is read as a sentence;
      all whitespace is collapsed to single spaces.

    Returns the empty string when nothing is left to say (e.g. only whitespace).
    """
    names = mentions or {}
    protected: list[str] = []  # text kept verbatim (inline code, escapes, names) until the end

    def protect(value: str) -> str:
        protected.append(value)
        return f"\x00{len(protected) - 1}\x00"

    text = text.replace("\r\n", "\n")
    text = _FENCED_CODE.sub(lambda _: f"\n{CODE_OMITTED}\n", text)
    text = _INLINE_CODE.sub(lambda m: protect(m.group(2).strip()), text)
    text = _ESCAPED.sub(lambda m: protect(m.group(1)), text)
    text = USER_MENTION.sub(lambda m: protect(names.get(int(m.group(1)), "someone")), text)
    text = _ROLE_MENTION.sub("a role", text)
    text = _CHANNEL_MENTION.sub("a channel", text)
    text = _COMMAND_MENTION.sub(lambda m: f"the {m.group(1)} command", text)
    text = _TIMESTAMP.sub(lambda m: _spoken_timestamp(int(m.group(1))), text)
    text = _CUSTOM_EMOJI.sub(lambda m: f" {m.group(1).replace('_', ' ')} ", text)
    text = _IMAGE_OR_LINK.sub(lambda m: m.group(1), text)
    text = _URL.sub(lambda m: _spoken_url(m.group(0)), text)
    text = _strip_block_markup(text)
    for pattern, replacement in _EMPHASIS:
        text = pattern.sub(replacement, text)
    text = emoji.replace_emoji(text, replace=_spoken_emoji)
    text = _PLACEHOLDER.sub(lambda m: protected[int(m.group(1))], text)
    text = " ".join(text.split())
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)


def split_sentences(text: str, *, max_chars: int = DEFAULT_MAX_SENTENCE_CHARS) -> list[str]:
    """Split text into sentences, in order, each stripped and at most ``max_chars`` long.

    A sentence ends at ``.``, ``!``, ``?`` or ``…`` (with any closing quotes or brackets) followed by whitespace,
    or at a blank line; not after a known abbreviation ("Dr.", "e.g."), a single-letter initial, or when the next
    word starts in lower case. Decimals ("3.14") and dotted names ("example.com") have no space after the dot
    and are never split. A longer sentence is cut at its last comma, semicolon or colon before ``max_chars``,
    else at its last space, else hard at ``max_chars``. Empty pieces are dropped.
    Raises ValueError when ``max_chars`` < 20.
    """
    if max_chars < 20:
        raise ValueError(f"max_chars must be at least 20, got {max_chars}")
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        start = 0
        for match in re.finditer(r"[.!?…]+[\"'”’)\]]*(?=\s)", paragraph):
            if _is_sentence_end(paragraph, match):
                sentences.append(paragraph[start : match.end()])
                start = match.end()
        sentences.append(paragraph[start:])
    pieces: list[str] = []
    for sentence in sentences:
        pieces.extend(_cut_long(" ".join(sentence.split()), max_chars))
    return [piece for piece in pieces if piece]


def _is_sentence_end(text: str, match: re.Match[str]) -> bool:
    """Whether the punctuation ``match`` (followed by whitespace) in ``text`` ends a sentence."""
    following = text[match.end() :].lstrip()
    if following[:1].islower():
        return False
    if match.group(0).rstrip("\"'”’)]") != ".":
        return True  # "!", "?", "…", "...", "?!": an end unless the next word is lower-case
    word = re.search(r"(\S+)$", text[: match.start()])
    if word is None:
        return True
    token = word.group(1).lstrip("(\"'“‘[").lower()
    if token in ABBREVIATIONS:
        return False
    return not (len(token) == 1 and token.isalpha())  # an initial: "J. R. R. Tolkien"


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    """Cut ``sentence`` into pieces of at most ``max_chars``, preferring clause ends, then spaces."""
    pieces: list[str] = []
    while len(sentence) > max_chars:
        window = sentence[: max_chars + 1]  # a break right after max_chars characters still fits
        cut = max(window.rfind(mark) + 1 for mark in ",;:")
        if cut < max_chars // 3:  # a clause break too early would leave tiny pieces; prefer the last space
            cut = window.rfind(" ")
        if cut <= 0:
            cut = max_chars
        pieces.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    pieces.append(sentence)
    return pieces


def _strip_block_markup(text: str) -> str:
    """Drop line-level Markdown (headings, quotes, bullets, rules, table rules) and end bare lines with a stop."""
    lines: list[tuple[str, bool]] = []  # (text, is a heading, list item, table row or omitted code)
    for raw in text.split("\n"):
        if _RULE_OR_TABLE_SEPARATOR.match(raw):
            continue
        line = _QUOTE.sub("", raw)
        item = _HEADING.sub("", line)
        item = _BULLET.sub("", item)
        is_item = item != line or item.strip() == CODE_OMITTED
        line = item.strip()
        if line.startswith("|") or line.endswith("|"):  # a table row
            line = ", ".join(cell.strip() for cell in line.strip("|").split("|") if cell.strip())
            is_item = True
        if line:
            lines.append((line, is_item))
    ended: list[str] = []
    for index, (line, is_item) in enumerate(lines):
        following, following_is_item = lines[index + 1] if index + 1 < len(lines) else ("", False)
        # Items are sentences of their own; a wrapped line of prose continues in lower case.
        wrapped = following[:1].islower() and not is_item and not following_is_item
        if not line.endswith(_LINE_END_PUNCTUATION) and not wrapped:
            line += "."
        ended.append(line)
    return "\n".join(ended)


def _spoken_url(url: str) -> str:
    """'a link to <host>' for a bare URL; trailing sentence punctuation is given back to the sentence."""
    url = url.strip("<>")
    trailing = ""
    while url and url[-1] in _URL_TRAILING:
        trailing = url[-1] + trailing
        url = url[:-1]
    host = urlsplit(url if "://" in url else f"http://{url}").hostname or url
    return f"a link to {host.removeprefix('www.')}{trailing}"


def _spoken_timestamp(unix_s: int) -> str:
    """A Discord timestamp as a UTC date and time, e.g. 'March 5, 2024 at 14:00 UTC'."""
    try:
        moment = datetime.fromtimestamp(unix_s, UTC)
    except (OverflowError, OSError, ValueError):
        return "a date"
    return f"{moment:%B} {moment.day}, {moment.year} at {moment:%H:%M} UTC"


def _spoken_emoji(chars: str, data: dict[str, object]) -> str:
    """Replacement for one Unicode emoji: its English name, spaced ("👍🏽" -> " thumbs up ")."""
    name = str(data.get("en", "")).strip(":")
    name = _SKIN_TONE.sub("", name).replace("_", " ").strip()
    return f" {name} " if name else " "
