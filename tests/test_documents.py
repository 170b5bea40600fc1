"""Tests of services/knowledge/documents.py: cleaning, heading-aware chunking, PDF loading, skip reasons, file names."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.errors import InvalidInput
from services.knowledge.documents import (
    DocumentSkipped,
    Section,
    check_document_bytes,
    chunk_document,
    chunk_sections,
    clean_markdown,
    content_hash,
    load_document,
    parse_sections,
    sanitize_filename,
    split_markdown_sections,
    split_text,
)


def make_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF: one page per item, each line of text drawn with Helvetica (correct xref offsets)."""
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    kids = []
    for number, lines in enumerate(pages):
        page_id, content_id = 4 + 2 * number, 5 + 2 * number
        kids.append(f"{page_id} 0 R")
        ops = ["BT /F1 12 Tf 14 TL 72 720 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({escaped}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects[page_id] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {content_id} 0 R >>"
        ).encode()
        objects[content_id] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
    objects[2] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>".encode()
    out = bytearray(b"%PDF-1.4\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n" % number + objects[number] + b"\nendobj\n"
    xref = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    out += b"".join(b"%010d 00000 n \n" % offsets[i] for i in range(1, size))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)


def fences_balanced(text: str) -> bool:
    return sum(1 for line in text.split("\n") if line.strip().startswith("```")) % 2 == 0


# ------------------------------------------------------------------------------------------- headings


GUIDE = """# Troubleshooting

Start here when something fails.

## GPU errors

CUDA out of memory means the model does not fit.

```bash
# not a heading: a shell comment
nvidia-smi
```

### Driver versions

Use driver 535 or later.

## Network

Set `OLLAMA_HOST` to listen on all interfaces.
"""


def test_sections_follow_headings_and_keep_paths() -> None:
    sections = split_markdown_sections(GUIDE)
    assert [s.heading for s in sections] == [
        "Troubleshooting",
        "Troubleshooting > GPU errors",
        "Troubleshooting > GPU errors > Driver versions",
        "Troubleshooting > Network",
    ]
    gpu = sections[1].text
    assert "# not a heading: a shell comment" in gpu  # a '#' line inside a fence is code, not a heading
    assert gpu.count("```") == 2


