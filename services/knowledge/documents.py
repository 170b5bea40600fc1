"""Document loading, cleaning, chunking and hashing for the RAG index.

Supported files: Markdown (``.md``, ``.markdown``), MDX (``.mdx``), plain text (``.txt``) and PDF (``.pdf``,
text extracted with pypdf). Everything here is plain, blocking Python with no discord import: callers on the
event loop run :func:`load_document` (file read + PDF parsing) in ``asyncio.to_thread``.

Pipeline::

    bytes --check_document_bytes--> skip reason | None
          --parse_sections-->       [Section(heading path, body text)]   (front matter / JSX stripped)
          --chunk_sections-->       [Chunk(text <= max_chars, source, heading, chunk_id)]

Chunks follow Markdown headings: each section (the text under one heading, up to the next heading of any
level) becomes one chunk when it fits ``max_chars``; a longer section is split on paragraph boundaries, then
sentence boundaries, then words, with ``overlap_chars`` of the previous chunk's tail repeated at the start of
the next one. Fenced code blocks are kept whole when they fit, never used as overlap, and only a fence longer
than ``max_chars`` is split (by lines, each piece re-fenced so it still renders as code).

Symbolic links: a scope folder is a boundary. A link whose target lies outside it (``passwd.txt -> /etc/passwd``,
or a link into another server's folder) is never read: listing names it with a reason, and reading checks again
and opens the checked path without following links, so a file swapped for a link in between is refused too.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import stat
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath

from services.errors import InvalidInput

TEXT_SUFFIXES = frozenset({".md", ".markdown", ".mdx", ".txt"})
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdx"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | {".pdf"}

#: Longest file name accepted by :func:`sanitize_filename` (most filesystems allow 255 bytes).
MAX_FILENAME_CHARS = 120


@dataclass(frozen=True, slots=True)
class Section:
    """Text under one heading. ``heading`` is the heading path, e.g. ``"Troubleshooting > GPU errors"``."""

    heading: str
    text: str


@dataclass(frozen=True, slots=True)
class Chunk:
    """One passage of a document, the unit that is embedded and retrieved.

    text: the passage (at most ``max_chars`` characters, Markdown kept as is); source: the file path relative
    to its scope folder, POSIX separators (e.g. ``"guides/gpu.md"``); heading: the heading path of the section
    it comes from (``""`` when none); index: position in the document, from 0; chunk_id: stable id, see
    :func:`chunk_id`.
    """

    text: str
    source: str
    heading: str
    index: int
    chunk_id: str


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    """A document read from disk: its bytes' sha256 (hex), size in bytes and sections."""

    source: str
    sha256: str
    size_bytes: int
    sections: list[Section]


