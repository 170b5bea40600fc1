"""Whisper's prompt: the words of a guild's vocabulary (``services.knowledge.vocabulary.guild_vocabulary``) as
prompt text before the audio, so that the decoder makes them likely and spells them as written.

Why 20 terms, comma-separated, as written. Whisper reads the prompt as the text said before the utterance, so the
prompt's style carries over: filled to Whisper's limit (~70 terms of the shared corpus, 223 tokens), the list made the
ALSA recordings "Reer, Left" and "Weare, Right" (WER 0.06 -> 0.12) and plain sentences worse, while a short list of
the terms a guild uses most keeps the gain on its product names and leaves other speech as it was (the terms past
the first twenty are ones members rarely say: 20, 30 and 40 terms did equally well on the corpus questions, 20 best
on the rest). Lowercased terms lost part of the gain. A sentence ("The following terms may
come up: ...") did as well as the bare list on the questions (within a word in 170, over five noisy readings) but
kept the error on "Rear Right", and it is English text that would push a multilingual model towards English: the
bare list says no more than the words. bench/bench_stt.py compares these variants (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

MAX_PROMPT_TOKENS = 223
"""Tokens of prompt text Whisper can condition on: half its text context (448 // 2 = 224) less the start-of-previous
token; faster-whisper 1.2.1 cuts ``hotwords`` (and earlier text) to this many tokens (``get_prompt``), from the end
of a longer list of terms, so ``fit_prompt`` stops at a whole term instead."""

MAX_PROMPT_TERMS = 20
"""Words of the vocabulary in Whisper's prompt, at most (names first, then the best document terms): about 60 tokens
of the shared corpus's terms, a quarter of what the prompt can hold (see the module docstring for why)."""


def fit_prompt(vocabulary: Sequence[str], count_tokens: Callable[[str], int], max_tokens: int = MAX_PROMPT_TOKENS,
               max_terms: int | None = MAX_PROMPT_TERMS) -> str:
    """The first ``max_terms`` words of ``vocabulary`` (None: no limit) as Whisper prompt text, "Ollama, GGUF,
    OLLAMA_HOST", cut after the last whole word that fits in ``max_tokens``.

    count_tokens: the model's token count of a text as faster-whisper encodes a prompt (it prefixes a space).
    Returns "" for an empty vocabulary; the result has at most ``max_tokens`` tokens and ``max_terms`` words.
    """
    words: list[str] = []
    used = 0
    for word in vocabulary[:max_terms]:
        cost = count_tokens(f" {word},")  # BPE never merges across ", ": the pieces add up
        if used + cost > max_tokens:
            break
        words.append(word)
        used += cost
    prompt = ", ".join(words)
    while words and count_tokens(" " + prompt) > max_tokens:  # never taken with Whisper's BPE; a guard
        words.pop()
        prompt = ", ".join(words)
    return prompt
