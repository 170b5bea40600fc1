"""Answering a question, the one use case behind every answer the bot gives, in text and in voice.

A ``Question`` is a member's words with their ``Place``: the guild, the channel or thread whose conversation it
continues, the channel whose settings apply, the member, and whether it was spoken. ``Answering`` turns it into an
answer in three steps, which text replies run in one call (``deliver``) and a spoken turn runs apart (it reads the
answer ahead before the end of the member's turn is confirmed, and remembers it only once it has played):

1. ``prepare``: the effective settings (persona, model, thinking shown), then the conversation's history within
   HISTORY_TOKEN_BUDGET (a window whose beginning stays put for many turns, ``history_window``, so that the model's
   server reuses its cache of the prompt), or, for a one-shot question, the guild's documents
   (``services.chat.grounding``); spoken questions get the persona plus VOICE_STYLE.
2. ``stream``: the answer's deltas, once the fair LLM queue gives the member a slot (voice first).
3. ``remember``: the turn stored in the conversation (SQLite, or the voice channel's memory when voice transcripts
   are not stored); an answer the member did not get whole is stored with INTERRUPTED_MARK. One-shot questions are
   not remembered.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from services.chat.attachments import TextAttachment, stored_question
from services.chat.chat_settings import ChatSettingsStore
from services.chat.conversations import ConversationStore, HistoryMessage, HistoryWindows, build_context
from services.chat.grounding import Passage, PassageSearch, ground
from services.chat.llm import LLMClient
from services.chat.llm_queue import LLMQueue, OnPlace, Priority

if TYPE_CHECKING:
    from config import Settings

INTERRUPTED_MARK = " [interrupted]"
"""Appended to a remembered answer the member did not get whole (shutdown, barge-in, /stop), so that the model
knows, in the next turns, that it was cut short."""

VOICE_STYLE = (
    "You are speaking out loud in a voice channel: answer in a few short spoken sentences, with no Markdown, "
    "lists, code or links."
)


class Grounding(Enum):
    """Where an answer's context comes from."""

    CONVERSATION = "conversation"  # the channel's history (/chat, mentions, free channels, threads, voice)
    DOCUMENTS = "documents"  # one-shot, from the guild's documents that match (/ask, /docs ask), none if none do


@dataclass(frozen=True)
class Place:
    """Where a question is asked. conversation_id: the channel or thread whose conversation it continues (the voice
    channel for a spoken one); settings_channel_id: the channel whose persona and model apply (a thread's parent)."""

    guild_id: int | None
    conversation_id: int
    settings_channel_id: int
    member_id: int
    voice: bool = False


@dataclass(frozen=True)
class Question:
    """A member's ``text`` at ``place``, with attached text ``files`` and ``images`` (PNG/JPEG/WebP/GIF bytes)."""

    text: str
    place: Place
    grounding: Grounding = Grounding.CONVERSATION
    files: Sequence[TextAttachment] = ()
    images: Sequence[bytes] = ()


class History(Protocol):
    """A conversation's memory: the history store (``ConversationStore``) or a voice channel's ``MemoryHistory``."""

    async def history(self, channel_id: int, limit: int = 200) -> list[HistoryMessage]: ...

    async def add_turn(self, channel_id: int, guild_id: int | None, author_id: int, question: str,
                       answer: str) -> None: ...


class MemoryHistory(deque[HistoryMessage]):
    """A voice channel's conversation kept in memory when voice transcripts are not stored: the messages, oldest
    first, at most ``maxlen`` (oldest dropped first), gone when the bot leaves. The interface of ``ConversationStore``
    besides; the channel id is that of its one channel and not checked. Messages get increasing ids, as rows do,
    unique in the process (a new session's messages are never taken for an old one's)."""

    _ids = itertools.count(1)

    async def history(self, channel_id: int, limit: int = 200) -> list[HistoryMessage]:
        return list(self)[-limit:]

    async def add_turn(self, channel_id: int, guild_id: int | None, author_id: int, question: str,
                       answer: str) -> None:
        self.extend([HistoryMessage("user", question, author_id, next(self._ids)),
                     HistoryMessage("assistant", answer, None, next(self._ids))])

    def forget(self, user_id: int | None = None) -> int:
        """Drop ``user_id``'s turns (what they said and the answer to it), or every turn when None; returns how many
        messages were dropped."""
        kept: list[HistoryMessage] = []
        dropping = False
        for message in self:
            if message.role == "user":
                dropping = user_id is None or message.author_id == user_id
            if not dropping:
                kept.append(message)
        dropped = len(self) - len(kept)
        self.clear()
        self.extend(kept)
        return dropped


@dataclass(frozen=True)
class PreparedAnswer:
    """What to ask the model for ``question``: ``messages`` for ``model``; ``show_thinking``: the guild wants a
    reasoning model's thinking attached; ``passages`` and ``sources`` (the Markdown block to show after the answer,
    "" when none) for a one-shot question; ``history``: where the turn is remembered (None: not remembered)."""

    question: Question
    messages: list[dict[str, Any]]
    model: str
    show_thinking: bool = False
    passages: Sequence[Passage] = ()
    sources: str = ""
    history: History | None = field(default=None, compare=False)

    @property
    def request(self) -> tuple[str, list[dict[str, Any]]]:
        """The model and messages: equal for two preparations that would ask the model the same."""
        return self.model, self.messages