class DocumentSkipped(Exception):
    """A file that cannot be indexed; ``reason`` is a short phrase for admins, e.g. ``"binary"``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------------------------- hashing / ids


def content_hash(data: bytes) -> str:
    """Return the sha256 of ``data`` as 64 lowercase hex characters."""
    return hashlib.sha256(data).hexdigest()


def chunk_id(source: str, index: int, text: str) -> str:
    """Stable id of a chunk: sha256 of source, index and the chunk text, 32 hex characters.

    The same file content always yields the same ids, so re-indexing an unchanged file is idempotent, and a
    changed chunk gets a new id (old ids are deleted by source before the new ones are written).
    """
    digest = hashlib.sha256(f"{source}\x00{index}\x00{content_hash(text.encode('utf-8'))}".encode())
    return digest.hexdigest()[:32]


# --------------------------------------------------------------------------------------------- file checks


def suffix_of(name: str) -> str:
    """Lowercased suffix of a file name, e.g. ``".md"``; ``""`` when there is none."""
    return PurePosixPath(name).suffix.lower()


def _over_limit(size: int, max_bytes: int) -> str:
    return f"over DOC_MAX_BYTES ({size} bytes > {max_bytes})"


def check_document_bytes(name: str, data: bytes, *, max_bytes: int) -> str | None:
    """Return why ``data`` (the content of file ``name``) cannot be indexed, or None when it can.

    Reasons: ``"unsupported type .xyz"``, ``"over DOC_MAX_BYTES (N bytes > LIMIT)"``, ``"empty"``,
    ``"binary"`` (NUL bytes in a text file), ``"not decodable as UTF-8"``, ``"not a PDF file"``.
    PDF structure is only checked when parsed (:func:`parse_sections`), which can also skip it.
    """
    suffix = suffix_of(name)
    if suffix not in SUPPORTED_SUFFIXES:
        return f"unsupported type {suffix or '(no extension)'}"
    if len(data) > max_bytes:
        return _over_limit(len(data), max_bytes)
    if not data.strip():
        return "empty"
    if suffix == ".pdf":
        # The header may be preceded by junk bytes; readers look within the first KiB.
        return None if b"%PDF-" in data[:1024] else "not a PDF file"
    if b"\x00" in data:
        return "binary"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "not decodable as UTF-8"
    return None


#: Why a symbolic link in a documents folder is not followed (shown in reload reports, ``main.py index`` and
#: ``doctor``). "The documents folder" is the scope's folder: a link from ``global/`` into a server's folder, or
#: from one server's folder into another's, leads outside it too.
LINK_OUTSIDE = "link to a file outside the documents folder"
LINK_FOLDER_OUTSIDE = "link to a folder outside the documents folder"
LINK_BROKEN = "broken link (its target does not exist)"
LINK_LOOP = "link loop (it leads back to itself)"
LINK_SWAPPED = "replaced by a link while it was being read; reload again"
NOT_REGULAR = "not a regular file"

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in for a file must not block the open
_BINARY = getattr(os, "O_BINARY", 0)


@dataclass(frozen=True, slots=True)
class FolderListing:
    """What a documents folder holds. files: names (relative POSIX paths, sorted) of the regular files and of
    the links to files inside the folder; skipped: ``(name, reason)`` of the links that are not followed (see
    ``LINK_*``), sorted by name."""

    files: list[str]
    skipped: list[tuple[str, str]]


def _resolve_inside(root: Path, path: Path) -> Path:
    """``path`` with every link resolved, when that is ``root`` (resolved) or lies inside it; blocking.

    Raises DocumentSkipped(LINK_BROKEN / LINK_LOOP / LINK_OUTSIDE / LINK_FOLDER_OUTSIDE); FileNotFoundError when
    ``path`` itself is gone; OSError when a folder on the way cannot be read.
    """
    try:
        target = path.resolve(strict=True)
    except FileNotFoundError:
        if path.is_symlink():
            raise DocumentSkipped(LINK_BROKEN) from None
        raise
    except RuntimeError as exc:  # Python < 3.13 reports a link loop this way
        raise DocumentSkipped(LINK_LOOP) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DocumentSkipped(LINK_LOOP) from exc
        raise
    if not target.is_relative_to(root):
        raise DocumentSkipped(LINK_FOLDER_OUTSIDE if target.is_dir() else LINK_OUTSIDE)
    return target


def list_document_files(folder: Path) -> FolderListing:
    """The documents under ``folder``, hidden ones excluded (blocking).

    A link is listed only when its target is a file inside ``folder``; links that lead outside, dangle or loop
    are in ``skipped`` with the reason. Linked folders are not descended into (their files, when inside, are
    listed under their real names).
    """
    if not folder.is_dir():
        return FolderListing([], [])
    root = folder.resolve()
    files: list[str] = []
    skipped: list[tuple[str, str]] = []
    for path in folder.rglob("*"):  # rglob does not descend into linked folders
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        name = relative.as_posix()
        if path.is_symlink():
            try:
                target = _resolve_inside(root, path)
            except DocumentSkipped as skip:
                skipped.append((name, skip.reason))
                continue
            except OSError as exc:
                skipped.append((name, f"unreadable ({exc.strerror or type(exc).__name__})"))
                continue
            if target.is_file():
                files.append(name)
        elif path.is_file():
            files.append(name)
    return FolderListing(sorted(files), sorted(skipped))


def _open_beneath(root: Path, relative: PurePath) -> int:
    """Open ``root/relative`` read-only, one component at a time without following links (blocking).

    ``relative`` is already free of links, so a link met now was swapped in after the check: that raises
    DocumentSkipped(LINK_SWAPPED) instead of reading wherever it leads. Returns the file descriptor.
    """
    if os.open not in os.supports_dir_fd:  # no openat (Windows): open the checked, resolved path directly
        return os.open(root / relative, os.O_RDONLY | _BINARY)
    fd = os.open(root, os.O_RDONLY | _DIRECTORY)
    part = ""
    try:
        for part in relative.parts[:-1]:
            child = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
        part = relative.parts[-1]
        return os.open(part, os.O_RDONLY | _NOFOLLOW | _NONBLOCK, dir_fd=fd)
    except OSError as exc:
        # O_NOFOLLOW meeting a link fails with ELOOP (EMLINK on FreeBSD), or ENOTDIR along with O_DIRECTORY.
        if exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR) and _is_link(part, fd):
            raise DocumentSkipped(LINK_SWAPPED) from exc
        raise
    finally:
        os.close(fd)


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def read_document_bytes(folder: Path, name: str, max_bytes: int) -> bytes:
    """The content of the document ``name`` (relative to ``folder``, POSIX separators); blocking.

    Links are checked again at read time, so a file replaced by a link since the folder was listed is never
    read from outside ``folder``. Raises DocumentSkipped(LINK_* / NOT_REGULAR / over DOC_MAX_BYTES, checked
    before reading); OSError when the file cannot be read (e.g. removed since it was listed).
    """
    root = folder.resolve()
    target = _resolve_inside(root, folder / name)
    if target == root:  # e.g. swapped for a link to "."
        raise DocumentSkipped(NOT_REGULAR)
    with os.fdopen(_open_beneath(root, target.relative_to(root)), "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise DocumentSkipped(NOT_REGULAR)
        if info.st_size > max_bytes:
            # Checked before reading so that a huge file is never loaded into memory.
            raise DocumentSkipped(_over_limit(info.st_size, max_bytes))
        data = handle.read(max_bytes + 1)  # bounded: the file may grow while it is read
    if len(data) > max_bytes:
        raise DocumentSkipped(_over_limit(len(data), max_bytes))
    return data


def read_and_hash(folder: Path, name: str, max_bytes: int) -> tuple[str, int]:
    """``(sha256, size in bytes)`` of the document ``name`` in ``folder`` (blocking: the read and the hash, which
    is CPU work that must leave the loop anyway, run together in one thread). Raises as
    :func:`read_document_bytes`."""
    data = read_document_bytes(folder, name, max_bytes)
    return content_hash(data), len(data)


def document_entry(folder: Path, name: str) -> Path | None:
    """The entry ``folder/name`` when ``name`` is listed by :func:`list_document_files` (as a document or as a
    skipped link), else None (blocking). The entry itself is returned, never a link's target, so that deleting
    it removes a link and leaves the file it points to alone."""
    listing = list_document_files(folder)
    if name in listing.files or any(name == skipped for skipped, _ in listing.skipped):
        return folder / name
    return None


def load_document(folder: Path, source: str, *, max_bytes: int) -> LoadedDocument:
    """Read, check and parse one document (blocking: run it in a thread).

    folder: the scope folder; source: the document's name relative to it (POSIX separators); max_bytes:
    DOC_MAX_BYTES. Raises DocumentSkipped with the reason when the file must be skipped (see
    :func:`read_document_bytes`, :func:`check_document_bytes` and :func:`parse_sections`); OSError when it
    cannot be read.
    """
    data = read_document_bytes(folder, source, max_bytes)
    reason = check_document_bytes(source, data, max_bytes=max_bytes)
    if reason is not None:
        raise DocumentSkipped(reason)
    return LoadedDocument(source=source, sha256=content_hash(data), size_bytes=len(data),
                          sections=parse_sections(source, data))


def parse_sections(name: str, data: bytes) -> list[Section]:
    """Turn checked file bytes into sections according to the suffix of ``name``.

    Markdown/MDX: split at ATX headings (``#`` .. ``######``), front matter and MDX/JSX markup removed.
    Text: one section with an empty heading. PDF: one section per page with text, heading ``"Page N"``.
    Raises DocumentSkipped("empty") when no text remains, and DocumentSkipped("unreadable PDF: ...") or
    ("encrypted PDF") for PDFs pypdf cannot read.
    """
    suffix = suffix_of(name)
    if suffix == ".pdf":
        sections = _pdf_sections(data)
    else:
        text = data.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
        if suffix in MARKDOWN_SUFFIXES:
            sections = split_markdown_sections(clean_markdown(text, mdx=suffix == ".mdx"))
        else:
            sections = [Section("", text.strip())]
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        raise DocumentSkipped("empty")
    return sections


def _pdf_sections(data: bytes) -> list[Section]:
    # Imported here: pypdf is only needed for PDFs and its import costs ~100 ms.
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise DocumentSkipped("encrypted PDF")
        sections = []
        for number, page in enumerate(reader.pages, start=1):
            text = _normalize_pdf_text(page.extract_text() or "")
            if text:
                sections.append(Section(f"Page {number}", text))
    except DocumentSkipped:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        # pypdf surfaces malformed files as a variety of exceptions; all mean "this PDF cannot be read".
        raise DocumentSkipped(f"unreadable PDF: {type(exc).__name__}: {exc}"[:200]) from exc
    if not sections:
        raise DocumentSkipped("unreadable PDF: no extractable text (scanned images?)")
    return sections


def _normalize_pdf_text(text: str) -> str:
    # pypdf yields one line per text line of the page; join hyphenated breaks, keep blank lines as paragraphs.
    text = re.sub(r"-\n(?=[a-z])", "", text.replace("\r", ""))
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# --------------------------------------------------------------------------------------------- markdown


_FENCE_RE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_HEADING_RE = re.compile(r"^ {0,3}(?P<level>#{1,6})[ \t]+(?P<title>.*?)[ \t]*(?:[ \t]#+[ \t]*)?$")
_FRONT_MATTER_RE = re.compile(r"\A(?:---|\+\+\+)[ \t]*\n(?P<body>.*?)\n(?:---|\+\+\+)[ \t]*(?:\n|\Z)", re.DOTALL)
_TITLE_RE = re.compile(r"^title:\s*(?P<title>.+?)\s*$", re.MULTILINE)
_ESM_RE = re.compile(r"^\s*(?:import|export)\s")
# Tags removed from prose: JSX components (capitalized) and the HTML tags docs commonly embed.
_HTML_TAGS = (
    "a|abbr|b|br|center|code|details|div|em|figcaption|figure|hr|i|iframe|img|kbd|p|picture|pre|small|source|span|"
    "strong|sub|summary|sup|table|tbody|td|th|thead|tr|u|video"
)
_TAG_RE = re.compile(rf"</?(?:[A-Z][\w.]*|(?:{_HTML_TAGS})\b)(?:\s[^<>]*?)?/?>|<>|</>")
_TAG_START_RE = re.compile(rf"^\s*<(?:[A-Z][\w.]*|(?:{_HTML_TAGS})\b)")
_TITLE_ATTR_RE = re.compile(r"""\btitle=(?:"([^"]*)"|'([^']*)'|\{["']([^"']*)["']\})""")
_COMMENT_RE = re.compile(r"<!--.*?-->|\{/\*.*?\*/\}", re.DOTALL)
_INLINE_CODE_RE = re.compile(r"(`+)(?:(?!\1).)+?\1")


