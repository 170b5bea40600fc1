"""A conversation with a real language model through the sandbox: llama.cpp with SmolLM2-135M behind the Ollama API
(tests/fakes/llama_engine.py) instead of the scripted stand-in.

What a member sees is what the model wrote, whole; each turn's prompt begins with the previous one, so the engine
reads only the new turn and takes the rest from its cache; and a stopped answer stops the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.e2e.conftest import ephemeral_replies
from tests.fakes.llama_engine import MODEL_NAME, LlamaOllama, engine_available
from tests.support.voice_e2e import QUESTION, listening, posted, speech_pcm, wait_until

pytestmark = pytest.mark.skipif(not engine_available(), reason="needs requirements-engine.txt (make installs it)")

QUESTIONS = ["What is the capital of France?", "And what is the capital of Italy?", "Which of the two is bigger?"]


@pytest.fixture
async def ollama() -> AsyncIterator[LlamaOllama]:
    """The real engine, in place of the scripted stand-in every harness of this module talks to."""
    engine = LlamaOllama(max_answer_tokens=48)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def test_a_real_models_answers_are_shown_whole_and_each_turn_reads_only_what_is_new(make_harness, ollama):
    harness = await make_harness(CHAT_MODEL=MODEL_NAME, LLM_TIMEOUT_S=60)
    for question in QUESTIONS:
        interaction_id, _ = await harness.answer("alice", "chat", {"message": question}, timeout=90)
        shown = harness.bot_messages(interaction_id)[-1]["content"]
        assert ollama.timings[-1].finished and ollama.timings[-1].answer.strip()
        assert shown == ollama.timings[-1].answer.strip()  # real text, streamed to its end
    first, *later = ollama.timings
    assert first.cached_tokens == 0
    for previous, turn in zip(ollama.timings, later, strict=False):
        # The whole previous prompt came from the engine's cache; only the answer and the question were read.
        assert turn.cached_tokens >= previous.prompt_tokens, ollama.timings
        assert turn.read_tokens <= previous.answer_tokens + 40, ollama.timings
    assert ollama.reloads == 0  # the same num_ctx on every request: the model stayed loaded


@pytest.mark.voice  # a spoken question, paced in real time: run alone (tests/support/lanes.py)
async def test_stop_while_a_real_model_answers_aloud_stops_the_engine(make_harness, ollama):
    ollama.ignore_eos, ollama.max_answer_tokens = True, 4000  # a long answer: the engine is busy for a minute
    harness = await listening(make_harness, CHAT_MODEL=MODEL_NAME, LLM_TIMEOUT_S=60)
    await harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION))
    await wait_until(lambda: harness.sandbox.voice_totals("Assistant")["seconds"] > 1.0, timeout=60)  # it speaks
    assert await ollama.engine_busy()
    _, events = await harness.answer("alice", "stop")
    assert ephemeral_replies(events) == ["Stopped 1 speech request."]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while await ollama.engine_busy():
        assert loop.time() < deadline, "the engine went on generating after /stop"
        await asyncio.sleep(0.05)
    stopped = ollama.timings[-1]
    assert not stopped.finished and 0 < stopped.answer_tokens < 4000
    await wait_until(lambda: posted(harness, "🔊"), timeout=10)
    spoken = posted(harness, "🔊")[-1]
    assert spoken.endswith("[interrupted]") and stopped.answer.startswith(spoken[2:-len(" [interrupted]")].strip())
