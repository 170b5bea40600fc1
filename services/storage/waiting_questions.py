"""Text questions still waiting for the model when the bot shut down, in the ``waiting_questions`` table of
``services.storage.database``, answered when it is back.

A row holds what answering it later needs: the kind of answer (``chat``: the channel's conversation, ``ask``: one-shot
and grounded when relevant, ``docs``: from the documents only), the guild, channel and member, the question, when it
was first queued (the order they go back into the queue), and where the answer goes: an interaction's original
response (application id, interaction token and the interaction's creation time; Discord accepts the token for
15 minutes), a reply to a message (its id), or else a new message in the channel (a thread the bot opened); and the
bot's message that told the member the question is kept (``notice_id``), which the answer replaces.

At most ``max_rows`` rows are kept (LLM_QUEUE_MAX: no more could have waited); a row is deleted once its question is
answered or dropped, and ``/forget`` deletes the member's or the channel's.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.storage.database import Database

KINDS = ("chat", "ask", "docs")


@dataclass(frozen=True)
class WaitingQuestion:
    """One waiting question; ``id`` is None until stored. Times are seconds since the Unix epoch."""

    kind: str  # one of KINDS
    guild_id: int | None
    channel_id: int
    member_id: int
    question: str
    queued_at: float
    application_id: int | None = None  # with interaction_token and interaction_created_at: answer the interaction
    interaction_token: str | None = None
    interaction_created_at: float | None = None
    message_id: int | None = None  # else: reply to this message; neither: post in the channel
    notice_id: int | None = None  # the bot's message saying the question is kept (not for an interaction's)
    id: int | None = None


_COLUMNS = ("kind, guild_id, channel_id, member_id, question, queued_at, application_id, interaction_token,"
            " interaction_created_at, message_id, notice_id")


class WaitingQuestionStore:
    """Reads and writes ``waiting_questions`` in the bot's :class:`Database` (opened by its owner).

    max_rows: questions kept at most (>= 0); ``add`` refuses more.
    """

    def __init__(self, database: Database, *, max_rows: int) -> None:
        self.database = database
        self.max_rows = max_rows

    async def add(self, question: WaitingQuestion) -> int | None:
        """Keep ``question``; returns its row id, or None (nothing stored) when ``max_rows`` are already kept or its
        kind is unknown."""
        if question.kind not in KINDS:
            return None
        async with self.database.transaction() as db:
            cursor = await db.execute(
                f"INSERT INTO waiting_questions ({_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
                " WHERE (SELECT COUNT(*) FROM waiting_questions) < ?",
                (question.kind, question.guild_id, question.channel_id, question.member_id, question.question,
                 question.queued_at, question.application_id, question.interaction_token,
                 question.interaction_created_at, question.message_id, question.notice_id, self.max_rows))
        return cursor.lastrowid if cursor.rowcount > 0 else None

    async def set_notice(self, question_id: int, notice_id: int | None) -> None:
        """Record the bot's message that says question ``question_id`` is kept (None: there is none)."""
        async with self.database.transaction() as db:
            await db.execute("UPDATE waiting_questions SET notice_id = ? WHERE id = ?", (notice_id, question_id))

    async def all(self) -> list[WaitingQuestion]:
        """Every kept question, in the order they were queued."""
        rows = await self.database.fetchall(
            f"SELECT {_COLUMNS}, id FROM waiting_questions ORDER BY queued_at, id")
        return [WaitingQuestion(*row) for row in rows]

    async def remove(self, question_id: int) -> bool:
        """Delete one kept question (answered or dropped); True when it was still there."""
        async with self.database.transaction() as db:
            cursor = await db.execute("DELETE FROM waiting_questions WHERE id = ?", (question_id,))
        return cursor.rowcount > 0

    async def forget_member(self, guild_id: int, member_id: int) -> int:
        """Delete the kept questions of ``member_id`` in ``guild_id``; returns how many."""
        async with self.database.transaction() as db:
            cursor = await db.execute("DELETE FROM waiting_questions WHERE guild_id = ? AND member_id = ?",
                                      (guild_id, member_id))
        return cursor.rowcount

    async def forget_channel(self, channel_id: int) -> int:
        """Delete the kept questions of ``channel_id``; returns how many."""
        async with self.database.transaction() as db:
            cursor = await db.execute("DELETE FROM waiting_questions WHERE channel_id = ?", (channel_id,))
        return cursor.rowcount
