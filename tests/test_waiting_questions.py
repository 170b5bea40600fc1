"""The kept waiting questions (services/storage/waiting_questions.py) in a real SQLite database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from services.storage.database import Database
from services.storage.waiting_questions import WaitingQuestion, WaitingQuestionStore
from tests.support.old_database import previous_version_database


def question(member_id: int, text: str, queued_at: float, *, channel_id: int = 1) -> WaitingQuestion:
    return WaitingQuestion("chat", 5, channel_id, member_id, text, queued_at, message_id=900 + member_id)


async def test_an_old_database_keeps_its_rows_and_gains_the_table_bounded_in_queue_order(tmp_path: Path) -> None:
    async with previous_version_database(tmp_path) as database:
        store = WaitingQuestionStore(database, max_rows=2)
        assert await store.add(question(101, "later", 20.0))
        assert await store.add(question(102, "earlier", 10.0))
        assert not await store.add(question(103, "one too many", 30.0))
        kept = await store.all()
        assert [(q.member_id, q.question, q.message_id) for q in kept] == [(102, "earlier", 1002), (101, "later", 1001)]
        assert await store.remove(kept[0].id) and not await store.remove(kept[0].id)
        assert [q.question for q in await store.all()] == ["later"]


async def test_forgetting_a_member_or_a_channel_deletes_their_kept_questions(tmp_path: Path) -> None:
    database = Database(tmp_path / "bot.sqlite3")
    await database.open()
    try:
        store = WaitingQuestionStore(database, max_rows=10)
        for number, (member_id, channel_id) in enumerate(((101, 1), (101, 2), (102, 1), (102, 3))):
            await store.add(question(member_id, f"q{number}", float(number), channel_id=channel_id))
        assert await store.forget_member(5, 101) == 2
        assert await store.forget_channel(3) == 1
        assert [(q.member_id, q.channel_id) for q in await store.all()] == [(102, 1)]
    finally:
        await database.close()


# waiting_questions as the release before notice ids wrote it (commit 9cd89f8), with one kept question in it.
WAITING_QUESTIONS_BEFORE_NOTICES = """
CREATE TABLE waiting_questions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, guild_id INTEGER, channel_id INTEGER NOT NULL,
    member_id INTEGER NOT NULL, question TEXT NOT NULL, queued_at REAL NOT NULL, application_id INTEGER,
    interaction_token TEXT, interaction_created_at REAL, message_id INTEGER
);
INSERT INTO waiting_questions (kind, guild_id, channel_id, member_id, question, queued_at, message_id)
    VALUES ('chat', 5, 1, 101, 'kept before the upgrade', 1.0, 901);
"""


async def test_a_kept_questions_notice_is_recorded_and_a_table_from_before_gains_the_column(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
        db.executescript(WAITING_QUESTIONS_BEFORE_NOTICES)
    database = Database(tmp_path / "bot.sqlite3")
    await database.open()
    try:
        store = WaitingQuestionStore(database, max_rows=10)
        [old] = await store.all()
        assert (old.question, old.message_id, old.notice_id) == ("kept before the upgrade", 901, None)
        row_id = await store.add(question(102, "kept now", 2.0))
        assert row_id is not None
        await store.set_notice(row_id, 7777)
        assert [(q.question, q.notice_id) for q in await store.all()] == [("kept before the upgrade", None),
                                                                          ("kept now", 7777)]
    finally:
        await database.close()
