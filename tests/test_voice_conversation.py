"""A spoken turn has one owner: each way of ending a turn, in each state it can meet it, goes through ``Turn.cancel``.

The real conversation (endpointer, speculation, answering), the real playback queue (``VoiceSession``), Whisper tiny.en,
the bundled Piper voice and the answering use case against the Ollama stand-in, with the turns stored in SQLite; only
Discord's voice client is a stand-in, which plays a source's 20 ms frames in a thread as discord.py's AudioPlayer does.

The paths: /stop (``VoiceSession.stop_answers``) in every state; the member speaking again, which can only meet a turn
whose end is not confirmed (LISTENING); barge-in, which cuts only what plays (SPEAKING: the member's own words and the
questions of others are still answered in the other states); leave (``VoiceSession.close``) and shutdown (leave, then
the task registry's shutdown) in every state. Afterwards nothing more of the turn is spoken, posted or stored, and no
LLM stream or task of it is left, except that an answer cut by barge-in or /stop while it plays is remembered and
posted as far as it was heard, marked as interrupted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bot.tasks import TaskRegistry
from bot.voice_session import VoiceSession
from config import load_settings
from services.chat.answering import INTERRUPTED_MARK, Answering, MemoryHistory
from services.chat.chat_settings import ChatSettingsStore
from services.chat.conversations import ConversationStore
from services.chat.llm import LLMClient
from services.chat.llm_queue import LLMQueue
from services.speech.audio import FRAME_BYTES
from services.speech.stt import FasterWhisperTranscriber
from services.speech.tts import PiperSynthesizer
from services.storage.database import Database
from services.voice.conversation import VoiceConversation
from services.voice.turn import Turn, TurnState
from tests.fakes.ollama import FakeOllama

# Paced in real time, and how long Whisper takes decides which state a turn is in: alone in make test.
pytestmark = pytest.mark.voice

GUILD_ID, VOICE_CHANNEL_ID, BOB, CAROL = 1, 2, 10, 11
QUESTION = "What is the weather like today?"
LONG_ANSWER = " ".join(f"This is sentence {n} of a long answer." for n in range(40))
FIRST_TOKEN_S = 2.0  # the stand-in's wait before the first token, while a turn must stay before its answer plays


class PlayingVoiceClient:
    """What ``VoiceSession`` uses of discord.py's voice client: ``play`` reads the source in a thread, one frame per
    20 ms, until it returns b"" or ``stop`` is called, then calls ``after``; ``frames`` counts the frames read."""

    def __init__(self) -> None:
        self.guild = SimpleNamespace(id=GUILD_ID)
        self.channel = SimpleNamespace(id=VOICE_CHANNEL_ID)
        self.frames = 0
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def is_connected(self) -> bool:
        return True

    def is_playing(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def play(self, source: Any, *, after: Callable[[Exception | None], None]) -> None:
        self._stopped.clear()

        def run() -> None:
            while not self._stopped.is_set() and source.read():
                self.frames += 1
                time.sleep(0.02)
            after(None)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    async def disconnect(self, *, force: bool = False) -> None:
        self.stop()


@dataclass
class Rig:
    conversation: VoiceConversation
    session: VoiceSession
    voice_client: PlayingVoiceClient
    ollama: FakeOllama
    store: ConversationStore
    tasks: TaskRegistry
    posts: list[str] = field(default_factory=list)
    names_released: asyncio.Event = field(default_factory=asyncio.Event)

    def say(self, member_id: int, pcm: bytes) -> None:
        """``member_id`` says ``pcm`` (Discord PCM): its frames reach the endpointer as the receive path hands them."""
        now = self.conversation.endpointer.clock()
        frames = [pcm[i:i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)]
        for n, frame in enumerate(frames):
            self.conversation.endpointer.feed(member_id, frame, now - (len(frames) - n) * 0.02)

    def turn(self) -> Turn | None:
        """The turn being answered, else the one whose end is not confirmed yet."""
        return self.conversation.current or next(iter(self.conversation._speculative.values()), None)


@pytest.fixture(scope="module")
def question_pcm(joe: PiperSynthesizer) -> bytes:
    return asyncio.run(joe.synthesize(QUESTION)).pcm


@pytest.fixture
async def make_rig(tmp_path: Path, ollama: FakeOllama, tiny: FasterWhisperTranscriber,
                   joe: PiperSynthesizer) -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
    closers: list[Callable[[], Awaitable[Any]]] = []

    async def factory(**overrides: Any) -> Rig:
        settings = load_settings(DISCORD_TOKEN=None, OLLAMA_HOST=ollama.url, DATA_DIR=tmp_path / "data",
                                 MODELS_DIR=tmp_path / "models", STORE_VOICE_TRANSCRIPTS=True,
                                 STT_VOCABULARY_BIAS=False, LLM_TIMEOUT_S=10, **overrides)
        database = Database(settings.db_path)
        await database.open()
        llm = LLMClient.from_settings(settings)
        store = ConversationStore(database, max_messages=100)
        answering = Answering(settings=settings, llm=llm, llm_queue=LLMQueue(max_concurrency=2, max_waiting=10),
                              conversations=store, documents=NoDocuments(),
                              chat_settings=ChatSettingsStore(database, default_persona="You are helpful.",
                                                              default_model=settings.CHAT_MODEL))
        tasks = TaskRegistry()
        voice_client = PlayingVoiceClient()
        session = VoiceSession(voice_client, synthesizer=joe, tasks=tasks, queue_max=10)  # type: ignore[arg-type]
        rig: Rig

        async def member_name(user_id: int) -> str:
            await rig.names_released.wait()
            return f"member {user_id}"

        async def post(text: str) -> None:
            rig.posts.append(text)

        conversation = VoiceConversation(
            settings=settings, transcriber=tiny, answering=answering, speech=session, memory=MemoryHistory(maxlen=40),
            guild_id=GUILD_ID, voice_channel_id=VOICE_CHANNEL_ID, post=post, member_name=member_name,
            start_task=lambda coro, name: tasks.start(coro, name=name, awaited=True), loop=asyncio.get_running_loop(),
        )
        rig = Rig(conversation, session, voice_client, ollama, store, tasks)
        rig.names_released.set()
        session.listening = SimpleNamespace(conversation=conversation)  # type: ignore[assignment]
        conversation.start()
        closers.extend([session.close, lambda: tasks.shutdown(timeout_s=5), llm.close, database.close])
        return rig

    yield factory
    for close in closers:
        await close()


class NoDocuments:
    """The document search, with no documents (spoken turns never search them)."""

    async def search(self, guild_id: int | None, query: str, k: int = 5) -> list[Any]:
        return []


async def wait_until(predicate: Callable[[], Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


# -- reaching each state ------------------------------------------------------------------------------------------


async def listening_turn(make_rig: Callable[..., Awaitable[Rig]], pcm: bytes) -> tuple[Rig, Turn]:
    """A turn prepared on a tentative end whose confirmation is far off: transcribed, its answer asked for."""
    rig = await make_rig(ENDPOINT_SPECULATE_MS=150, ENDPOINT_SILENCE_MS=5000, ENDPOINT_COMPLETE_MS=0)
    rig.ollama.first_token_latency_s = FIRST_TOKEN_S
    rig.say(BOB, pcm)
    await wait_until(lambda: rig.ollama.active_requests == 1)
    turn = rig.turn()
    assert turn is not None and turn.state is TurnState.LISTENING
    return rig, turn


async def transcribing_turn(make_rig: Callable[..., Awaitable[Rig]], pcm: bytes) -> tuple[Rig, Turn]:
    """A turn whose end is confirmed, held before its transcript is ready (the member's name is slow to come)."""
    rig = await make_rig(ENDPOINT_SPECULATE_MS=0, ENDPOINT_SILENCE_MS=300)
    rig.names_released.clear()
    rig.say(BOB, pcm)
    await wait_until(lambda: rig.conversation.current is not None)
    turn = rig.turn()
    assert turn is not None and turn.state is TurnState.TRANSCRIBING
    return rig, turn


async def answering_turn(make_rig: Callable[..., Awaitable[Rig]], pcm: bytes) -> tuple[Rig, Turn]:
    """A turn whose transcript is posted and whose answer is queued to play, before the model's first token."""
    rig = await make_rig(ENDPOINT_SPECULATE_MS=0, ENDPOINT_SILENCE_MS=300)
    rig.ollama.first_token_latency_s = FIRST_TOKEN_S
    rig.say(BOB, pcm)
    await wait_until(lambda: rig.conversation.current is not None and rig.conversation.current.playing is not None)
    turn = rig.turn()
    assert turn is not None and turn.state is TurnState.ANSWERING and rig.posts and rig.voice_client.frames == 0
    return rig, turn


async def speaking_turn(make_rig: Callable[..., Awaitable[Rig]], pcm: bytes) -> tuple[Rig, Turn]:
    """A turn whose long answer plays."""
    rig = await make_rig(ENDPOINT_SPECULATE_MS=0, ENDPOINT_SILENCE_MS=300)
    rig.ollama.responder = lambda body: LONG_ANSWER
    rig.ollama.tokens_per_s = 40
    rig.say(BOB, pcm)
    await wait_until(lambda: rig.voice_client.frames > 10)
    turn = rig.turn()
    assert turn is not None and turn.state is TurnState.SPEAKING
    return rig, turn


STATES = {"listening": listening_turn, "transcribing": transcribing_turn, "answering": answering_turn,
          "speaking": speaking_turn}


# -- the paths ------------------------------------------------------------------------------------------------------


async def stop(rig: Rig, pcm: bytes) -> None:
    await rig.session.stop_answers()


async def speak_again(rig: Rig, pcm: bytes) -> None:
    rig.say(BOB, pcm[: FRAME_BYTES * 25])  # half a second more of the same member: the utterance goes on


async def barge_in(rig: Rig, pcm: bytes) -> None:
    rig.say(CAROL, pcm[: FRAME_BYTES * 18])  # 360 ms: talks over the bot, too short to be a question of its own
    await wait_until(lambda: rig.session.current is None)


async def leave(rig: Rig, pcm: bytes) -> None:
    await rig.session.close()


async def shutdown(rig: Rig, pcm: bytes) -> None:
    await rig.session.close()  # the bot leaves voice first (AssistantBot.close), then stops its tasks
    await rig.tasks.shutdown(timeout_s=5)
    assert rig.tasks.running == []


CASES = [
    *[(state, "stop") for state in STATES],
    ("listening", "speak again"),
    ("speaking", "barge-in"),
    *[(state, path) for state in STATES for path in ("leave", "shutdown")],
]
PATHS = {"stop": stop, "speak again": speak_again, "barge-in": barge_in, "leave": leave, "shutdown": shutdown}


@pytest.mark.parametrize(("state", "path"), CASES)
async def test_a_turn_cancelled_leaves_nothing_spoken_posted_or_stored_afterwards(
        make_rig: Callable[..., Awaitable[Rig]], question_pcm: bytes, state: str, path: str) -> None:
    rig, turn = await STATES[state](make_rig, question_pcm)
    keeps_heard = state == "speaking" and path in ("stop", "barge-in")
    posts_before = list(rig.posts)
    await PATHS[path](rig, question_pcm)
    rig.names_released.set()  # a turn held before its transcript would go on now, were it not cancelled
    await turn.wait()
    await asyncio.sleep(0.1)  # a frame already handed to the player is let through
    frames = rig.voice_client.frames

    if path != "speak again":  # (speaking again, the member's longer question is asked anew)
        await wait_until(lambda: rig.ollama.active_requests == 0, timeout=FIRST_TOKEN_S + 5)  # its stream closed
    await asyncio.sleep(1.0)
    stored = await rig.store.history(VOICE_CHANNEL_ID)
    assert rig.voice_client.frames == frames, "spoken after the cancellation"
    assert turn.preparation.done() and (turn.task is None or turn.task.done())
    if keeps_heard:
        assert turn.state is TurnState.DONE
        [heard] = [text for text in rig.posts if text not in posts_before]
        assert heard.startswith("🔊 This is sentence 0") and heard.endswith(INTERRUPTED_MARK)
        assert [m.content for m in stored][1:] == [heard.removeprefix("🔊 ")]
    else:
        assert turn.state is TurnState.CANCELLED
        assert rig.posts == posts_before and not [text for text in rig.posts if text.startswith("🔊")]
        assert stored == []
