"""Text prepared for speech and split into sentences: services/speech/speech_text.py."""

from __future__ import annotations

import pytest

from services.speech.speech_text import CODE_OMITTED, prepare_for_speech, split_sentences


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("Some **bold**, *italic*, ***both***, __underlined__ and _leaning_ words.",
         "Some bold, italic, both, underlined and leaning words."),
        ("~~Old~~ new and a ||spoiler||.", "Old new and a spoiler."),
        ("# Setup\nRun it.", "Setup. Run it."),
        ("-# small print", "small print."),
        ("> a quote\n>>> a long quote", "a quote a long quote."),
        ("Steps:\n- install\n* configure\n1. start\n2) stop", "Steps: install. configure. start. stop."),
        ("Call `get_user()` then ``a `tick` b``.", "Call get_user() then a `tick` b."),
        ("snake_case_name, 2 * 3 * 4 and file_name.py", "snake_case_name, 2 * 3 * 4 and file_name.py."),
        (r"\*literal stars\*", "*literal stars*."),
        ("Above\n\n---\n\nBelow", "Above. Below."),
        ("| Name | Size |\n|------|-----:|\n| a | 1 |", "Name, Size. a, 1."),
        ("a line that wraps\nonto the next one", "a line that wraps onto the next one."),
        ("  lots \t of\n\n\n   space  ", "lots of space."),
        ("", ""),
        ("**  **", ""),
    ],
)  # fmt: skip
def test_markdown_is_not_read_symbol_by_symbol(text: str, spoken: str) -> None:
    assert prepare_for_speech(text) == spoken


def test_each_code_block_is_announced_once() -> None:
    text = "Try this:\n```python\nfor i in range(3):\n    print(i)\n```\nor this:\n```\nls -la\n```\nDone."
    spoken = prepare_for_speech(text)
    assert spoken == f"Try this: {CODE_OMITTED}. or this: {CODE_OMITTED}. Done."
    assert "print" not in spoken and "```" not in spoken


def test_an_unclosed_code_block_runs_to_the_end() -> None:
    assert prepare_for_speech("Here:\n```py\nx = 1\nprint(x)") == f"Here: {CODE_OMITTED}."


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("Read [the guide](https://docs.example.com/guide_v2).", "Read the guide."),
        ("![a diagram](https://img.example.com/x.png)", "a diagram."),
        ("See https://www.example.com/path?q=1&r=2.", "See a link to example.com."),
        ("Docs: <https://docs.python.org/3/> (official)", "Docs: a link to docs.python.org (official)."),
        ("Go to www.example.org now", "Go to a link to example.org now."),
    ],
)
def test_links_read_their_label_or_host(text: str, spoken: str) -> None:
    assert prepare_for_speech(text) == spoken


def test_mentions_read_names() -> None:
    text = "Thanks <@123> and <@!456>, ask <@789> in <#42> or ping <@&7>."
    spoken = prepare_for_speech(text, mentions={123: "Alice", 456: "bob_the_builder"})
    assert spoken == "Thanks Alice and bob_the_builder, ask someone in a channel or ping a role."


def test_command_mentions_and_timestamps() -> None:
    assert prepare_for_speech("Use </docs ask:99>.") == "Use the docs ask command."
    assert prepare_for_speech("Starts <t:1700000000:R>") == "Starts November 14, 2023 at 22:13 UTC."


def test_emoji_read_their_names() -> None:
    spoken = prepare_for_speech("Great job <:party_parrot:123> <a:blob_dance:456> 👍🏽 🎉")
    assert spoken == "Great job party parrot blob dance thumbs up party popper."
    assert prepare_for_speech("I ❤️ it") == "I red heart it."


def test_prepared_text_prepares_to_itself() -> None:
    once = prepare_for_speech("# Hi\n**Bold** move, <@1>! See https://example.com 🎉\n```\ncode\n```")
    assert prepare_for_speech(once) == once


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        ("Dr. Smith paid $3.50 at 5 p.m. today. He left.", ["Dr. Smith paid $3.50 at 5 p.m. today.", "He left."]),
        ("Read e.g. the FAQ, i.e. the page. Then ask.", ["Read e.g. the FAQ, i.e. the page.", "Then ask."]),
        ("J. R. R. Tolkien wrote it. Really.", ["J. R. R. Tolkien wrote it.", "Really."]),
        ("Version 3.11.2 is out. Visit python.org. Now.", ["Version 3.11.2 is out.", "Visit python.org.", "Now."]),
        ('He said "stop." Then went.', ['He said "stop."', "Then went."]),
        ("Wait... what? Yes... It works?! Good.", ["Wait... what?", "Yes...", "It works?!", "Good."]),
        ("First paragraph\n\nSecond paragraph", ["First paragraph", "Second paragraph"]),
        ("   ", []),
    ],
)  # fmt: skip
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_long_sentences_are_cut_at_clauses_then_spaces() -> None:
    clauses = "the first part of it goes on, " * 12
    pieces = split_sentences(clauses, max_chars=100)
    assert all(len(piece) <= 100 for piece in pieces)
    assert all(piece.endswith(",") for piece in pieces[:-1])
    assert " ".join(pieces) == clauses.strip()

    words = "word " * 200
    pieces = split_sentences(words, max_chars=60)
    assert all(len(piece) <= 60 and not piece.startswith(" ") for piece in pieces)
    assert " ".join(pieces) == words.strip()

    unbroken = "x" * 130
    assert split_sentences(unbroken, max_chars=50) == ["x" * 50, "x" * 50, "x" * 30]


def test_split_sentences_refuses_a_tiny_limit() -> None:
    with pytest.raises(ValueError):
        split_sentences("Hi.", max_chars=5)