def _strip_tags_inline(line: str) -> str:
    """Remove JSX/HTML tags from one prose line, leaving inline code spans untouched."""
    out, last = [], 0
    for match in _INLINE_CODE_RE.finditer(line):
        out.append(_TAG_RE.sub("", line[last:match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(_TAG_RE.sub("", line[last:]))
    return "".join(out)


def front_matter_title(text: str) -> str | None:
    """Return the ``title:`` of a YAML front matter block at the start of ``text``, if any."""
    match = _FRONT_MATTER_RE.match(text)
    if not match:
        return None
    title = _TITLE_RE.search(match.group("body"))
    return title.group("title").strip("'\"") if title else None


def clean_markdown(text: str, *, mdx: bool = False) -> str:
    """Strip what is markup rather than content, outside code fences.

    Removes front matter (kept as a leading ``# title`` heading when it has a ``title:`` and the document has
    no level-1 heading), HTML/MDX comments, JSX component and HTML tag lines (a ``title="..."`` attribute is
    kept as a bold line, since tab and card titles carry meaning), tags inside prose, and, for MDX,
    ``import``/``export`` lines. Code fences are left intact, except that fences indented inside JSX blocks
    are dedented to their fence's indentation.
    """
    title = front_matter_title(text)
    text = _FRONT_MATTER_RE.sub("", text, count=1)
    lines = text.split("\n")
    out: list[str] = []
    fence: str | None = None  # the opening fence marker while inside a code block
    fence_indent = ""
    in_tag = False  # inside a multi-line opening tag such as <img\n src=... />
    prose: list[str] = []  # prose lines waiting for comment removal (comments may span lines)

    def flush_prose() -> None:
        if prose:
            out.extend(_COMMENT_RE.sub("", "\n".join(prose)).split("\n"))
            prose.clear()

    for line in lines:
        if fence is not None:
            stripped = line.strip()
            if stripped.startswith(fence[0] * len(fence)) and set(stripped) <= {fence[0]}:
                out.append(_fence_indent_strip(line, fence_indent))
                fence = None
            else:
                out.append(_fence_indent_strip(line, fence_indent))
            continue
        if in_tag:
            if ">" in line:
                in_tag = False
            continue
        match = _FENCE_RE.match(line)
        if match:
            flush_prose()
            fence, fence_indent = match.group("fence"), match.group("indent")
            out.append(line[len(fence_indent):])
            continue
        if mdx and _ESM_RE.match(line):
            continue
        if _TAG_START_RE.match(line):
            rest = _TAG_RE.sub("", line).strip()
            title_attr = _TITLE_ATTR_RE.search(line)
            if title_attr:
                prose.append(f"**{next(g for g in title_attr.groups() if g is not None)}**")
            if ">" not in line:
                in_tag = True
                continue
            if rest:
                prose.append(_strip_tags_inline(line).strip())
            continue
        prose.append(_strip_tags_inline(line) if "<" in line else line)
    flush_prose()
    cleaned = "\n".join(out)
    if title and not any(_heading_level(line) == 1 for line in _prose_lines(cleaned)):
        cleaned = f"# {title}\n\n{cleaned}"
    return cleaned


def _fence_indent_strip(line: str, indent: str) -> str:
    """Remove the fence's own indentation from a line of its code block (MDX nests fences in JSX)."""
    return line[len(indent):] if indent and line.startswith(indent) else line


def _heading_level(line: str) -> int:
    match = _HEADING_RE.match(line)
    return len(match.group("level")) if match else 0


def _prose_lines(text: str) -> Iterable[str]:
    """Yield the lines of ``text`` that are outside code fences."""
    fence: str | None = None
    for line in text.split("\n"):
        match = _FENCE_RE.match(line)
        if fence is None and match:
            fence = match.group("fence")
            continue
        if fence is not None:
            stripped = line.strip()
            if stripped.startswith(fence) and set(stripped) <= {fence[0]}:
                fence = None
            continue
        yield line


def split_markdown_sections(text: str) -> list[Section]:
    """Split Markdown at ATX headings (outside code fences) into sections with heading paths.

    A heading path joins the titles of the enclosing headings with ``" > "``, e.g. ``# Troubleshooting`` then
    ``## GPU errors`` gives ``"Troubleshooting > GPU errors"``. Text before the first heading has the path
    ``""``. Sections with no text (a heading directly followed by a sub-heading) are dropped.
    """
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []
    fence: str | None = None

    def flush() -> None:
        content = "\n".join(body).strip("\n")
        if content.strip():
            sections.append(Section(" > ".join(title for _, title in stack), _dedent_blank(content)))
        body.clear()

    for line in text.split("\n"):
        if fence is None:
            fence_match = _FENCE_RE.match(line)
            if fence_match:
                fence = fence_match.group("fence")
            else:
                heading = _HEADING_RE.match(line)
                if heading:
                    flush()
                    level = len(heading.group("level"))
                    while stack and stack[-1][0] >= level:
                        stack.pop()
                    title = _clean_heading(heading.group("title"))
                    if title:
                        stack.append((level, title))
                    continue
        else:
            stripped = line.strip()
            if stripped.startswith(fence) and set(stripped) <= {fence[0]}:
                fence = None
        body.append(line)
    flush()
    return sections


def _clean_heading(title: str) -> str:
    # "## `OLLAMA_HOST` setting [link](#x)" -> "OLLAMA_HOST setting link": headings are labels, not Markdown.
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)
    title = _TAG_RE.sub("", title)
    return re.sub(r"\s+", " ", title.replace("`", "").replace("**", "")).strip()


def _dedent_blank(text: str) -> str:
    # Collapse runs of blank lines left behind by removed markup.
    return re.sub(r"\n[ \t]*(?:\n[ \t]*){2,}", "\n\n", text).strip()


# --------------------------------------------------------------------------------------------- chunking


@dataclass(slots=True)
class _Unit:
    """A piece that chunks are packed from: a paragraph, sentence, word run or (part of) a code fence."""

    text: str
    joiner: str  # what separates it from the previous unit in the same chunk: "\n\n" or " "
    is_code: bool


def _blocks(text: str) -> list[tuple[str, bool]]:
    """Split section text into (block, is_code) pairs: paragraphs at blank lines, each fence one block."""
    blocks: list[tuple[str, bool]] = []
    current: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        if fence is None:
            match = _FENCE_RE.match(line)
            if match:
                if current:
                    blocks.append(("\n".join(current), False))
                current = [line]
                fence = match.group("fence")
                continue
            if not line.strip():
                if current:
                    blocks.append(("\n".join(current), False))
                current = []
                continue
            current.append(line)
        else:
            current.append(line)
            stripped = line.strip()
            if stripped.startswith(fence) and set(stripped) <= {fence[0]}:
                blocks.append(("\n".join(current), True))
                current, fence = [], None
    if current:
        blocks.append(("\n".join(current), fence is not None))  # an unclosed fence stays code
    return blocks


_SENTENCE_END_RE = re.compile(r"(?<=[.!?:;])\s+|\n+")


def _split_words(text: str, max_chars: int) -> list[str]:
    """Split at whitespace into pieces of at most ``max_chars``; a single longer word is cut hard."""
    pieces: list[str] = []
    current = ""
    for word in text.split():
        while len(word) > max_chars:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:max_chars])
            word = word[max_chars:]
        candidate = f"{current} {word}" if current else word
        if len(candidate) > max_chars:
            pieces.append(current)
            current = word
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces


