"""Per-guild settings that admins change with commands (e.g. autospeak), kept in the bot's SQLite database."""

from __future__ import annotations

from pathlib import Path

import aiosqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS guild_settings (
    guild_id INTEGER PRIMARY KEY,
    autospeak INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS voice_opt_outs (
    guild_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);
"""


class GuildSettingsStore:
    """Reads and writes guild settings; open() before use, close() at shutdown. Values are cached."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._autospeak: dict[int, bool] = {}
        self._opt_outs: dict[int, frozenset[int]] = {}

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.executescript(_SCHEMA)
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def autospeak(self, guild_id: int) -> bool:
        """Whether chat answers are also spoken in ``guild_id`` (off by default)."""
        if guild_id not in self._autospeak:
            assert self._db is not None, "GuildSettingsStore is not open"
            async with self._db.execute("SELECT autospeak FROM guild_settings WHERE guild_id = ?", (guild_id,)) as cur:
                row = await cur.fetchone()
            self._autospeak[guild_id] = bool(row and row[0])
        return self._autospeak[guild_id]

    async def set_autospeak(self, guild_id: int, enabled: bool) -> None:
        assert self._db is not None, "GuildSettingsStore is not open"
        await self._db.execute(
            "INSERT INTO guild_settings (guild_id, autospeak) VALUES (?, ?)"
            " ON CONFLICT (guild_id) DO UPDATE SET autospeak = excluded.autospeak",
            (guild_id, int(enabled)),
        )
        await self._db.commit()
        self._autospeak[guild_id] = enabled

    async def opted_out(self, guild_id: int) -> frozenset[int]:
        """Members of ``guild_id`` who asked not to be transcribed (/voice ignoreme)."""
        if guild_id not in self._opt_outs:
            assert self._db is not None, "GuildSettingsStore is not open"
            async with self._db.execute("SELECT user_id FROM voice_opt_outs WHERE guild_id = ?", (guild_id,)) as cur:
                self._opt_outs[guild_id] = frozenset(row[0] for row in await cur.fetchall())
        return self._opt_outs[guild_id]

    def is_opted_out(self, guild_id: int, user_id: int) -> bool:
        """Thread-safe, non-blocking check (the voice receive thread calls it); call ``opted_out`` once first."""
        return user_id in self._opt_outs.get(guild_id, frozenset())

    async def set_opted_out(self, guild_id: int, user_id: int, opted_out: bool) -> None:
        assert self._db is not None, "GuildSettingsStore is not open"
        if opted_out:
            await self._db.execute("INSERT OR IGNORE INTO voice_opt_outs VALUES (?, ?)", (guild_id, user_id))
        else:
            await self._db.execute("DELETE FROM voice_opt_outs WHERE guild_id = ? AND user_id = ?", (guild_id, user_id))
        await self._db.commit()
        current = await self.opted_out(guild_id)
        # Replaced, never mutated: the receive thread may be reading the old set.
        self._opt_outs[guild_id] = current | {user_id} if opted_out else current - {user_id}
