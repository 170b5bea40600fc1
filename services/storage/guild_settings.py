"""Per-guild settings that admins change with commands (e.g. autospeak), kept in the bot's SQLite database
(the ``guild_settings`` and ``voice_opt_outs`` tables of ``services.storage.database``)."""

from __future__ import annotations

from services.storage.database import Database


class GuildSettingsStore:
    """Reads and writes guild settings in the bot's :class:`Database` (opened by its owner). Values are cached."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._autospeak: dict[int, bool] = {}
        self._opt_outs: dict[int, frozenset[int]] = {}

    async def autospeak(self, guild_id: int) -> bool:
        """Whether chat answers are also spoken in ``guild_id`` (off by default)."""
        if guild_id not in self._autospeak:
            row = await self.database.fetchone("SELECT autospeak FROM guild_settings WHERE guild_id = ?", (guild_id,))
            self._autospeak[guild_id] = bool(row and row[0])
        return self._autospeak[guild_id]

    async def set_autospeak(self, guild_id: int, enabled: bool) -> None:
        async with self.database.transaction() as db:
            await db.execute(
                "INSERT INTO guild_settings (guild_id, autospeak) VALUES (?, ?)"
                " ON CONFLICT (guild_id) DO UPDATE SET autospeak = excluded.autospeak",
                (guild_id, int(enabled)),
            )
        self._autospeak[guild_id] = enabled

    async def opted_out(self, guild_id: int) -> frozenset[int]:
        """Members of ``guild_id`` who asked not to be transcribed (/voice ignoreme)."""
        if guild_id not in self._opt_outs:
            rows = await self.database.fetchall("SELECT user_id FROM voice_opt_outs WHERE guild_id = ?", (guild_id,))
            self._opt_outs[guild_id] = frozenset(row[0] for row in rows)
        return self._opt_outs[guild_id]

    def is_opted_out(self, guild_id: int, user_id: int) -> bool:
        """Thread-safe, non-blocking check (the voice receive thread calls it); call ``opted_out`` once first."""
        return user_id in self._opt_outs.get(guild_id, frozenset())

    async def set_opted_out(self, guild_id: int, user_id: int, opted_out: bool) -> None:
        async with self.database.transaction() as db:
            if opted_out:
                await db.execute("INSERT OR IGNORE INTO voice_opt_outs VALUES (?, ?)", (guild_id, user_id))
            else:
                await db.execute("DELETE FROM voice_opt_outs WHERE guild_id = ? AND user_id = ?", (guild_id, user_id))
        current = await self.opted_out(guild_id)
        # Replaced, never mutated: the receive thread may be reading the old set.
        self._opt_outs[guild_id] = current | {user_id} if opted_out else current - {user_id}
