"""One guild's voice session: the voice client, its bounded queue of speech requests, and its player.

Requests play one at a time, in order, each as its own source (so members hear a pause between them and
never two at once). A request's text is synthesized sentence by sentence while it plays. ``stop`` cuts
the current request and clears the queue; ``close`` also disconnects. Every task goes through the bot's
task registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import discord
from discord.ext import voice_recv

from bot.tasks import TaskRegistry
from bot.voice_playback import StreamingPCMSource
from bot.voice_receive import VoiceReceiver
from services.chat.answering import MemoryHistory
from services.errors import InvalidInput, ServiceError
from services.speech.tts import Synthesizer
from services.voice.conversation import VoiceConversation

log = logging.getLogger(__name__)


@dataclass
class Listening:
    """What runs while the bot listens in a guild: the receive path (DAVE, Opus) and the spoken conversation it feeds
    (``services.voice.conversation``), which owns the turns and their cancellation."""

    receiver: VoiceReceiver
    conversation: VoiceConversation


@dataclass
class SpeechRequest:
    """Speech asked by ``member_id``: ``text``, or, for a streamed answer, ``sentences`` as they come.

    ``source`` is set while it plays; ``done`` is set when it has played, was cut by ``stop`` (``cut``), or
    was dropped from the queue.
    """

    text: str
    member_id: int
    sentences: AsyncIterator[str] | None = None
    source: StreamingPCMSource | None = None
    queued_at: float = field(default_factory=time.monotonic)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cut: bool = False
    position: int = 0
    error: str | None = None  # why synthesis (or the answer stream) failed, for the member
    first_audio_at: float | None = None  # time.monotonic() when the first sentence's audio was ready
    playing_at: float | None = None  # time.monotonic() when playback started
    producer: asyncio.Task[None] | None = None  # synthesizing it (and streaming its answer) while it plays


class VoiceSession:
    """The bot's presence in one guild's voice channel (see module docstring). Use from the event loop."""

    def __init__(self, voice_client: discord.VoiceClient, *, synthesizer: Synthesizer, tasks: TaskRegistry,
                 queue_max: int, voice_history_max: int = 40) -> None:
        self.voice_client = voice_client
        self.guild_id = voice_client.guild.id
        self.synthesizer = synthesizer
        self._tasks = tasks
        self._queue: deque[SpeechRequest] = deque()
        self._queue_max = queue_max
        self._wakeup = asyncio.Event()
        self.current: SpeechRequest | None = None
        self.last_activity = time.monotonic()
        self._player = tasks.start(self._run_player(), name=f"voice-player:{self.guild_id}")
        # Listening (bot/listening.py): the receive side and the spoken conversation, stopped by close().
        self.listening: Listening | None = None
        # The voice conversation when STORE_VOICE_TRANSCRIPTS is off: in memory, bounded, gone on leave.
        self.voice_history = MemoryHistory(maxlen=voice_history_max)

    @property
    def channel(self) -> discord.abc.Connectable | None:
        return self.voice_client.channel

    @property
    def busy(self) -> bool:
        """True while something plays or waits to be played."""
        return self.current is not None or bool(self._queue)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def enqueue(self, text: str, member_id: int, sentences: AsyncIterator[str] | None = None) -> SpeechRequest:
        """Queue ``text`` (or the streamed ``sentences``); the request's ``position`` is how many play before it.

        Raises InvalidInput when the queue is full.
        """
        if len(self._queue) >= self._queue_max:
            raise InvalidInput(
                f"The speech queue is full ({self._queue_max} waiting); try again when it has played, or use /stop."
            )
        request = SpeechRequest(text, member_id, sentences)
        request.position = len(self._queue) + (1 if self.current is not None else 0)
        self._queue.append(request)
        self.last_activity = time.monotonic()
        self._wakeup.set()
        return request

    async def stop_answers(self) -> tuple[int, int]:
        """/stop: cancel the spoken turns not answered yet (``VoiceConversation.stop``; listening goes on), cut the
        one that plays, then stop the current speech and drop the queue. Returns (speech requests dropped or cut,
        spoken questions dropped)."""
        # Counted first: stopping the turns cuts the answer that plays, which then leaves the queue.
        speech = len(self._queue) + (1 if self.current is not None else 0)
        # The turns next: a turn cancelled now can no longer queue its answer behind the speech stop() drops.
        questions = await self.listening.conversation.stop() if self.listening is not None else 0
        self.stop()
        return speech, questions

    def stop(self) -> int:
        """Stop the current speech and drop the queue (barge-in, and /stop through ``stop_answers``); returns how
        many requests were dropped or cut."""
        dropped = len(self._queue) + (1 if self.current is not None else 0)
        for request in list(self._queue):
            self.cut(request)
        if self.current is not None:
            self.cut(self.current)
        return dropped

    def cut(self, request: SpeechRequest) -> None:
        """Stop ``request``: dropped from the queue, or cut while it plays; nothing when it has ended already."""
        if request in self._queue:
            self._queue.remove(request)
            request.cut = True
            request.done.set()
            return
        if request is not self.current:
            return
        request.cut = True
        if request.source is not None:
            request.source.cancel()
        if request.producer is not None:
            # An answer still waiting for the model (or generating) is dropped now, not at its first sentence.
            request.producer.cancel()
        if self.voice_client.is_playing():
            # voice-recv's stop() also stops listening: a barge-in must cut the answer, not deafen the bot.
            if isinstance(self.voice_client, voice_recv.VoiceRecvClient):
                self.voice_client.stop_playing()
            else:
                self.voice_client.stop()

    async def stop_listening(self) -> bool:
        """Stop listening (receive, pending transcriptions and turns); False when not listening."""
        listening, self.listening = self.listening, None
        if listening is None:
            return False
        if isinstance(self.voice_client, voice_recv.VoiceRecvClient) and self.voice_client.is_listening():
            self.voice_client.stop_listening()
        await listening.conversation.close()
        return True

    async def close(self) -> None:
        """Stop everything and disconnect (safe when already disconnected)."""
        await self.stop_listening()
        self.stop()
        self._player.cancel()
        await asyncio.gather(self._player, return_exceptions=True)
        if self.voice_client.is_connected():
            await self.voice_client.disconnect(force=True)

    async def _run_player(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            request = self._queue.popleft()
            self.current = request
            try:
                await self._play(request)
            finally:
                self.current = None
                self.last_activity = time.monotonic()
                request.done.set()

    async def _play(self, request: SpeechRequest) -> None:
        if not self.voice_client.is_connected():
            log.info("guild %s: dropping speech, not connected to voice", self.guild_id)
            return
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()
        source = StreamingPCMSource()
        request.source = source

        def after(error: Exception | None) -> None:  # runs in the player thread
            if error is not None:
                log.warning("guild %s: playback failed: %s", self.guild_id, error)
            loop.call_soon_threadsafe(finished.set)

        first_audio = asyncio.Event()
        producer = request.producer = self._tasks.start(self._synthesize(request, source, first_audio),
                                                        name=f"voice-tts:{self.guild_id}")
        # Also when stop() cancels it before it ever ran (its own finally would then never set it).
        producer.add_done_callback(lambda _: first_audio.set())
        try:
            # Start playing once the first sentence is ready, not before (members would hear silence first).
            await first_audio.wait()
            if source.empty_and_finished():
                return
            request.playing_at = time.monotonic()
            self.voice_client.play(source, after=after)
            await finished.wait()
        except discord.ClientException as exc:  # disconnected between the check and play()
            log.info("guild %s: could not play: %s", self.guild_id, exc)
        finally:
            source.cancel()
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    async def _synthesize(self, request: SpeechRequest, source: StreamingPCMSource, first_audio: asyncio.Event) -> None:
        try:
            if request.sentences is None:
                async for audio in self.synthesizer.stream(request.text):
                    source.feed(audio.pcm)
                    first_audio.set()
            else:
                # A streamed answer: each sentence is synthesized as soon as the LLM completes it.
                async with contextlib.aclosing(request.sentences):  # type: ignore[type-var]
                    async for sentence in request.sentences:
                        audio = await self.synthesizer.synthesize(sentence)
                        source.feed(audio.pcm)
                        if request.first_audio_at is None:
                            request.first_audio_at = time.monotonic()
                        first_audio.set()
        except ServiceError as exc:
            request.error = exc.user_message
            log.warning("guild %s: speech failed: %s", self.guild_id, exc.user_message)
        finally:
            source.finish()
            first_audio.set()
