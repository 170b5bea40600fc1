"""Grounding an answer in retrieved passages: the prompt, and the list of sources shown to members.

The sources are listed by the bot from what was retrieved, not left to the model, so a cited file is
always a file that was really used. ``ground`` is the one way to prepare a grounded answer (``/ask``, ``/docs ask``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

GROUNDING_INSTRUCTIONS = (
    "Answer the question using the numbered excerpts from the server's documents below when they are "
    "relevant, and say which excerpts you used as [1], [2]... If they do not contain the answer, say so "
    "briefly and answer from general knowledge."
)


class Passage(Protocol):
    text: str
    source: str
    heading: str
    score: float


class PassageSearch(Protocol):
    """The document index's search (``services.knowledge.index.DocumentIndex.search``)."""

    async def search(self, guild_id: int | None, query: str, k: int = 5) -> Sequence[Passage]: ...


@dataclass(frozen=True)
class GroundedPrompt:
    """What to send the LLM for a grounded answer and what to append to it.

    passages: the excerpts used, best first (empty when none scored high enough); messages: the chat messages;
    sources: the Markdown sources block to show after the answer ("" when no passage was used).
    """

    passages: list[Passage]
    messages: list[dict[str, str]]
    sources: str


async def ground(index: PassageSearch, guild_id: int | None, question: str, *, system_prompt: str, top_k: int,
                 min_score: float) -> GroundedPrompt:
    """Search the guild's documents for ``question`` and build the grounded prompt from the best passages.

    top_k: passages retrieved and used at most; min_score: fused score below which a passage is not used.
    Raises what the index raises (BackendUnavailable when the embedding model cannot be reached...).
    """
    hits = await index.search(guild_id, question, k=top_k)
    passages = select_passages(hits, min_score, top_k)
    return GroundedPrompt(passages, grounded_messages(system_prompt, question, passages), sources_block(passages))


def select_passages(hits: Sequence[Passage], min_score: float = 0.0, limit: int = 5) -> list[Passage]:
    """The hits worth grounding on: best first, at most ``limit``, each scoring at least ``min_score``."""
    return [hit for hit in hits if hit.score >= min_score][:limit]


def grounded_messages(system_prompt: str, question: str, passages: Sequence[Passage]) -> list[dict[str, str]]:
    """Chat messages for a one-shot answer; with no passages, the question goes alone."""
    if not passages:
        return [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}]
    excerpts = "\n\n".join(
        f"[{number}] {passage.source}{f' — {passage.heading}' if passage.heading else ''}\n{passage.text}"
        for number, passage in enumerate(passages, start=1)
    )
    return [
        {"role": "system", "content": f"{system_prompt}\n\n{GROUNDING_INSTRUCTIONS}"},
        {"role": "user", "content": f"Excerpts:\n\n{excerpts}\n\nQuestion: {question}"},
    ]


def sources_block(passages: Sequence[Passage]) -> str:
    """Markdown listing the passages' files and headings, to append to the answer; "" when none."""
    if not passages:
        return ""
    lines = [
        f"[{number}] `{passage.source}`{f' › {passage.heading}' if passage.heading else ''}"
        for number, passage in enumerate(passages, start=1)
    ]
    return "\n\n**Sources**\n" + "\n".join(lines)
