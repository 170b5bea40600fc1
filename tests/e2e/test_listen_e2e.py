"""Listening through the sandbox: a member speaks into the channel; the bot transcribes, answers and speaks.

The bot hears with the bundled Whisper tiny.en; member speech is said by the bundled Piper voice (or taken from
real recordings) and sent by the sandbox as Discord would relay it (Opus, encrypted, paced).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from sandbox import ADMIN_USER_ID, ALICE_USER_ID, BOB_USER_ID, BOT_USER_ID
from sandbox.guild import LOUNGE_CHANNEL_ID
from tests.e2e.conftest import HeldAnswer, ephemeral_replies, shown
from tests.support.alsa import ALSA_DIR, side_named
from tests.support.noise import mix_noise
from tests.support.voice_e2e import (
    QUESTION,
    assert_end_to_end_encrypted,
    heard_question,
    listening,
    posted,
    speech_pcm,
    wait_until,
)

pytestmark = pytest.mark.voice  # paced in real time: run alone (tests/support/lanes.py)


async def test_member_speech_is_transcribed_answered_and_spoken(make_harness):
    harness = await listening(make_harness)
    await harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION))
    await wait_until(lambda: posted(harness, "🔊"))
    [transcript] = posted(harness, "🎙️ **Bob**:")
    assert heard_question(transcript)
    assert posted(harness, "🔊") == ["🔊 It is sunny. Take a hat."]
    await wait_until(lambda: harness.sandbox.voice_spurts("Assistant"))
    assert harness.sandbox.voice_spurts("Assistant")[0]["seconds"] > 1.0
    # the question reached the model in the voice channel's conversation
    assert heard_question(harness.ollama.chat_requests[-1]["messages"][-1]["content"])
    # transcripts are not stored unless STORE_VOICE_TRANSCRIPTS is on: the conversation lives in memory only
    assert await harness.bot.conversations.history(LOUNGE_CHANNEL_ID) == []
    session = harness.bot.voice_sessions.get(harness.sandbox.guild_id)
    assert [m.role for m in session.voice_history] == ["user", "assistant"]
    assert_end_to_end_encrypted(harness)


async def test_voice_transcripts_are_stored_when_configured(make_harness):
    harness = await listening(make_harness, STORE_VOICE_TRANSCRIPTS=True)
    await harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION))
    await wait_until(lambda: posted(harness, "🔊"))
    stored = await harness.bot.conversations.history(LOUNGE_CHANNEL_ID)
    assert [m.role for m in stored] == ["user", "assistant"] and stored[1].content == "It is sunny. Take a hat."


async def test_noise_gives_no_transcript_and_no_reply(make_harness):
    harness = await listening(make_harness)
    rng = np.random.default_rng(3)
    noise = (rng.normal(0, 0.3, 48_000 * 2 * 2).clip(-1, 1) * 32767).astype("<i2").tobytes()  # 2 s stereo
    await harness.sandbox.speak("bob", noise)
    await asyncio.sleep(3)
    assert posted(harness, "🎙️ **") == [] and posted(harness, "🔊") == []
    assert harness.ollama.chat_requests == []


async def test_ignoreme_is_honoured(make_harness):
    harness = await listening(make_harness)
    _, events = await harness.answer("bob", "voice ignoreme", {"mode": "on"})
    assert ephemeral_replies(events) == ["I will not listen to you in voice."]
    await harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION))
    await asyncio.sleep(3)
    assert posted(harness, "🎙️ **Bob**") == []
    await harness.sandbox.speak("alice", await speech_pcm(harness, QUESTION))
    await wait_until(lambda: posted(harness, "🎙️ **Alice**"))


async def test_stop_listening(make_harness):
    harness = await listening(make_harness)
    interaction_id, _ = await harness.answer("alice", "listen", {"stop": True})
    assert harness.bot_messages(interaction_id)[-1]["content"] == "Stopped listening."
    await harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION))
    await asyncio.sleep(3)
    assert posted(harness, "🎙️ **Bob**") == []


async def test_two_members_at_once_give_two_transcripts_and_two_turns(make_harness):
    harness = await listening(make_harness)
    await asyncio.gather(harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION)),
                         harness.sandbox.speak("alice", await speech_pcm(harness, "Is it going to rain tomorrow?")))
    await wait_until(lambda: len(posted(harness, "🔊")) == 2, timeout=30)
    assert len(posted(harness, "🎙️ **Bob**")) == 1 and len(posted(harness, "🎙️ **Alice**")) == 1
    # two turns remembered; the LLM may have been asked a third time (a question answered speculatively before the
    # other member's turn entered the conversation is asked again with it), but no request is left running
    session = harness.bot.voice_sessions.get(harness.sandbox.guild_id)
    assert [m.role for m in session.voice_history] == ["user", "assistant"] * 2
    await wait_until(lambda: harness.ollama.active_requests == 0, timeout=5)
    assert_end_to_end_encrypted(harness)


async def test_talking_over_the_bot_stops_its_answer(make_harness):
    harness = await listening(make_harness)
    harness.ollama.responder = lambda body: " ".join(f"This is sentence {n} of a long answer." for n in range(40))
    await harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION))
    await wait_until(lambda: harness.sandbox.voice_totals("Assistant")["seconds"] > 1.0)  # the answer is playing
    speech = await harness.sandbox.speak("alice", await speech_pcm(harness, "Is it going to rain tomorrow?"))
    await wait_until(lambda: posted(harness, "🔊"))
    answer = posted(harness, "🔊")[0]
    assert answer.endswith("[interrupted]")
    [spurt] = harness.sandbox.voice_spurts("Assistant")[:1]
    # playback stopped soon after alice started (her speech is about 1 s; barge-in needs 300 ms of it)
    assert spurt["end_t_ms"] <= speech["t_ms"] + 500, (spurt, speech)
    # and the bot still listens: alice's words become the next turn
    await wait_until(lambda: posted(harness, "🎙️ **Alice**"))
    assert_end_to_end_encrypted(harness)


async def test_corrupted_frames_are_skipped_and_counted_and_listening_continues(make_harness):
    harness = await listening(make_harness)
    harness.sandbox.corrupt_next_frames("bob", 3)
    await harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION))
    await wait_until(lambda: posted(harness, "🔊"))
    # The 60 ms skipped are the start of "what" (heard as "but" on CI); the rest of the question is heard.
    transcript = posted(harness, "🎙️ **Bob**:")[0].lower()
    assert "weather" in transcript and "today" in transcript, transcript
    session = harness.bot.voice_sessions.get(harness.sandbox.guild_id)
    assert session.listening.receiver.stats.corrupted == 3  # under DAVE: frames whose decryption failed
    assert_end_to_end_encrypted(harness)




@pytest.mark.skipif(not ALSA_DIR.is_dir(), reason="../shared/speech/alsa is not present")
async def test_recorded_speech_names_the_channel_and_noise_gives_nothing(make_harness):
    """Real recordings (ALSA channel tests) through the Opus round trip, heard by the bundled tiny.en: each of the
    eight names its side (the channel name's last word: Front_Left -> left); Noise.wav gives no transcript."""
    harness = await listening(make_harness)
    harness.ollama.responder = lambda body: "Noted."
    heard: dict[str, str] = {}
    for wav in sorted(ALSA_DIR.glob("*.wav")):
        before = len(posted(harness, "🎙️ **Bob**"))
        await harness.sandbox.speak("bob", wav)
        if wav.stem == "Noise":
            await asyncio.sleep(4)  # endpoint (600 ms) + transcription, with room to spare
            assert posted(harness, "🎙️ **Bob**")[before:] == []
            continue
        # One transcript per file; wait for it before the next file so none is attributed to the wrong one.
        await wait_until(lambda before=before: len(posted(harness, "🎙️ **Bob**")) > before, timeout=30)
        heard[wav.stem] = posted(harness, "🎙️ **Bob**")[before].lower()
    missed = {name: text for name, text in heard.items() if not side_named(name, text)}
    assert len(heard) == 8 and missed == {}, heard


# -- DAVE (end-to-end encryption): on by default in the sandbox, as Discord requires it ----------------------------


async def test_a_member_joining_then_leaving_during_listen_changes_the_epoch_and_speech_is_still_heard(make_harness):
    harness = await listening(make_harness)
    group = harness.sandbox.voice.dave_groups[LOUNGE_CHANNEL_ID]
    epoch = group.epoch
    await harness.sandbox.join_voice("admin", "Lounge")  # an Add, the bot's commit, admin welcomed: a new epoch
    await wait_until(lambda: group.epoch == epoch + 1 and ADMIN_USER_ID in group.executed)
    await harness.sandbox.speak("admin", await speech_pcm(harness, QUESTION))  # encrypted with the new epoch's keys
    await wait_until(lambda: len(posted(harness, "🔊")) == 1)
    [transcript] = posted(harness, "🎙️ **")
    assert "admin" in transcript.lower() and heard_question(transcript)

    await harness.sandbox.leave_voice("admin")  # a Remove: the next epoch, without admin
    await wait_until(lambda: group.epoch == epoch + 2 and ADMIN_USER_ID not in group.executed)
    assert {BOT_USER_ID, ALICE_USER_ID, BOB_USER_ID} <= group.executed
    await harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION))
    await wait_until(lambda: len(posted(harness, "🔊")) == 2)
    assert heard_question(posted(harness, "🎙️ **Bob**:")[0])
    assert_end_to_end_encrypted(harness)


