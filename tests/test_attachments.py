"""Attachments as context (services/chat/attachments.py via build_context) and thread names (cogs/chat.py)."""

from __future__ import annotations

import pytest

from cogs.chat import thread_name
from services.chat.attachments import AttachmentRefused, TextAttachment, check_attachment, decode_text
from services.chat.conversations import HistoryMessage, build_context


def test_a_long_file_is_cut_to_half_the_budget_with_a_note_and_leaves_the_history_as_it_was():
    history = [HistoryMessage("user", "a" * 400), HistoryMessage("assistant", "b" * 400)]  # 100 tokens each
    big = TextAttachment("log.txt", "x" * 10_000)
    messages = build_context("sys", history, "why?", 300, files=[big])
    question = messages[-1]["content"]
    assert question.startswith("why?\n\nAttached file `log.txt`:\n```\n" + "x" * 600 + "\n```")
    assert "[… truncated: the first 600 of 10,000 characters are shown]" in question
    # The file does not push history out: the prompt's beginning stays what the model's cache holds.
    assert [m["content"] for m in messages[1:-1]] == ["a" * 400, "b" * 400]


def test_a_short_file_is_whole_and_images_go_in_the_images_field():
    messages = build_context("sys", [], "see", 3000, files=[TextAttachment("a.py", "print(1)")], images=[b"png"])
    assert messages[-1] == {"role": "user", "content": "see\n\nAttached file `a.py`:\n```\nprint(1)\n```",
                            "images": [b"png"]}


def test_refusals_name_the_file():
    with pytest.raises(AttachmentRefused, match="`x.bin`"):
        check_attachment("x.bin", "application/octet-stream", 10, 100)
    with pytest.raises(AttachmentRefused, match="not UTF-8"):
        decode_text("latin.txt", "café".encode("latin-1"))
    assert check_attachment("photo.JPG", None, 10, 100) == "image"


def test_thread_names_are_one_line_and_cut_at_a_word_within_100_characters():
    assert thread_name("how do\n  I brew?") == "how do I brew?"
    long = "why " * 40
    name = thread_name(long)
    assert len(name) <= 100 and name.endswith("why…")
