"""The one answering use case (services/chat/answering.py) with its real parts: the chat settings and history in
SQLite, the fair queue and the Ollama client against the Ollama stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from config import load_settings
from services.chat.answering import (
    INTERRUPTED_MARK,
    VOICE_STYLE,
    Answering,
    Grounding,
    MemoryHistory,
    Place,
    Question,
)
from services.chat.attachments import TextAttachment
from services.chat.chat_settings import ChatSettingsStore
from services.chat.conversations import ConversationStore
from services.chat.llm import LLMClient
from services.chat.llm_queue import LLMQueue
from services.storage.database import Database
from tests.fakes.ollama import FakeOllama

GUILD, CHANNEL, MEMBER = 1, 2, 3
TEXT = Place(GUILD, CHANNEL, CHANNEL, MEMBER)


@dataclass
class Hit:
    text: str
    source: str
    heading: str
    score: float


class Documents:
    """The document search (``DocumentIndex.search``'s shape) over fixed passages."""

    def __init__(self, *hits: Hit) -> None:
        self.hits = list(hits)

    async def search(self, guild_id: int | None, query: str, k: int = 5) -> list[Hit]:
        return self.hits[:k]


@pytest.fixture
async def answering(tmp_path: Path, ollama: FakeOllama) -> AsyncIterator[Answering]:
    settings = load_settings(DISCORD_TOKEN=None, OLLAMA_HOST=ollama.url, DATA_DIR=tmp_path, LLM_TIMEOUT_S=5)
    database = Database(settings.db_path)
    await database.open()
    llm = LLMClient.from_settings(settings)
    yield Answering(settings=settings, llm=llm, llm_queue=LLMQueue(max_concurrency=1, max_waiting=5),
                    conversations=ConversationStore(database, max_messages=50),
                    chat_settings=ChatSettingsStore(database, default_persona="You are Ada.",
                                                    default_model=settings.CHAT_MODEL),
                    documents=Documents(Hit("Port 11434.", "setup.md", "Ports", 0.9)))
    await llm.close()
    await database.close()


async def shown(deltas: AsyncGenerator[str, None], sources: str) -> str:
    return "".join([delta async for delta in deltas]) + sources


async def test_a_conversation_continues_and_its_turns_are_remembered(answering: Answering, ollama: FakeOllama):
    ollama.responder = lambda body: "Hello Bob."
    first = await answering.prepare(Question("I am Bob.", TEXT, files=[TextAttachment("notes.txt", "x")]))
    assert await answering.deliver(first, shown) == "Hello Bob."
    second = await answering.prepare(Question("Who am I?", TEXT))
    assert [m["content"] for m in second.messages] == [
        "You are Ada.", "I am Bob.\n[attached: notes.txt]", "Hello Bob.", "Who am I?"]


async def test_a_spoken_question_has_the_voice_style_and_may_continue_a_conversation_in_memory(
        answering: Answering, ollama: FakeOllama):
    memory = MemoryHistory(maxlen=10)
    voice = Place(GUILD, CHANNEL, CHANNEL, MEMBER, voice=True)
    prepared = await answering.prepare(Question("What time is it?", voice), memory=memory)
    assert prepared.messages[0]["content"] == f"You are Ada.\n\n{VOICE_STYLE}"
    assert await answering.remember(prepared, "Noon.", interrupted=True) == f"Noon.{INTERRUPTED_MARK}"
    assert [m.content for m in memory] == ["What time is it?", f"Noon.{INTERRUPTED_MARK}"]
    assert await answering.conversations.history(CHANNEL) == []  # not in the stored conversation
    assert memory.forget(MEMBER) == 2 and list(memory) == []


async def test_an_answer_cut_by_shutdown_is_remembered_as_interrupted(answering: Answering, ollama: FakeOllama):
    ollama.responder = lambda body: "one two three four five six"
    ollama.tokens_per_s = 10
    seen: list[str] = []
    two_shown = asyncio.Event()

    async def slow(deltas: AsyncGenerator[str, None], sources: str) -> str:
        async for delta in deltas:
            seen.append(delta)
            if len(seen) == 2:
                two_shown.set()
        return "".join(seen)

    task = asyncio.create_task(answering.deliver(await answering.prepare(Question("Count.", TEXT)), slow))
    await two_shown.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [question, answer] = await answering.conversations.history(CHANNEL)
    assert question.content == "Count." and answer.content == "".join(seen) + INTERRUPTED_MARK


async def test_a_question_from_the_documents_is_grounded_and_not_remembered(answering: Answering,
                                                                           ollama: FakeOllama):
    ollama.responder = lambda body: "It listens on port 11434 [1]."
    prepared = await answering.prepare(Question("Which port?", TEXT, Grounding.DOCUMENTS))
    assert "Port 11434." in prepared.messages[-1]["content"] and "`setup.md`" in prepared.sources
    answer = await answering.deliver(prepared, shown)
    assert answer is not None and answer.endswith(prepared.sources)
    assert await answering.conversations.history(CHANNEL) == []


async def test_spoken_questions_go_first_in_the_fair_queue(answering: Answering, ollama: FakeOllama):
    ollama.responder = lambda body: "ok"
    ollama.first_token_latency_s = 0.3
    order: list[str] = []

    async def ask(text: str, place: Place) -> None:
        await answering.deliver(await answering.prepare(Question(text, place)), shown,
                                on_start=lambda: order.append(text))

    voice = Place(GUILD, 9, 9, 7, voice=True)
    holder = asyncio.create_task(ask("first", TEXT))
    await asyncio.sleep(0.1)  # holds the one slot
    waiting: list[Any] = [asyncio.create_task(ask("text", Place(GUILD, 8, 8, 6)))]
    await asyncio.sleep(0.05)
    waiting.append(asyncio.create_task(ask("voice", voice)))
    await asyncio.gather(holder, *waiting)
    assert order == ["first", "voice", "text"]


async def test_past_its_budget_a_conversations_prompt_keeps_its_beginning_for_several_turns(
        answering: Answering, ollama: FakeOllama):
    answering.settings.HISTORY_TOKEN_BUDGET = 100  # about four exchanges of the 25-token turns below
    ollama.responder = lambda body: "An answer of about fifteen tokens, long enough to fill the budget soon."
    prompts: list[list[str]] = []
    for turn in range(12):
        prepared = await answering.prepare(Question(f"Question number {turn}, asked by the member.", TEXT))
        prompts.append([m["content"] for m in prepared.messages])
        await answering.deliver(prepared, shown)
    # A turn whose prompt does not begin with the whole previous prompt (bar its question) makes the model's server
    # read it again: with one message dropped a turn, every turn from the 5th on would.
    shifted = [turn for turn, (before, after) in enumerate(zip(prompts, prompts[1:], strict=False), start=1)
               if after[: len(before) - 1] != before[:-1]]
    assert 1 <= len(shifted) <= 3, shifted
    assert all(sum(len(text) for text in prompt[1:-1]) <= 4 * 100 for prompt in prompts)  # within the budget
