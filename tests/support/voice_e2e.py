"""Members speaking to the listening bot through the sandbox (the e2e tests of voice): a bot listening in the Lounge
with alice and bob there, what members say read by the bot's own voice, what the bot posted, and the question a member
says with a pause mid-sentence (``say_with_a_pause``), which must be answered once, whole."""

from __future__ import annotations

import asyncio

from tests.e2e.conftest import shown
from tests.support.paused_speech import paused_utterance

QUESTION = "what is the weather like today"


def heard_question(text: str) -> bool:
    """The question's key words were heard (Piper varies its timing from one reading to the next, so tiny.en may
    hear a small word differently: "like" as "light")."""
    return all(word in text.lower() for word in ("what", "weather", "today"))


async def listening(make_harness, **overrides):
    """A started bot (``make_harness(**overrides)``) listening in the Lounge, where alice and bob are, answering
    "It is sunny. Take a hat."."""
    harness = await make_harness(**overrides)
    harness.ollama.responder = lambda body: "It is sunny. Take a hat."
    for member in ("alice", "bob"):
        await harness.sandbox.join_voice(member, "Lounge")
    # Each reply is awaited as it shows, rather than with Harness.answer's 0.6 s of quiet after it: nothing follows
    # these two, and the quiet was over a second of every voice test.
    for command, reply in (("join", "Joined"), ("listen", "🎙️ Listening in")):
        handle = await harness.sandbox.invoke("alice", command, {})
        await harness.sandbox.wait_for(shown(handle, reply), since=handle, timeout=20)
    notice = harness.bot_messages(handle.interaction_id)[-1]
    assert notice["content"].startswith("🎙️ Listening in") and not notice["ephemeral"]
    while not harness.events.empty():  # what Harness.answer would have consumed
        harness.events.get_nowait()
    return harness


async def speech_pcm(harness, text: str) -> bytes:
    """``text`` said by the bundled voice (the bot's own synthesizer), as Discord PCM."""
    return (await harness.bot.synthesizer.synthesize(text)).pcm


def posted(harness, prefix: str) -> list[str]:
    return [m["content"] for m in harness.bot_messages() if m["content"].startswith(prefix)]


async def wait_until(predicate, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def assert_end_to_end_encrypted(harness) -> None:
    """Everything members said reached the bot DAVE-encrypted and was decrypted with its session; everything the bot
    said reached the sandbox encrypted and was decrypted by a member; nothing was refused."""
    stats = harness.bot.voice_sessions.get(harness.sandbox.guild_id).listening.receiver.stats
    assert stats.dave_decrypted > 0 and stats.passthrough == 0, stats
    spurts = harness.sandbox.voice_spurts("Assistant")
    assert spurts and all(spurt["e2ee"] for spurt in spurts), spurts
    assert harness.sandbox.errors == []


# -- a question said with a pause mid-sentence ------------------------------------------------------------------------

FIRST_HALF, SECOND_HALF = "What is the", "default context length?"
ANSWER = "The default context length is two thousand tokens."


def answer_only_the_whole_question(body) -> str:
    question = body["messages"][-1]["content"].lower()
    if "context" in question:
        return ANSWER
    return " ".join(f"Speculative sentence {n} about nothing." for n in range(30))


async def say_with_a_pause(harness, first: bytes, second: bytes, pause_ms: int, *heard: str) -> str:
    """Bob says ``first``, pauses ``pause_ms`` (a multiple of 20 ms) and says ``second`` (Discord PCM; each trimmed
    of its silence), to a bot answering with ``answer_only_the_whole_question``. Checks that the bot took both halves
    as one utterance: two talk spurts sent, one transcript posted, holding each of ``heard`` (lowercase words, from
    both halves), and one answer, ANSWER. Returns the transcript."""
    speech = await harness.sandbox.speak("bob", paused_utterance(first, second, pause_ms))
    assert speech["spurts"] == 2
    await wait_until(lambda: posted(harness, "🔊"), timeout=30)

    [transcript] = posted(harness, "🎙️ **Bob**:")
    assert all(words in transcript.lower() for words in heard), transcript  # both halves
    assert posted(harness, "🔊") == [f"🔊 {ANSWER}"]
    return transcript