async def test_member_speech_is_transcribed_answered_and_spoken_with_dave_off(make_harness):
    harness = await listening(make_harness, dave=False)
    await harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION))
    await wait_until(lambda: posted(harness, "🔊"))
    assert heard_question(posted(harness, "🎙️ **Bob**:")[0])
    assert posted(harness, "🔊") == ["🔊 It is sunny. Take a hat."]
    await wait_until(lambda: harness.sandbox.voice_spurts("Assistant"))
    assert [spurt["e2ee"] for spurt in harness.sandbox.voice_spurts("Assistant")] == [False]
    stats = harness.bot.voice_sessions.get(harness.sandbox.guild_id).listening.receiver.stats
    assert stats.passthrough > 0 and stats.dave_decrypted == 0
    assert harness.sandbox.errors == []


async def test_after_a_docs_reload_a_spoken_document_term_is_spelled_right(make_harness):
    """The guild's documents name "Ollama"; after `/docs reload`, tiny.en writes it as they do, where on its own it
    hears "Alama" or "a llama". The guild's vocabulary is kept in memory from the first turn on (spoken before the
    document exists): the reload must change it for the very next utterance."""
    harness = await listening(make_harness)
    await harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION))
    await wait_until(lambda: posted(harness, "🔊"))
    folder = harness.settings.DOCUMENTS_DIR / str(harness.sandbox.guild_id)
    folder.mkdir(parents=True)
    (folder / "ollama.md").write_text("# Running Ollama\n\nOllama runs models locally. Start Ollama with "
                                      "`ollama serve`; Ollama can use an NVIDIA GPU in Docker.\n")
    interaction_id, _ = await harness.answer("admin", "docs reload")
    assert "1 added" in harness.bot_messages(interaction_id)[-1]["content"]
    speech = (mix_noise(np.frombuffer(await speech_pcm(harness, "Can I run Ollama in Docker?"), "<i2") / 32768, 15)
              * 32767).astype("<i2").tobytes()  # fmt: skip
    await harness.sandbox.speak("bob", speech)
    await wait_until(lambda: len(posted(harness, "🎙️ **Bob**:")) == 2)
    transcript = posted(harness, "🎙️ **Bob**:")[-1]
    assert "ollama" in transcript.lower().replace("?", " ").split(), transcript


