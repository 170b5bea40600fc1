"""Symbolic links in the documents folder: a link that leads out of its scope folder is never read.

Issue 10, finding 1: a link such as ``global/passwd.txt -> /etc/passwd`` used to be indexed, so any member could
read the target's lines with ``/docs search``. These tests use real links on disk, the real index (embedded
ChromaDB) and the real LLM client against the Ollama stand-in.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.doctor import check_documents
from config import load_settings
from services.chat.llm import LLMClient
from services.knowledge.documents import DocumentSkipped, list_document_files, load_document, read_and_hash
from services.knowledge.index import DocumentIndex, ReloadProgress
from tests.fakes.ollama import FakeOllama

OUTSIDE = "link to a file outside the documents folder"
OUTSIDE_FOLDER = "link to a folder outside the documents folder"
BROKEN = "broken link (its target does not exist)"
LOOP = "link loop (it leads back to itself)"
SECRET = "root:x:0:0:SECRET_PASSWORD_LINE"
GUILD = 111111111111111111

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="needs POSIX symlinks")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside the documents folder, standing for /etc/passwd."""
    return write(tmp_path / "outside" / "passwd", f"{SECRET}\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n")


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return tmp_path / "documents"


@pytest.fixture
async def index(tmp_path: Path, docs: Path, ollama: FakeOllama) -> AsyncIterator[DocumentIndex]:
    llm = LLMClient(host=ollama.url, chat_model="llama3.2", embed_model="nomic-embed-text", timeout_s=5.0,
                    num_ctx=2048, keep_alive="5m", embed_batch_size=8)
    made = DocumentIndex(embedder=llm, index_dir=tmp_path / "index", documents_dir=docs, doc_max_bytes=50_000,
                         chunk_max_chars=400, chunk_overlap_chars=60)
    yield made
    await made.close()
    await llm.close()


async def searchable(index: DocumentIndex, guild_id: int | None, query: str) -> str:
    """Everything a member would see from ``/docs search query``: sources and passages."""
    return "\n".join(f"{hit.source}: {hit.text}" for hit in await index.search(guild_id, query, k=10))


# ------------------------------------------------------------------------------------------- listing and reading


def test_listing_skips_links_that_leave_the_folder_and_says_why(docs: Path, secret: Path) -> None:
    folder = docs / "global"
    write(folder / "guide.md", "# Guide\n\nText.\n")
    write(folder / "sub" / "deep.md", "# Deep\n\nText.\n")
    (folder / "passwd.txt").symlink_to(secret)
    (folder / "alias.md").symlink_to("guide.md")  # inside: still a document
    (folder / "gone.md").symlink_to(folder / "missing.md")
    (folder / "loop.md").symlink_to("loop.md")
    (folder / "etc").symlink_to(secret.parent, target_is_directory=True)
    (folder / "sub-again").symlink_to("sub", target_is_directory=True)  # inside: its files are listed once, via sub/
    (folder / "here").symlink_to(".", target_is_directory=True)

    listing = list_document_files(folder)

    assert listing.files == ["alias.md", "guide.md", "sub/deep.md"]
    assert listing.skipped == [
        ("etc", OUTSIDE_FOLDER), ("gone.md", BROKEN), ("loop.md", LOOP), ("passwd.txt", OUTSIDE)
    ]


def test_a_link_to_another_scope_counts_as_outside(docs: Path) -> None:
    write(docs / str(GUILD) / "private.md", "# Private\n\nOnly for one server.\n")
    (docs / "global").mkdir(parents=True)
    (docs / "global" / "leak.md").symlink_to(docs / str(GUILD) / "private.md")
    assert list_document_files(docs / "global").skipped == [("leak.md", OUTSIDE)]


def test_reading_checks_again_so_a_file_swapped_for_a_link_is_not_read(docs: Path, secret: Path) -> None:
    folder = docs / "global"
    write(folder / "notes.txt", "Harmless notes.\n")
    assert list_document_files(folder).files == ["notes.txt"]
    (folder / "notes.txt").unlink()  # replaced by a link after the listing, before the read
    (folder / "notes.txt").symlink_to(secret)

    for read in (lambda: load_document(folder, "notes.txt", max_bytes=10_000),
                 lambda: read_and_hash(folder, "notes.txt", 10_000)):
        with pytest.raises(DocumentSkipped) as caught:
            read()
        assert caught.value.reason == OUTSIDE


def test_reading_a_link_whose_target_vanished_says_so(docs: Path) -> None:
    folder = docs / "global"
    target = write(folder / "a.md", "# A\n\nText.\n")
    (folder / "b.md").symlink_to("a.md")
    target.unlink()
    with pytest.raises(DocumentSkipped) as caught:
        load_document(folder, "b.md", max_bytes=10_000)
    assert caught.value.reason == BROKEN


@pytest.mark.parametrize("checked", ["sub/passwd", "notes.txt"])
def test_a_path_swapped_for_a_link_after_the_check_is_not_followed(docs: Path, secret: Path, checked: str) -> None:
    # The instant between the check and the open: the checked path (free of links) is opened one folder at a
    # time without following links, so a folder on the way, or the file itself, that became a link is refused.
    from services.knowledge.documents import _open_beneath

    root = docs / "global"
    root.mkdir(parents=True)
    (root / "sub").symlink_to(secret.parent, target_is_directory=True)
    (root / "notes.txt").symlink_to(secret)
    with pytest.raises(DocumentSkipped) as caught:
        _open_beneath(root.resolve(), Path(checked))
    assert caught.value.reason == "replaced by a link while it was being read; reload again"


