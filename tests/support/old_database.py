"""A database of the bot's previous version on disk, opened by this one (tests/test_database.py,
tests/test_waiting_questions.py)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from services.chat.conversations import ConversationStore
from services.storage.database import Database

# The schema of the version before chat settings (commit 8d7c072), as a database of that version has it on disk.
PREVIOUS_SCHEMA = """
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, channel_id INTEGER NOT NULL, guild_id INTEGER, author_id INTEGER,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')), content TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE INDEX messages_by_channel ON messages (channel_id, id);
CREATE TABLE guild_settings (guild_id INTEGER PRIMARY KEY, autospeak INTEGER NOT NULL DEFAULT 0);
CREATE TABLE voice_opt_outs (guild_id INTEGER NOT NULL, user_id INTEGER NOT NULL, PRIMARY KEY (guild_id, user_id));
INSERT INTO messages (channel_id, guild_id, author_id, role, content, created_at)
    VALUES (1, 5, 100, 'user', 'old question', 0), (1, 5, NULL, 'assistant', 'old answer', 0);
INSERT INTO guild_settings VALUES (5, 1);
INSERT INTO voice_opt_outs VALUES (5, 100);
"""


@contextlib.asynccontextmanager
async def previous_version_database(tmp_path: Path) -> AsyncIterator[Database]:
    """A database file written by the previous version (PREVIOUS_SCHEMA and its rows), opened by this one, whose
    conversation is checked to be intact; closed on exit."""
    path = tmp_path / "bot.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(PREVIOUS_SCHEMA)
    database = Database(path)
    await database.open()
    try:
        assert [m.content for m in await ConversationStore(database, max_messages=10).history(1)] == [
            "old question", "old answer"]
        yield database
    finally:
        await database.close()
