"""The shared SQLite database (services/database.py): one connection, one schema, both stores on it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from services.conversations import ConversationStore
from services.database import Database
from services.guild_settings import GuildSettingsStore


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
