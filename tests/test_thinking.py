"""services.chat.thinking.ThinkTagSplitter: <think> blocks taken out of a streamed answer, however it is chunked."""

from __future__ import annotations

import pytest

from services.chat.thinking import ThinkTagSplitter


def run(chunks: list[str]) -> tuple[str, str]:
    """(answer, thinking) after feeding ``chunks`` and finishing; asserts no thinking ever leaks into the answer."""
    splitter = ThinkTagSplitter()
    answer, thinking = [], []
    for piece in [*map(splitter.feed, chunks), splitter.finish()]:
        answer.append(piece.answer)
        thinking.append(piece.thinking)
    return "".join(answer), "".join(thinking)


def every_split(text: str) -> list[list[str]]:
    """``text`` cut into two chunks at every position, and into one-character chunks."""
    return [[text[:i], text[i:]] for i in range(len(text) + 1)] + [list(text)]


@pytest.mark.parametrize("chunks", every_split("<think>Is 2+2 four? Yes.</think>\n\nIt is four."))
def test_a_leading_block_is_thinking_wherever_the_stream_is_cut(chunks: list[str]) -> None:
    assert run(chunks) == ("It is four.", "Is 2+2 four? Yes.")


@pytest.mark.parametrize("chunks", every_split("Well, <think>hmm</think>four<think>sure?</think>."))
def test_text_before_between_and_after_blocks_is_answer(chunks: list[str]) -> None:
    assert run(chunks) == ("Well, four.", "hmmsure?")


@pytest.mark.parametrize("chunks", every_split("<think>still going when the stream end"))
def test_an_unterminated_block_is_all_thinking(chunks: list[str]) -> None:
    assert run(chunks) == ("", "still going when the stream end")


@pytest.mark.parametrize("chunks", every_split("a < b and <thin ice> </think is answer <"))
def test_text_that_only_looks_like_a_tag_is_answer(chunks: list[str]) -> None:
    assert run(chunks) == ("a < b and <thin ice> </think is answer <", "")


def test_an_answer_without_blocks_streams_through_at_once() -> None:
    splitter = ThinkTagSplitter()
    assert splitter.feed("Hello ").answer == "Hello "
    assert splitter.feed("there").answer == "there"
    assert splitter.feed(" <thi").answer == " "  # held back: it may become a tag
    assert splitter.feed("s").answer == "<this"
