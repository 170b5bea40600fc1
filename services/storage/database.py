"""The bot's SQLite database: one aiosqlite connection and the whole schema, shared by the stores.

One file (``settings.db_path``) holds every table:

- ``messages``: conversation history (``services.chat.conversations.ConversationStore``), one row per message;
- ``guild_settings``: per-guild options such as autospeak (``services.storage.guild_settings.GuildSettingsStore``);
- ``voice_opt_outs``: members who asked not to be transcribed, per guild (same store);
- ``chat_settings``: persona, chat model and free channel per guild (``channel_id`` 0) and per channel, and
  whether a guild's answers attach the model's thinking (``services.chat.chat_settings.ChatSettingsStore``); NULL means
  "not set here";
- ``bot_threads``: the threads the bot started, with their parent channel and last activity
  (``services.storage.bot_threads.BotThreadStore``);
- ``waiting_questions``: text questions still waiting for the model at shutdown, answered after the restart
  (``services.storage.waiting_questions.WaitingQuestionStore``).

Every table is created with ``CREATE TABLE IF NOT EXISTS``, so a database of an earlier version opens with its rows
and gains the tables it lacks; a column added to a table since (``ADDED_COLUMNS``) is added to it then.

The schema is created here, at ``open()``, and nowhere else. The stores share one connection, so the
statements of one store's transaction must not interleave with another's (a commit would commit both, a
rollback undo both): every statement runs under one ``asyncio.Lock``, writes inside :meth:`Database.transaction`
(commit at the end, rollback on any error), reads through :meth:`Database.fetchall` / :meth:`Database.fetchone`,
which therefore only ever see committed rows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiofiles.os
import aiosqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id INTEGER NOT NULL,
    guild_id INTEGER,
    author_id INTEGER,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_channel ON messages (channel_id, id);

CREATE TABLE IF NOT EXISTS guild_settings (
    guild_id INTEGER PRIMARY KEY,
    autospeak INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS voice_opt_outs (
    guild_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE IF NOT EXISTS chat_settings (
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    persona TEXT,
    model TEXT,
    free_channel INTEGER,
    show_thinking INTEGER,
    PRIMARY KEY (guild_id, channel_id)
);
CREATE INDEX IF NOT EXISTS messages_by_author ON messages (guild_id, author_id);

CREATE TABLE IF NOT EXISTS bot_threads (
    thread_id INTEGER PRIMARY KEY,
    guild_id INTEGER NOT NULL,
    parent_id INTEGER NOT NULL,
    last_active REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS bot_threads_by_activity ON bot_threads (last_active);

CREATE TABLE IF NOT EXISTS waiting_questions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    guild_id INTEGER,
    channel_id INTEGER NOT NULL,
    member_id INTEGER NOT NULL,
    question TEXT NOT NULL,
    queued_at REAL NOT NULL,
    application_id INTEGER,
    interaction_token TEXT,
    interaction_created_at REAL,
    message_id INTEGER,
    notice_id INTEGER
);
"""

#: Columns added to a table after its first version: (table, column, type), in the order they were added.
ADDED_COLUMNS = (("chat_settings", "show_thinking", "INTEGER"), ("waiting_questions", "notice_id", "INTEGER"))

Params = Iterable[Any]


class Database:
    """The SQLite database file at ``path``: ``open()`` before the stores use it, ``close()`` after them.

    open() creates the folder, connects, turns on write-ahead logging and creates the schema; it is a no-op when
    already open. close() waits for a running transaction, then closes the connection; it is idempotent.
    Using the database while it is not open raises RuntimeError.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._connection: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        if self._connection is not None:
            return
        await aiofiles.os.makedirs(self.path.parent, exist_ok=True)
        connection = await aiosqlite.connect(self.path)
        try:
            await connection.execute("PRAGMA journal_mode=WAL")
            await connection.executescript(SCHEMA)
            for table, column, kind in ADDED_COLUMNS:
                async with connection.execute(f"PRAGMA table_info({table})") as cursor:
                    if column not in {row[1] for row in await cursor.fetchall()}:
                        await connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            await connection.commit()
        except BaseException:
            await connection.close()
            raise
        self._connection = connection

    async def close(self) -> None:
        async with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None:
                await connection.close()

    def _require(self) -> aiosqlite.Connection:
        if self._connection is None:
            raise RuntimeError(f"Database {self.path} is not open")
        return self._connection

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Hold the connection for one transaction: committed when the block ends, rolled back (and the error
        re-raised) when it raises or is cancelled. Do not call other Database methods inside the block."""
        async with self._lock:
            connection = self._require()
            try:
                yield connection
                await connection.commit()
            except BaseException:
                await connection.rollback()
                raise

    async def fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        """All rows of one query, as tuples."""
        async with self._lock:
            async with self._require().execute(sql, tuple(params)) as cursor:
                return list(await cursor.fetchall())

    async def fetchone(self, sql: str, params: Params = ()) -> Any | None:
        """The first row of one query as a tuple, or None."""
        async with self._lock:
            async with self._require().execute(sql, tuple(params)) as cursor:
                return await cursor.fetchone()
