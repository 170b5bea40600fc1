"""Word error rate (WER) as speech recognition is usually scored: jiwer's WER after lowercasing, removing
punctuation and collapsing spaces, so "Paris, tomorrow." and "paris tomorrow" count as the same words."""

from __future__ import annotations

import jiwer

NORMALIZE = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                           jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])  # fmt: skip


def word_error_rate(references: str | list[str], hypotheses: str | list[str]) -> float:
    """(substitutions + deletions + insertions) / reference words, over all pairs; 0.0 is word for word.

    Raises ValueError when the lists differ in length or a reference is empty after normalization."""
    return float(jiwer.wer(references, hypotheses, reference_transform=NORMALIZE, hypothesis_transform=NORMALIZE))