async def test_voice_turns_use_the_servers_persona_and_model_and_forget_me_clears_them_from_memory(make_harness):
    harness = await listening(make_harness)
    harness.ollama.models.append("qwen3:4b")
    await harness.answer("admin", "settings persona", {"text": "You are a weather pirate.", "scope": "guild"})
    await harness.answer("admin", "settings model", {"name": "qwen3:4b", "scope": "guild"})
    await harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION))
    await wait_until(lambda: posted(harness, "🔊"))
    request = harness.ollama.chat_requests[-1]
    assert request["model"] == "qwen3:4b"
    assert request["messages"][0]["content"].startswith("You are a weather pirate.")

    session = harness.bot.voice_sessions.get(harness.sandbox.guild_id)
    assert len(session.voice_history) == 2
    _, events = await harness.answer("bob", "forget me")
    assert ephemeral_replies(events) == [
        "Forgotten: 0 of your messages and 0 of my answers to them, and 2 messages of the current voice conversation."]
    assert list(session.voice_history) == []


async def waiting_voice_turn(make_harness):
    """Listening, answering one request at a time, busy with alice's /ask "first"; bob's spoken question waits."""
    harness = await listening(make_harness, LLM_MAX_CONCURRENCY=1, LLM_TIMEOUT_S=60)
    held = harness.ollama.responder = HeldAnswer()
    await harness.sandbox.invoke("alice", "ask", {"question": "first"})
    await asyncio.wait_for(held.arrived.wait(), 20)
    return harness, held


async def test_a_spoken_question_goes_before_text_questions_waiting_for_the_model(make_harness):
    harness, held = await waiting_voice_turn(make_harness)
    text = await harness.sandbox.invoke("owner", "ask", {"question": "a typed question"})
    await harness.sandbox.wait_for(shown(text, "Queued: 1 ahead of you"), since=text, timeout=20)
    await harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION))
    await wait_until(lambda: harness.bot.llm_queue.waiting == 2)
    held.release.set()
    await wait_until(lambda: posted(harness, "🔊"))
    await harness.sandbox.wait_for(shown(text, "You said: a typed question"), since=text, timeout=20)
    asked = [request["messages"][-1]["content"] for request in harness.ollama.chat_requests]
    assert asked[0] == "first" and heard_question(asked[1]) and asked[2] == "a typed question"


async def test_stop_drops_a_spoken_answer_still_waiting_for_the_model(make_harness):
    harness, held = await waiting_voice_turn(make_harness)
    await harness.sandbox.speak("bob", await speech_pcm(harness, QUESTION))
    await wait_until(lambda: harness.bot.llm_queue.waiting == 1)
    await harness.answer("alice", "stop")
    # Gone before the model is free again (the turn notices its cancelled speech within a few loop passes).
    await wait_until(lambda: harness.bot.llm_queue.waiting == 0, timeout=5)
    held.release.set()
    await harness.settle()
    assert [request["messages"][-1]["content"] for request in harness.ollama.chat_requests] == ["first"]
    assert posted(harness, "🔊") == []
