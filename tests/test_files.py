"""Atomic file writes (services/files.py): a failed write never costs the file its previous content."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from services.files import write_bytes_atomic, write_json_atomic


def test_new_content_is_complete_and_no_temp_file_is_left(tmp_path: Path) -> None:
    path = tmp_path / "state" / "record.json"  # the folder does not exist yet
    write_json_atomic(path, {"old": True})
    record = {"guild": "café", "values": list(range(10_000))}
    write_json_atomic(path, record)
    assert json.loads(path.read_text(encoding="utf-8")) == record
    assert os.listdir(path.parent) == ["record.json"]


def test_old_content_survives_an_object_json_cannot_serialize(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    write_json_atomic(path, {"kept": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_json_atomic(path, {"kept": 2, "bad": object()})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["record.json"]


def test_old_content_survives_a_write_that_fails_midway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "upload.md"
    write_bytes_atomic(path, b"# Old\n")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_bytes_atomic(path, b"# New\n" * 1000)
    assert path.read_bytes() == b"# Old\n"
    assert os.listdir(tmp_path) == ["upload.md"]


def test_a_long_file_name_still_gets_a_usable_temp_file(tmp_path: Path) -> None:
    path = tmp_path / ("é" * 120 + ".md")  # 243 bytes in UTF-8: the temp name must not exceed the limit
    write_bytes_atomic(path, b"text")
    assert path.read_bytes() == b"text"
    assert os.listdir(tmp_path) == [path.name]
