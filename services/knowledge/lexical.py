"""Lexical retrieval: identifier-aware tokens, BM25 over a scope's chunks, and Reciprocal Rank Fusion.

Used by ``services/knowledge/index.py`` beside the vector search: embedding models represent rare strings such as
``OLLAMA_HOST`` or ``E404`` poorly, so chunks are also ranked by BM25 (rank_bm25, Okapi weighting with Lucene's
non-negative idf) and by exact identifier matches, and the rankings are fused with RRF.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rank_bm25 import BM25Okapi

from services.knowledge.vocabulary import Term, document_terms

RRF_K = 60
"""Reciprocal Rank Fusion constant (Cormack, Clarke & Buettcher, SIGIR 2009)."""


_WORD_RE = re.compile(r"\w+(?:[.\-/:@]\w+)*")
_PART_SPLIT_RE = re.compile(r"[._\-/:@]+")
_CAMEL_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z0-9]+|[A-Z0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in into is it its me my no not of on or "
    "so that the their then there these this to was what when where which who why will with you your".split()
)


def _split_word(word: str) -> list[str]:
    """Parts of an identifier: split at ``_ . - / : @`` and at camelCase humps; ``[word]`` when it has none."""
    parts: list[str] = []
    for piece in _PART_SPLIT_RE.split(word):
        if not piece:
            continue
        camel = _CAMEL_RE.findall(piece) if piece.isascii() else []
        parts.extend(camel if "".join(camel) == piece else [piece])
    return parts


def tokenize(text: str) -> list[str]:
    """Lowercased lexical tokens of ``text`` for BM25.

    Identifiers are kept whole *and* split into their parts, so ``OLLAMA_HOST`` gives ``ollama_host``,
    ``ollama``, ``host``; ``num_ctx`` gives ``num_ctx``, ``num``, ``ctx``; ``config.yaml``, ``llama3.2:8b``,
    ``0x80070005`` and ``E404`` stay searchable as written; camelCase is split too (``keepAlive`` -> ``keepalive``,
    ``keep``, ``alive``). Common English stop words are dropped (never a whole identifier).
    """
    tokens: list[str] = []
    for match in _WORD_RE.finditer(text):
        word = match.group(0)
        lower = word.lower()
        parts = _split_word(word)
        if len(parts) > 1:
            tokens.append(lower)
            tokens.extend(p for p in (part.lower() for part in parts) if p not in _STOPWORDS)
        elif lower not in _STOPWORDS:
            tokens.append(lower)
    return tokens


def identifier_terms(text: str) -> list[str]:
    """The identifier-like words of ``text``, lowercased as :func:`tokenize` keeps them whole.

    An identifier has several parts (``OLLAMA_HOST``, ``num_ctx``, ``config.yaml``, ``keepAlive``) or mixes
    letters and digits (``E404``, ``0x80070005``, ``llama3``). Embedding models represent such rare strings
    poorly, so search adds a ranking of the chunks that contain them verbatim.
    """
    terms: list[str] = []
    for match in _WORD_RE.finditer(text):
        word = match.group(0)
        mixed = any(ch.isdigit() for ch in word) and any(ch.isalpha() for ch in word)
        if (len(_split_word(word)) > 1 or mixed) and word.lower() not in terms:
            terms.append(word.lower())
    return terms


class LuceneBM25(BM25Okapi):
    """BM25Okapi with Lucene's idf, ``log(1 + (N - n + 0.5) / (n + 0.5))``, which is never negative.

    rank_bm25's Okapi idf goes negative for terms in more than half of the chunks (so a scope of one or two
    documents could never match); Lucene's form keeps every matching term a positive contribution, which also
    makes scores of different scopes comparable enough to merge.
    """

    def _calc_idf(self, nd: dict[str, int]) -> None:
        for word, freq in nd.items():
            self.idf[word] = math.log(1.0 + (self.corpus_size - freq + 0.5) / (freq + 0.5))


@dataclass
class LexicalIndex:
    """BM25 over one scope's chunks (loaded from Chroma), tagged with the collection build it came from, and the
    scope's distinctive terms for speech recognition (``services.knowledge.vocabulary.document_terms``), best first."""

    build_id: str
    ids: list[str]
    texts: list[str]
    metadatas: list[dict[str, Any]]
    bm25: LuceneBM25 | None  # None when the scope has no tokens at all
    terms: list[Term] = field(default_factory=list)

    @classmethod
    def build(cls, build_id: str, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]]) -> LexicalIndex:
        """Tokenize and index, and pick the distinctive terms (blocking, CPU-bound: run in a thread)."""
        corpus = [tokenize(lexical_text(text, meta)) for text, meta in zip(texts, metadatas, strict=True)]
        bm25 = LuceneBM25(corpus) if any(corpus) else None
        terms = document_terms((text, str(meta.get("heading", ""))) for text, meta in zip(texts, metadatas,
                                                                                         strict=True))
        return cls(build_id, ids, texts, metadatas, bm25, terms)

    def top(self, query_tokens: list[str], identifiers: list[str], n: int) -> list[tuple[int, float, int]]:
        """The ``n`` best chunks with a positive score, best first, as (index, BM25 score, number of the query's
        ``identifiers`` the chunk contains verbatim) (blocking, CPU-bound)."""
        if self.bm25 is None or not query_tokens:
            return []
        scores = self.bm25.get_scores(query_tokens)
        order = sorted((i for i, s in enumerate(scores) if s > 0), key=lambda i: (-scores[i], self.ids[i]))[:n]
        freqs = self.bm25.doc_freqs
        return [(i, float(scores[i]), sum(1 for term in identifiers if term in freqs[i])) for i in order]


def lexical_text(text: str, meta: dict[str, Any]) -> str:
    """What BM25 indexes for a chunk: its file name and heading path, then its text."""
    # The file name and heading path are part of what a chunk is "about" (e.g. "troubleshooting.md").
    return f"{meta.get('source', '')}\n{meta.get('heading', '')}\n{text}"


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int = RRF_K) -> dict[str, float]:
    """Fuse ranked lists of ids: ``score(d) = sum over lists of 1 / (k + rank(d))``, ranks from 1.

    Reciprocal Rank Fusion, G. V. Cormack, C. L. A. Clarke, S. Buettcher, "Reciprocal Rank Fusion outperforms
    Condorcet and individual Rank Learning Methods", SIGIR 2009, with their k = 60. It needs no score
    normalisation, which is why it suits fusing cosine distances with BM25 scores.
    """
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return fused
