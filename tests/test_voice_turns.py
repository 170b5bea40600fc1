"""Spoken turns: sentences leave the stream as soon as they are complete; wake words."""

import asyncio

from services.chat.llm import LLMClient
from services.voice.turn import SpokenTurn, addressed, sentences_of


async def deltas(*pieces: str, delay: float = 0.0):
    for piece in pieces:
        if delay:
            await asyncio.sleep(delay)
        yield piece


async def test_sentences_are_yielded_as_soon_as_complete():
    seen: list[tuple[str, int]] = []
    produced = 0

    async def source():
        nonlocal produced
        for piece in ["Hello there", ". How are", " you today? I am", " fine, thanks", "."]:
            produced += 1
            yield piece

    async for sentence in sentences_of(source()):
        seen.append((sentence, produced))
    assert [s for s, _ in seen] == ["Hello there.", "How are you today?", "I am fine, thanks."]
    # each sentence leaves once the next one has started, long before the stream ends (5th piece)
    assert seen[0][1] == 2 and seen[1][1] == 3


async def test_abbreviations_and_decimals_do_not_end_sentences():
    text = ["It costs 3.", "5 dollars, e.g. in the US", ". Done."]
    assert [s async for s in sentences_of(deltas(*text))] == ["It costs 3.5 dollars, e.g. in the US.", "Done."]


async def test_the_first_clause_leaves_as_soon_as_its_comma_is_written():
    seen: list[tuple[str, int]] = []
    produced = 0

    async def source():
        nonlocal produced
        for piece in ["Yes, the default", " context length is", " two thousand tokens,", " or so", ". Then, more."]:
            produced += 1
            yield piece

    async for sentence in sentences_of(source(), first_clause_words=4):
        seen.append((sentence, produced))
    # "Yes," is too short a clause to say alone; the next comma after 4 words is used, once, in the first sentence
    assert [s for s, _ in seen] == ["Yes, the default context length is two thousand tokens,", "or so.", "Then, more."]
    assert seen[0][1] == 4  # once the text after the comma begins ("1,000" is no clause), before the full stop


async def test_without_a_clause_mark_the_first_sentence_leaves_whole():
    text = ["It is sunny", " today. Enjoy, your", " day outside."]
    assert [s async for s in sentences_of(deltas(*text), first_clause_words=4)] == [
        "It is sunny today.", "Enjoy, your day outside."]
    assert [s async for s in sentences_of(deltas("Well, it is, I think, fine."), first_clause_words=0)] == [
        "Well, it is, I think, fine."]


async def test_turn_records_the_answer_and_timings_from_the_real_llm_client(ollama):
    ollama.responder = lambda body: "First sentence here. Second one follows! And a third?"
    ollama.tokens_per_s = 200
    llm = LLMClient(host=ollama.url, chat_model="llama3.2", embed_model="nomic-embed-text", timeout_s=5,
                    num_ctx=2048, keep_alive="5m")
    turn = SpokenTurn(llm.chat_stream([{"role": "user", "content": "hi"}]))
    sentences = [s async for s in turn.sentences()]
    await llm.close()
    assert sentences == ["First sentence here.", "Second one follows!", "And a third?"]
    assert turn.answer == "First sentence here. Second one follows! And a third?"
    assert turn.completed
    t = turn.timings
    assert t.started <= t.first_token <= t.first_sentence <= t.finished


def test_wake_words():
    assert addressed("what time is it", []) == "what time is it"
    assert addressed("Hey Assistant, what time is it?", ["assistant"]) == "what time is it?"
    assert addressed("what time is it, assistant", ["Assistant"]) == "what time is it"
    assert addressed("what time is it", ["assistant"]) is None
    assert addressed("my assistants are late", ["assistant"]) is None
