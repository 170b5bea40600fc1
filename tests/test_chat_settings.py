"""Chat settings per guild and channel (services/chat/chat_settings.py) and the chat-model check, against the
Ollama stand-in."""

from __future__ import annotations

import pytest

from services.chat.chat_settings import ChatSettingsStore, Setting, check_chat_model
from services.chat.llm import LLMClient
from services.errors import BackendUnavailable, InvalidInput, ModelNotFound
from services.storage.database import Database

GUILD, CHANNEL, OTHER = 5, 11, 12


@pytest.fixture
async def store(tmp_path):
    database = Database(tmp_path / "bot.sqlite3")
    await database.open()
    yield ChatSettingsStore(database, default_persona="Default persona.", default_model="llama3.2")
    await database.close()


async def test_a_channel_overrides_the_guild_which_overrides_the_defaults(store):
    await store.set(GUILD, None, "persona", "Guild persona.")
    await store.set(GUILD, CHANNEL, "persona", "Channel persona.")
    await store.set(GUILD, CHANNEL, "free_channel", True)
    here, elsewhere = await store.effective(GUILD, CHANNEL), await store.effective(GUILD, OTHER)
    assert (here.persona.value, here.persona.source) == ("Channel persona.", "channel")
    assert (elsewhere.persona.value, elsewhere.persona.source) == ("Guild persona.", "guild")
    assert (here.model.value, here.model.source) == ("llama3.2", "default")
    assert here.free_channel.value is True and elsewhere.free_channel.value is False
    assert (await store.effective(None, CHANNEL)).persona.value == "Default persona."  # a direct message

    await store.set(GUILD, CHANNEL, "persona", None)  # reset: the guild's persona applies again
    assert (await store.effective(GUILD, CHANNEL)).persona.source == "guild"
    await store.set(GUILD, CHANNEL, "free_channel", None)
    rows = await store.database.fetchall("SELECT channel_id FROM chat_settings")
    assert rows == [(0,)]  # a scope with nothing set leaves no row


async def test_free_channel_cannot_be_set_for_a_whole_guild(store):
    with pytest.raises(InvalidInput, match="only be set for a channel"):
        await store.set(GUILD, None, "free_channel", True)


async def test_only_pulled_chat_models_pass_the_check(ollama):
    async with LLMClient(host=ollama.url, chat_model="llama3.2", embed_model="nomic-embed-text", timeout_s=5,
                         num_ctx=2048, keep_alive="5m") as llm:
        assert await check_chat_model(llm, " llama3.2 ") == "llama3.2"
        with pytest.raises(ModelNotFound, match="ollama pull mistral"):
            await check_chat_model(llm, "mistral")
        with pytest.raises(InvalidInput, match="cannot chat"):
            await check_chat_model(llm, "nomic-embed-text")
        await ollama.stop()
        with pytest.raises(BackendUnavailable):
            await check_chat_model(llm, "llama3.2")


async def test_show_thinking_is_set_for_the_whole_guild_only(store):
    assert (await store.effective(GUILD, CHANNEL)).show_thinking == Setting(False, "default")
    with pytest.raises(InvalidInput, match="only be set for the whole server"):
        await store.set(GUILD, CHANNEL, "show_thinking", True)
    await store.set(GUILD, None, "show_thinking", True)
    assert (await store.effective(GUILD, CHANNEL)).show_thinking == Setting(True, "guild")
    assert (await store.effective(GUILD + 1, CHANNEL)).show_thinking.value is False
    await store.set(GUILD, None, "show_thinking", None)
    assert await store.database.fetchall("SELECT * FROM chat_settings") == []