@pytest.mark.timeout(30)  # before the fix, reading the FIFO waited forever for a writer
def test_a_file_swapped_for_a_fifo_is_skipped_without_blocking(docs: Path) -> None:
    folder = docs / "global"
    write(folder / "notes.md", "# Notes\n\nText.\n")
    assert list_document_files(folder).files == ["notes.md"]
    (folder / "notes.md").unlink()
    os.mkfifo(folder / "notes.md")
    with pytest.raises(DocumentSkipped) as caught:
        load_document(folder, "notes.md", max_bytes=10_000)
    assert caught.value.reason == "not a regular file"


# ------------------------------------------------------------------------------------------- the index


async def test_reload_skips_a_link_to_a_file_outside_and_search_cannot_reach_it(
    index: DocumentIndex, docs: Path, secret: Path
) -> None:
    folder = docs / "global"
    write(folder / "guide.md", "# Guide\n\nThe bot answers from these documents.\n")
    (folder / "passwd.txt").symlink_to(secret)
    (folder / "alias.md").symlink_to("guide.md")
    (folder / "gone.md").symlink_to("nowhere.md")

    report = await index.reload("global")

    assert sorted(report.added) == ["alias.md", "guide.md"]
    assert report.skipped == [("gone.md", BROKEN), ("passwd.txt", OUTSIDE)]
    assert [doc.name for doc in await index.list_documents(None)] == ["alias.md", "guide.md"]
    found = await searchable(index, None, "SECRET_PASSWORD_LINE root passwd daemon")
    assert "SECRET_PASSWORD_LINE" not in found and "passwd.txt" not in found
    # Nothing changed: the next reload embeds nothing and still names the links.
    again = await index.reload("global")
    assert again.added == [] and again.unchanged == ["alias.md", "guide.md"]
    assert again.skipped == report.skipped


async def test_a_file_later_replaced_by_a_link_loses_its_chunks(index: DocumentIndex, docs: Path, secret: Path) -> None:
    folder = docs / "global"
    write(folder / "guide.md", "# Guide\n\nThe bot answers from these documents.\n")
    notes = write(folder / "notes.txt", "Meeting notes about the NOTES_TOPIC_MARKER.\n")
    await index.reload("global")
    assert "notes.txt" in await searchable(index, None, "NOTES_TOPIC_MARKER")

    notes.unlink()
    notes.symlink_to(secret)
    report = await index.reload("global")

    assert report.skipped == [("notes.txt", OUTSIDE)] and report.removed == []
    assert [doc.name for doc in await index.list_documents(None)] == ["guide.md"]
    found = await searchable(index, None, "NOTES_TOPIC_MARKER SECRET_PASSWORD_LINE")
    assert "notes.txt" not in found and "SECRET_PASSWORD_LINE" not in found


async def test_a_file_swapped_for_a_link_during_the_reload_is_not_read(
    index: DocumentIndex, docs: Path, secret: Path
) -> None:
    folder = docs / "global"
    write(folder / "a.md", "# A\n\nFirst document.\n")
    write(folder / "b.md", "# B\n\nSecond document.\n")

    async def swap_before_reading(state: ReloadProgress) -> None:
        # Called after the folder was listed, just before b.md is read: the race of the finding.
        if state.current == "b.md":
            (folder / "b.md").unlink()
            (folder / "b.md").symlink_to(secret)

    report = await index.reload("global", progress=swap_before_reading)

    assert report.added == ["a.md"] and report.skipped == [("b.md", OUTSIDE)]
    assert "SECRET_PASSWORD_LINE" not in await searchable(index, None, "SECRET_PASSWORD_LINE root")


async def test_removing_a_link_deletes_the_link_not_its_target(index: DocumentIndex, docs: Path, secret: Path) -> None:
    folder = docs / str(GUILD)
    target = write(folder / "guide.md", "# Guide\n\nText of the guide.\n")
    (folder / "alias.md").symlink_to("guide.md")
    (folder / "passwd.txt").symlink_to(secret)
    await index.reload(str(GUILD))

    report = await index.remove_document(GUILD, "alias.md")
    assert report.removed == ["alias.md"]
    assert not (folder / "alias.md").is_symlink() and read(target).startswith("# Guide")

    # A link the reload skipped can be removed by the name the report gave; the file it pointed to stays.
    await index.remove_document(GUILD, "passwd.txt")
    assert not (folder / "passwd.txt").is_symlink() and read(secret).startswith(SECRET)


# ------------------------------------------------------------------------------------------- doctor


def test_doctor_names_the_links_it_will_not_follow(tmp_path: Path, docs: Path, secret: Path) -> None:
    write(docs / "global" / "guide.md", "# Guide\n\nText.\n")
    (docs / "global" / "passwd.txt").symlink_to(secret)
    (docs / str(GUILD)).mkdir(parents=True)
    (docs / str(GUILD) / "gone.md").symlink_to("nowhere.md")
    settings = load_settings(DISCORD_TOKEN=None, DATA_DIR=tmp_path / "data", DOCUMENTS_DIR=docs)

    check = check_documents(settings)

    assert not check.ok
    assert "1 documents in" in check.detail  # the link is not counted as a document
    assert f"global/passwd.txt: {OUTSIDE}" in check.detail
    assert f"{GUILD}/gone.md: {BROKEN}" in check.detail