def _split_code(block: str, max_chars: int) -> list[str]:
    """Split an over-long fenced block by lines; each piece is re-fenced with the original opening line."""
    lines = block.split("\n")
    opening = lines[0]
    closing = lines[-1] if len(lines) > 1 and _FENCE_RE.match(lines[-1]) else opening.strip()[:3]
    inner = lines[1:-1] if len(lines) > 1 else []
    budget = max(max_chars - len(opening) - len(closing) - 2, 20)
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for line in inner:
        parts = [line[i:i + budget] for i in range(0, len(line), budget)] or [""]
        for part in parts:
            if current and size + len(part) + 1 > budget:
                pieces.append("\n".join([opening, *current, closing]))
                current, size = [], 0
            current.append(part)
            size += len(part) + 1
    if current or not pieces:
        pieces.append("\n".join([opening, *current, closing]))
    return pieces


def _units(text: str, max_chars: int) -> list[_Unit]:
    units: list[_Unit] = []
    for block, is_code in _blocks(text):
        if len(block) <= max_chars:
            units.append(_Unit(block, "\n\n", is_code))
        elif is_code:
            units.extend(_Unit(piece, "\n\n", True) for piece in _split_code(block, max_chars))
        else:
            joiner = "\n\n"
            for sentence in (s for s in _SENTENCE_END_RE.split(block) if s.strip()):
                pieces = [sentence] if len(sentence) <= max_chars else _split_words(sentence, max_chars)
                for piece in pieces:
                    units.append(_Unit(piece, joiner, False))
                    joiner = " "
    return units


