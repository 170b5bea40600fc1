"""The shared SQLite database (services/storage/database.py): one connection, one schema, both stores on it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from services.chat.chat_settings import ChatSettingsStore
from services.chat.conversations import ConversationStore
from services.storage.database import Database
from services.storage.guild_settings import GuildSettingsStore
from tests.support.old_database import previous_version_database


async def test_history_and_guild_settings_live_in_one_file_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "data" / "bot.sqlite3"  # the folder does not exist yet
    database = Database(path)
    await database.open()
    await ConversationStore(database, max_messages=10).add_turn(1, 5, 100, "hello", "hi!")
    settings = GuildSettingsStore(database)
    await settings.set_autospeak(5, True)
    await settings.set_opted_out(5, 100, True)
    await database.close()

    reopened = Database(path)
    await reopened.open()
    try:
        assert [m.content for m in await ConversationStore(reopened, max_messages=10).history(1)] == ["hello", "hi!"]
        settings = GuildSettingsStore(reopened)
        assert await settings.autospeak(5) is True
        assert await settings.opted_out(5) == frozenset({100})
    finally:
        await reopened.close()


async def test_a_failed_turn_does_not_undo_a_setting_changed_at_the_same_time(tmp_path: Path) -> None:
    """The stores share one connection: one store's rollback must not take the other's write with it."""
    path = tmp_path / "bot.sqlite3"
    database = Database(path)
    await database.open()
    conversations = ConversationStore(database, max_messages=10)
    settings = GuildSettingsStore(database)
    failed_turn, _ = await asyncio.gather(
        conversations.add_turn(1, 5, 100, "question", None),  # type: ignore[arg-type]  # NOT NULL: fails
        settings.set_autospeak(5, True),
        return_exceptions=True,
    )
    assert isinstance(failed_turn, sqlite3.IntegrityError)
    await database.close()

    reopened = Database(path)
    await reopened.open()
    try:
        assert await GuildSettingsStore(reopened).autospeak(5) is True
        assert await ConversationStore(reopened, max_messages=10).history(1) == []
    finally:
        await reopened.close()


async def test_using_a_closed_database_says_so(tmp_path: Path) -> None:
    database = Database(tmp_path / "bot.sqlite3")
    await database.open()
    await database.close()
    await database.close()  # idempotent
    with pytest.raises(RuntimeError, match="not open"):
        await ConversationStore(database, max_messages=10).history(1)


async def test_a_database_of_the_previous_version_opens_with_its_rows_and_gains_chat_settings(tmp_path: Path) -> None:
    async with previous_version_database(tmp_path) as database:
        assert await GuildSettingsStore(database).autospeak(5) is True
        assert await GuildSettingsStore(database).opted_out(5) == frozenset({100})
        chat = ChatSettingsStore(database, default_persona="Be helpful.", default_model="llama3.2")
        await chat.set(5, None, "model", "qwen3:4b")
        effective = await chat.effective(5, 1)
        assert (effective.model.value, effective.model.source) == ("qwen3:4b", "guild")
        assert (effective.persona.value, effective.persona.source) == ("Be helpful.", "default")


async def test_chat_settings_of_the_previous_version_keep_their_rows_and_gain_show_thinking(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript("CREATE TABLE chat_settings (guild_id INTEGER NOT NULL, channel_id INTEGER NOT NULL,"
                         " persona TEXT, model TEXT, free_channel INTEGER, PRIMARY KEY (guild_id, channel_id));"
                         "INSERT INTO chat_settings VALUES (5, 0, 'Be a pirate.', NULL, NULL);")
    for _ in range(2):  # the column is added once; opening again finds it
        database = Database(path)
        await database.open()
        try:
            chat = ChatSettingsStore(database, default_persona="Be helpful.", default_model="llama3.2")
            await chat.set(5, None, "show_thinking", True)
            effective = await chat.effective(5, 1)
            assert effective.persona.value == "Be a pirate." and effective.show_thinking.value is True
        finally:
            await database.close()