Consume = Callable[[AsyncGenerator[str, None], str], Awaitable[str | None]]
"""``(deltas, sources) -> answer``: shows the streamed answer and then ``sources``; returns the answer to remember,
or None when there is none (empty, or failed midway: it is then not remembered)."""


class AnswerStream:
    """The deltas of one answer, with the text they made so far (``text``) for what to remember when cut."""

    def __init__(self, deltas: AsyncGenerator[str, None]) -> None:
        self._deltas = deltas
        self.text = ""

    async def __aiter__(self) -> AsyncGenerator[str, None]:
        async with contextlib.aclosing(self._deltas):
            async for delta in self._deltas:
                self.text += delta
                yield delta


class Answering:
    """The answering use case (see module docstring), shared by every cog and the voice conversation.

    settings: HISTORY_TOKEN_BUDGET, RETRIEVAL_TOP_K, RETRIEVAL_MIN_SCORE; documents: the guild's document search
    (``DocumentIndex``); conversations: the history store; the rest as their names say.
    """

    def __init__(self, *, settings: Settings, llm: LLMClient, llm_queue: LLMQueue, conversations: ConversationStore,
                 chat_settings: ChatSettingsStore, documents: PassageSearch) -> None:
        self.settings = settings
        self.llm = llm
        self.llm_queue = llm_queue
        self.conversations = conversations
        self.chat_settings = chat_settings
        self.documents = documents
        self.windows = HistoryWindows()

    async def prepare(self, question: Question, *, memory: History | None = None) -> PreparedAnswer:
        """The request for ``question``. memory: the conversation to continue instead of the stored one (a voice
        channel's ``MemoryHistory``). Raises what the index raises for a one-shot question (BackendUnavailable when the
        embedding model cannot be reached...)."""
        place = question.place
        chat = await self.chat_settings.effective(place.guild_id, place.settings_channel_id)
        persona = f"{chat.persona.value}\n\n{VOICE_STYLE}" if place.voice else chat.persona.value
        if question.grounding is not Grounding.CONVERSATION:
            grounded = await ground(self.documents, place.guild_id, question.text, system_prompt=persona,
                                    top_k=self.settings.RETRIEVAL_TOP_K, min_score=self.settings.RETRIEVAL_MIN_SCORE)
            return PreparedAnswer(question, grounded.messages, chat.model.value, chat.show_thinking.value,
                                  grounded.passages, grounded.sources)
        history = self.conversations if memory is None else memory
        # A voice channel's memory and the stored conversation of the same channel are two conversations.
        window = self.windows.select((place.conversation_id, memory is None),
                                     await history.history(place.conversation_id), self.settings.HISTORY_TOKEN_BUDGET)
        messages = build_context(persona, window, question.text, self.settings.HISTORY_TOKEN_BUDGET,
                                 files=question.files, images=question.images)
        return PreparedAnswer(question, messages, chat.model.value, chat.show_thinking.value, history=history)

    def stream(self, prepared: PreparedAnswer, *, thinking: list[str] | None = None,
               on_start: Callable[[], None] | None = None,
               on_place: OnPlace | None = None) -> AsyncGenerator[str, None]:
        """The answer's content deltas, once the fair LLM queue lets the member through (spoken questions first).

        thinking: receives a reasoning model's thinking (``LLMClient.chat_stream``); on_start: called when the
        question reaches the model; on_place: ``async (ahead) -> None`` while it waits in the queue. Raises
        LLMQueueFull and what ``LLMClient.chat_stream`` raises. Closing the generator closes the model's stream.
        """
        place = prepared.question.place

        async def deltas() -> AsyncGenerator[str, None]:
            if on_start is not None:
                on_start()
            async with contextlib.aclosing(self.llm.chat_stream(prepared.messages, model=prepared.model,
                                                                thinking=thinking)) as stream:
                async for delta in stream:
                    yield delta

        return self.llm_queue.stream(deltas(), member_id=place.member_id, on_place=on_place,
                                     priority=Priority.VOICE if place.voice else Priority.TEXT)

    async def remember(self, prepared: PreparedAnswer, answer: str, *, interrupted: bool = False) -> str:
        """Store the turn (the question with its files' names, and ``answer``, marked INTERRUPTED_MARK when
        ``interrupted``) in its conversation; nothing for a one-shot question or a blank answer. Returns the answer
        as remembered (marked)."""
        remembered = answer + INTERRUPTED_MARK if interrupted else answer
        if prepared.history is None or not answer.strip():
            return remembered
        question, place = prepared.question, prepared.question.place
        stored = stored_question(question.text, [file.filename for file in question.files]
                                 + ["an image"] * len(question.images))
        await prepared.history.add_turn(place.conversation_id, place.guild_id, place.member_id, stored, remembered)
        return remembered

    async def deliver(self, prepared: PreparedAnswer, consume: Consume, **stream_options: Any) -> str | None:
        """Stream the answer into ``consume`` and remember it; returns what ``consume`` returned.

        stream_options: as ``stream``. Cancelled midway (shutdown), the part already streamed is remembered as
        interrupted before CancelledError propagates.
        """
        stream = AnswerStream(self.stream(prepared, **stream_options))
        try:
            answer = await consume(aiter(stream), prepared.sources)
        except asyncio.CancelledError:
            await asyncio.shield(self.remember(prepared, stream.text, interrupted=True))
            raise
        if answer is not None:  # stored before the channel's turn passes on: the next message sees this answer
            await self.remember(prepared, answer)
        return answer