def _overlap_tail(units: list[_Unit], overlap_chars: int) -> list[_Unit]:
    """The trailing prose of a finished chunk to repeat at the start of the next, at most ``overlap_chars``.

    Whole trailing units are taken while they fit; otherwise the tail of the last unit, cut at a word
    boundary. Code is never used as overlap (a partial fence would be broken Markdown).
    """
    if overlap_chars <= 0:
        return []
    tail: list[_Unit] = []
    size = 0
    for unit in reversed(units):
        if unit.is_code:
            break
        if size + len(unit.text) + len(unit.joiner) > overlap_chars:
            if not tail:
                cut = unit.text[-overlap_chars:]
                space = cut.find(" ")
                cut = cut[space + 1:] if 0 <= space < len(cut) - 1 else cut
                if cut.strip():
                    tail.append(_Unit(cut.strip(), unit.joiner, False))
            break
        tail.append(unit)
        size += len(unit.text) + len(unit.joiner)
    return list(reversed(tail))


def _render(units: list[_Unit]) -> str:
    parts = []
    for i, unit in enumerate(units):
        if i:
            parts.append(unit.joiner)
        parts.append(unit.text)
    return "".join(parts).strip()


def split_text(text: str, *, max_chars: int, overlap_chars: int) -> list[str]:
    """Split one section's text into passages of at most ``max_chars`` characters.

    Splits at paragraph boundaries, then sentences, then words; keeps fenced code blocks whole when they
    fit; repeats up to ``overlap_chars`` of prose between consecutive passages. Returns ``[text]`` when it fits.
    Raises ValueError unless ``0 <= overlap_chars < max_chars``.
    """
    if not 0 <= overlap_chars < max_chars:
        raise ValueError(f"overlap_chars ({overlap_chars}) must be >= 0 and < max_chars ({max_chars})")
    text = text.strip()
    if len(text) <= max_chars:
        return [text] if text else []
    chunks: list[str] = []
    current: list[_Unit] = []
    fresh = False  # whether `current` holds anything besides overlap from the previous chunk
    for unit in _units(text, max_chars):
        candidate = len(_render([*current, unit]))
        if current and candidate > max_chars:
            if fresh:
                chunks.append(_render(current))
            current = _overlap_tail(current, overlap_chars)
            while current and len(_render([*current, unit])) > max_chars:
                current.pop(0)  # drop overlap rather than exceed the cap
            fresh = False
        current.append(unit)
        fresh = True
    if current and fresh:
        chunks.append(_render(current))
    return chunks