def test_chunks_carry_source_heading_and_stable_ids() -> None:
    sections = split_markdown_sections(GUIDE)
    chunks = chunk_sections(sections, source="guides/trouble.md", max_chars=500, overlap_chars=50)
    assert [c.heading for c in chunks] == [s.heading for s in sections]
    assert all(c.source == "guides/trouble.md" for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    again = chunk_sections(sections, source="guides/trouble.md", max_chars=500, overlap_chars=50)
    assert [c.chunk_id for c in again] == [c.chunk_id for c in chunks]
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    edited = split_markdown_sections(GUIDE.replace("535", "550"))
    changed = chunk_sections(edited, source="guides/trouble.md", max_chars=500, overlap_chars=50)
    differing = [a.heading for a, b in zip(chunks, changed, strict=True) if a.chunk_id != b.chunk_id]
    assert differing == ["Troubleshooting > GPU errors > Driver versions"]


def test_mdx_front_matter_imports_and_jsx_are_stripped() -> None:
    mdx = """---
title: Streaming
description: how
---

import { Tabs } from "@components"
export const meta = {}

Streaming renders text as it is produced.

<Note> Accumulate the partial fields. </Note>

<Tabs>
  <Tab title="Python">

    ```python
    import ollama
    export_me = 1
    ```
  </Tab>
</Tabs>

<img
  src="x.png"
  alt="diagram"
/>

## Details {/* hidden */}

Text with `<model>` in code and <br/> a tag.
"""
    text = clean_markdown(mdx, mdx=True)
    assert "title:" not in text and "@components" not in text and "export const" not in text
    assert "<Tabs>" not in text and "<Tab" not in text and "<img" not in text and "src=" not in text
    assert "Accumulate the partial fields." in text and "<Note>" not in text
    assert "**Python**" in text  # a tab's title is content
    assert "```python\nimport ollama\nexport_me = 1\n```" in text  # code kept (and dedented) inside fences
    assert "`<model>`" in text and "<br/>" not in text and "hidden" not in text
    sections = split_markdown_sections(text)
    assert [s.heading for s in sections] == ["Streaming", "Streaming > Details"]


def test_markdown_keeps_import_lines_and_h1_wins_over_title() -> None:
    md = "---\ntitle: Ignored\n---\n# Real title\n\nimport this is prose in plain Markdown.\n"
    sections = parse_sections("a.md", md.encode())
    assert sections == [Section("Real title", "import this is prose in plain Markdown.")]


# ------------------------------------------------------------------------------------------- size and overlap


def test_long_section_is_capped_with_overlap_on_sentence_boundaries() -> None:
    sentences = [f"Sentence number {i} talks about setting {i} of the server." for i in range(60)]
    text = " ".join(sentences[:30]) + "\n\n" + " ".join(sentences[30:])
    chunks = split_text(text, max_chars=300, overlap_chars=80)
    assert len(chunks) > 5
    assert all(len(c) <= 300 for c in chunks)
    for sentence in sentences:  # nothing lost
        assert any(sentence in c for c in chunks)
    for previous, current in zip(chunks, chunks[1:], strict=False):
        first = current.split(". ")[0]
        assert first in previous, "each chunk starts with text repeated from the end of the previous one"
        assert current.startswith("Sentence number")  # cut at a sentence boundary, not mid-word


def test_overlap_zero_means_no_repetition() -> None:
    text = " ".join(f"Word{i} sentence here." for i in range(200))
    chunks = split_text(text, max_chars=250, overlap_chars=0)
    assert "".join(c.replace(" ", "") for c in chunks) == text.replace(" ", "")


def test_code_fence_kept_whole_when_it_fits() -> None:
    code = "```python\n" + "\n".join(f"value_{i} = {i}  # line" for i in range(12)) + "\n```"
    assert 250 < len(code) < 400
    text = "\n\n".join(["Intro paragraph. " * 8, code, "Between. " * 20, "Outro paragraph. " * 10])
    chunks = split_text(text, max_chars=400, overlap_chars=100)
    assert all(len(c) <= 400 for c in chunks)
    assert sum(code in c for c in chunks) == 1
    assert all(fences_balanced(c) for c in chunks)


def test_oversized_code_fence_is_split_into_valid_fences() -> None:
    code = "```json\n" + "\n".join(f'  "key_{i}": "value {i}",' for i in range(80)) + "\n```"
    chunks = split_text("Config example:\n\n" + code, max_chars=300, overlap_chars=60)
    assert len(chunks) > 3
    assert all(len(c) <= 300 for c in chunks)
    assert all(fences_balanced(c) for c in chunks)
    assert all(c.startswith("```json") for c in chunks[1:])
    joined = "\n".join(chunks)
    assert all(f'"key_{i}"' in joined for i in range(80))


def test_huge_word_is_cut_hard() -> None:
    chunks = split_text("x" * 1000, max_chars=200, overlap_chars=20)
    assert all(len(c) <= 200 for c in chunks) and "".join(chunks).count("x") >= 1000


def test_split_text_rejects_bad_overlap() -> None:
    with pytest.raises(ValueError):
        split_text("text", max_chars=100, overlap_chars=100)


# ------------------------------------------------------------------------------------------- loading


def test_txt_with_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"\xef\xbb\xbfFirst line.\r\n\r\nSecond paragraph.\r\n")
    document = load_document(tmp_path, "notes.txt", max_bytes=1000)
    assert document.sha256 == content_hash(path.read_bytes())
    assert document.size_bytes == path.stat().st_size
    assert document.sections == [Section("", "First line.\n\nSecond paragraph.")]


