"""Vocabulary bias for speech recognition: the words a guild says that general English does not expect.

Whisper writes what is likely in general English, so the bundled tiny.en hears a server's product and setting names
wrong: "Ollama" as "Alama", "GGUF" as "G-Guff", "CUDA visible devices" as "Q to visible devices". Given those words
as prompt text before the audio, its decoder makes them likely and spells them as written
(bench/bench_stt.py measures the difference). This module picks the words; ``services.speech.stt`` passes them to
faster-whisper as ``hotwords``.

Distinctive terms of the documents (``document_terms``), per scope's chunks:

1. Candidates: words of letters and digits, joined inside by ``_ . -`` (``OLLAMA_HOST``, ``num_ctx``, ``llama3.2``,
   ``macOS``), at least 3 characters with 2 letters, from each chunk's text and heading path; a word with a
   ``/`` or ``:`` around it (URLs, paths), 5 or more digits (hashes, ports, sizes) or over 40 characters is skipped.
2. Rare in English: the word's Zipf frequency in general English (wordfreq 3.1: log10 of occurrences per billion
   words, over Wikipedia, subtitles, news, books, web text and more; Speer et al., "LuminosoInsight/wordfreq",
   doi:10.5281/zenodo.7199437) is below ``RARE_ZIPF`` (3.5, about 3 per million words). wordfreq scores words joined
   by ``.`` or ``-`` by their parts; snake_case identifiers and unknown words have frequency 0; each part of a joined
   word is counted as a word too.
3. Score: occurrences (a heading's count ``HEADING_WEIGHT`` times: headings name what a section is about; one in
   code ``CODE_WEIGHT`` times) times
   rarity, ``RARE_ZIPF + 1 - zipf``; frequent in the documents and rare in English ranks first, a keyness measure in
   the manner of the "weirdness" ratio of Ahmad, Gillam & Tostevin (TREC 1999).
4. Spelling: the form written most often outside code (Markdown code spans and blocks), else the most frequent
   form: "Ollama" in prose wins over ``ollama run`` in commands.

The guild's vocabulary (``guild_vocabulary``) is the bot's names and wake words, then the document terms of the
guild's and the global documents, best first; ``services.speech.prompt.fit_prompt`` writes the first of them as
Whisper's prompt (why twenty, and why as a bare list: that module's docstring).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from wordfreq import zipf_frequency

RARE_ZIPF = 3.5
"""Words more frequent than this in general English (Zipf scale) are not distinctive: Whisper expects them."""

HEADING_WEIGHT = 3
"""How many occurrences a word in a heading counts for."""

CODE_WEIGHT = 0.25
"""How much an occurrence in Markdown code (spans and blocks) counts for: code is full of names nobody says
(``console.log``, ``created_at``), while the words spoken about are in the prose."""

_WORD_RE = re.compile(r"(?<![\w/:.\-#])[A-Za-z0-9]+(?:[_.\-][A-Za-z0-9]+)*(?![\w/]|:[\w/]|[.\-]\w)")
_PART_RE = re.compile(r"[_.\-]")
_CODE_RE = re.compile(r"```.*?(?:```|$)|`[^`\n]*`", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Term:
    """A distinctive word of the documents: its spelling, and its score (higher is more distinctive)."""

    text: str
    score: float


def _candidates(text: str) -> Iterable[str]:
    for match in _WORD_RE.finditer(text):
        word = match.group(0)
        if len(word) > 40 or sum(ch.isdigit() for ch in word) >= 5 or sum(ch.isalpha() for ch in word) < 2:
            continue
        if len(word) >= 3:
            yield word
        parts = _PART_RE.split(word)
        if len(parts) > 1:
            yield from (part for part in parts if len(part) >= 3 and sum(ch.isalpha() for ch in part) >= 2)


def _zipf(word: str) -> float:
    """Frequency in general English on the Zipf scale (0: unknown). wordfreq scores ``open-source`` and ``e.g`` by
    their parts; a snake_case identifier (``keep_alive``) is a name, not its words: 0."""
    return 0.0 if "_" in word else zipf_frequency(word, "en")


def document_terms(chunks: Iterable[tuple[str, str]], limit: int = 300) -> list[Term]:
    """The ``limit`` most distinctive terms of ``chunks``, best first (see the module docstring for the algorithm).

    chunks: (text, heading path) pairs, the chunks of a scope as the index stores them. Blocking, CPU-bound
    (about 2 µs a word): run it in a thread for a large corpus.
    """
    counts: Counter[str] = Counter()  # key: the word lowercased; value: weighted occurrences
    prose_forms: dict[str, Counter[str]] = {}
    all_forms: dict[str, Counter[str]] = {}
    for text, heading in chunks:
        code = "\n".join(_CODE_RE.findall(text))
        prose = _CODE_RE.sub(" ", text)
        for source, weight in ((prose, 1.0), (heading, HEADING_WEIGHT), (code, CODE_WEIGHT)):
            for word in _candidates(source):
                counts[word.lower()] += weight
                all_forms.setdefault(word.lower(), Counter())[word] += 1
                if source is not code:
                    prose_forms.setdefault(word.lower(), Counter())[word] += 1
    terms = []
    for key, count in counts.items():
        zipf = _zipf(key)
        if zipf >= RARE_ZIPF:
            continue
        forms = prose_forms.get(key) or all_forms[key]
        spelling = max(forms.items(), key=lambda item: (item[1], item[0] != item[0].lower()))[0]
        terms.append(Term(spelling, count * (RARE_ZIPF + 1 - zipf)))
    terms.sort(key=lambda term: (-term.score, term.text.lower()))
    return terms[:limit]


def merge_terms(*scopes: Sequence[Term]) -> list[Term]:
    """The terms of several scopes (a guild's documents and the global ones) as one list, best first: a term in
    both has the sum of its scores and the spelling of its higher-scoring side."""
    merged: dict[str, Term] = {}
    for terms in scopes:
        for term in terms:
            key = term.text.lower()
            known = merged.get(key)
            if known is None:
                merged[key] = term
            else:
                spelling = known.text if known.score >= term.score else term.text
                merged[key] = Term(spelling, known.score + term.score)
    return sorted(merged.values(), key=lambda term: (-term.score, term.text.lower()))


def guild_vocabulary(names: Iterable[str], terms: Sequence[Term]) -> tuple[str, ...]:
    """What to bias a guild's transcription towards: ``names`` (the bot's name and nickname, the wake words) first,
    then ``terms`` in order; blanks and repeats (case-insensitive) dropped. Not cut to the prompt limit:
    ``fit_prompt`` does that with the model's tokenizer."""
    seen: set[str] = set()
    vocabulary = []
    for word in [*names, *(term.text for term in terms)]:
        word = " ".join(word.split())
        if word and word.lower() not in seen:
            seen.add(word.lower())
            vocabulary.append(word)
    return tuple(vocabulary)
