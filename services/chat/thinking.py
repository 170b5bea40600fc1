"""Reasoning models: separating a model's thinking from its answer in a streamed text.

Models that think (qwen3, deepseek-r1, ...) send their reasoning in the ``thinking`` field of Ollama's chat messages
when asked with ``think: true`` (see ``services.chat.llm``). Older templates, and a thinking model not asked either way,
put it in the content itself, between ``<think>`` and ``</think>``. :class:`ThinkTagSplitter` takes those blocks out
of a content stream as it arrives, so that no part of the thinking is ever shown or spoken.
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


@dataclass(frozen=True)
class Split:
    """One piece of a streamed text, divided: ``answer`` to show, ``thinking`` to keep out of it (either may be "")."""

    answer: str = ""
    thinking: str = ""


def _partial_tag_at_end(text: str, tag: str) -> int:
    """The length of the longest end of ``text`` that is a start of ``tag`` (0 when none): held back, since the next
    chunk may complete the tag."""
    for length in range(min(len(text), len(tag) - 1), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0


class ThinkTagSplitter:
    """Splits a streamed content into the answer and the ``<think>...</think>`` blocks, chunk by chunk.

    ``feed(chunk)`` returns what of the text so far is known to be answer or thinking; a tag split across chunks is
    recognised (the few characters that could start one are held back until the next chunk), text before and after
    a block is answer, and ``finish()`` returns what was held back at the end of the stream: thinking when a block
    was never closed, answer otherwise. Whitespace at the start of the answer (the blank line that follows a block)
    is dropped. Tags are matched exactly as the templates write them (lower case).
    """

    def __init__(self) -> None:
        self._pending = ""
        self._in_block = False
        self._answer_started = False

    def feed(self, chunk: str) -> Split:
        """The answer and thinking text that ``chunk`` (any str) completes."""
        text = self._pending + chunk
        self._pending = ""
        answer: list[str] = []
        thinking: list[str] = []
        while text:
            tag = CLOSE_TAG if self._in_block else OPEN_TAG
            index = text.find(tag)
            if index >= 0:
                (thinking if self._in_block else answer).append(text[:index])
                text = text[index + len(tag):]
                self._in_block = not self._in_block
                continue
            held = _partial_tag_at_end(text, tag)
            (thinking if self._in_block else answer).append(text[: len(text) - held])
            self._pending = text[len(text) - held:]
            break
        return Split(self._answer("".join(answer)), "".join(thinking))

    def finish(self) -> Split:
        """What was held back once the stream has ended: an unterminated block's end is thinking."""
        pending, self._pending = self._pending, ""
        return Split(thinking=pending) if self._in_block else Split(self._answer(pending))

    def _answer(self, text: str) -> str:
        if not self._answer_started:
            text = text.lstrip()
            self._answer_started = bool(text)
        return text