def chunk_sections(sections: list[Section], *, source: str, max_chars: int, overlap_chars: int) -> list[Chunk]:
    """Chunk the sections of one document; chunk indices run over the whole document from 0."""
    chunks: list[Chunk] = []
    for section in sections:
        for text in split_text(section.text, max_chars=max_chars, overlap_chars=overlap_chars):
            index = len(chunks)
            chunks.append(Chunk(text, source, section.heading, index, chunk_id(source, index, text)))
    return chunks


def chunk_document(document: LoadedDocument, *, max_chars: int, overlap_chars: int) -> list[Chunk]:
    """Chunk a loaded document (see :func:`chunk_sections`)."""
    return chunk_sections(document.sections, source=document.source, max_chars=max_chars, overlap_chars=overlap_chars)


# --------------------------------------------------------------------------------------------- upload names


_UNSAFE_CHARS_RE = re.compile(r'[<>:"|?*\x00-\x1f\x7f]')


def sanitize_filename(name: str) -> str:
    """Return a safe plain file name for an uploaded document, to be written inside one scope folder.

    Keeps only the last path component (``/`` and ``\\`` both count as separators, so ``../../etc/passwd.md``
    and ``C:\\x\\a.md`` become ``passwd.md`` and ``a.md``), removes control characters (NUL included) and
    characters Windows forbids, collapses whitespace, strips leading dots and spaces (no hidden files, no
    ``..``), and caps the length at MAX_FILENAME_CHARS keeping the extension. Raises InvalidInput when nothing
    usable remains or the extension is not one of .md, .markdown, .mdx, .txt, .pdf.
    """
    name = unicodedata.normalize("NFC", name or "")
    base = re.split(r"[/\\]", name)[-1]
    base = _UNSAFE_CHARS_RE.sub("", base)
    base = re.sub(r"\s+", " ", base).strip().lstrip(". ").rstrip(". ")
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem.strip(" ."):
        shown = base or "(empty)"
        raise InvalidInput(
            f"`{shown[:80]}` is not a usable file name; name it like `guide.md` (.md, .mdx, .txt or .pdf)."
        )
    suffix = f".{ext.lower()}"
    if suffix not in SUPPORTED_SUFFIXES:
        raise InvalidInput(f"Files of type `{suffix[:20]}` cannot be indexed; upload .md, .mdx, .txt or .pdf files.")
    stem = stem[: MAX_FILENAME_CHARS - len(suffix)].rstrip(". ")
    return f"{stem}{suffix}"