def test_pdf_pages_become_sections(tmp_path: Path) -> None:
    path = tmp_path / "manual.pdf"
    pages = [["Installing the bot.", "Run the setup script."], ["GPU errors: check CUDA_VISIBLE_DEVICES."]]
    path.write_bytes(make_pdf(pages))
    document = load_document(tmp_path, "manual.pdf", max_bytes=100_000)
    assert [s.heading for s in document.sections] == ["Page 1", "Page 2"]
    assert "Run the setup script." in document.sections[0].text
    assert "CUDA_VISIBLE_DEVICES" in document.sections[1].text
    chunks = chunk_document(document, max_chars=300, overlap_chars=30)
    assert [c.heading for c in chunks] == ["Page 1", "Page 2"]


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("image.png", b"\x89PNG....", "unsupported type .png"),
        ("Makefile", b"all:", "unsupported type (no extension)"),
        ("big.md", b"a" * 101, "over DOC_MAX_BYTES (101 bytes > 100)"),
        ("empty.md", b"", "empty"),
        ("blank.txt", b" \n\t\n", "empty"),
        ("nul.md", b"text\x00more", "binary"),
        ("latin1.txt", "café".encode("latin-1"), "not decodable as UTF-8"),
        ("fake.pdf", b"hello, not a pdf", "not a PDF file"),
        ("ok.md", b"# fine", None),
    ],
)
def test_check_document_bytes_reasons(name: str, data: bytes, reason: str | None) -> None:
    assert check_document_bytes(name, data, max_bytes=100) == reason


def test_load_document_skip_reasons(tmp_path: Path) -> None:
    def reason(name: str, data: bytes, max_bytes: int = 1000) -> str:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DocumentSkipped) as caught:
            load_document(tmp_path, name, max_bytes=max_bytes)
        return caught.value.reason

    assert reason("x.xyz", b"data") == "unsupported type .xyz"
    assert reason("huge.md", b"a" * 2000) == "over DOC_MAX_BYTES (2000 bytes > 1000)"
    assert reason("empty.md", b"") == "empty"
    assert reason("only-front-matter.mdx", b"---\ndescription: x\n---\n\n") == "empty"
    assert reason("bin.txt", b"\x00\x01\x02abc") == "binary"
    assert reason("bad.md", b"\xff\xfe\xfa") == "not decodable as UTF-8"
    assert reason("broken.pdf", b"%PDF-1.4\n garbage without objects").startswith("unreadable PDF")
    assert reason("blank.pdf", make_pdf([[]])).startswith("unreadable PDF: no extractable text")


def test_parse_sections_empty_markdown_raises() -> None:
    with pytest.raises(DocumentSkipped, match="empty"):
        parse_sections("a.md", b"# Only a heading\n")


# ------------------------------------------------------------------------------------------- file names


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("guide.md", "guide.md"),
        ("../../etc/passwd.md", "passwd.md"),
        ("/etc/passwd.md", "passwd.md"),
        ("..\\..\\windows\\system.txt", "system.txt"),
        ("C:\\Users\\me\\notes.TXT", "notes.txt"),
        ("evil\x00.md", "evil.md"),
        ("bad\x1b[31mname.md", "bad[31mname.md"),
        ("...hidden.md", "hidden.md"),
        (".env.md", "env.md"),
        ("  spaced   out  name.pdf ", "spaced out name.pdf"),
        ('what?:*"<>|.mdx', "what.mdx"),
    ],
)
def test_sanitize_filename(raw: str, safe: str) -> None:
    assert sanitize_filename(raw) == safe


def test_sanitize_filename_caps_length_and_keeps_extension() -> None:
    name = sanitize_filename("a" * 500 + ".md")
    assert name.endswith(".md") and len(name) <= 120


@pytest.mark.parametrize("raw", ["", "..", "../", "/", ".md", "...", "\x00", "noext", "folder/", "script.py", "a.exe"])
def test_sanitize_filename_rejects(raw: str) -> None:
    with pytest.raises(InvalidInput):
        sanitize_filename(raw)
