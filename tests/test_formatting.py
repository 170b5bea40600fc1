"""Splitting long answers into Discord messages."""

import re

from bot.formatting import DISCORD_MESSAGE_LIMIT, split_message


def _words(text: str) -> list[str]:
    return re.sub(r"```\w*", " ", text).split()


def test_short_text_is_one_message():
    assert split_message("hello") == ["hello"]
    assert split_message("") == []


def test_long_prose_splits_on_paragraphs_and_loses_nothing():
    paragraphs = [f"Paragraph {i}. " + "word " * 80 for i in range(40)]
    text = "\n\n".join(paragraphs)
    parts = split_message(text)
    assert len(parts) > 1
    assert all(len(part) <= DISCORD_MESSAGE_LIMIT for part in parts)
    assert _words("".join(parts)) == _words(text)
    # every part but the last ends at a paragraph boundary, never mid-word
    for part in parts[:-1]:
        assert part.endswith("\n\n") or part.rstrip().endswith("word")


def test_one_huge_sentence_splits_on_spaces():
    text = " ".join(f"w{i}" for i in range(2000))
    parts = split_message(text)
    assert all(len(part) <= DISCORD_MESSAGE_LIMIT for part in parts)
    assert _words(" ".join(parts)) == _words(text)


def test_code_fence_is_closed_and_reopened_with_its_language():
    code = "\n".join(f"print({i})  # line {i}" for i in range(300))
    text = f"Here is the code:\n\n```python\n{code}\n```\nDone."
    parts = split_message(text)
    assert len(parts) > 1
    for part in parts:
        assert len(part) <= DISCORD_MESSAGE_LIMIT
        assert part.count("```") % 2 == 0, part[-80:]
    assert parts[1].startswith("```python\n")
    assert _words("".join(parts)) == _words(text)


def test_text_without_any_break_is_cut_hard_but_complete():
    text = "x" * 4500
    parts = split_message(text)
    assert [len(p) for p in parts] == [1996, 1996, 508]
    assert "".join(parts) == text
