"""The registry of the handlers of kept questions (bot/kept_questions.py); the whole path, from a shutdown to the
answer after the restart, is tests/e2e/test_kept_questions_e2e.py."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import get_args

import discord
import pytest

from bot.kept_questions import Kind, ResumeHandlers, resume_waiting_questions
from bot.streaming import StreamedReply
from bot.tasks import TaskRegistry
from config import Settings
from services.storage import waiting_questions
from services.storage.database import Database
from services.storage.waiting_questions import WaitingQuestion, WaitingQuestionStore


async def handler(question: WaitingQuestion, reply: StreamedReply, message: discord.Message | None) -> None:
    raise AssertionError("not to be called")


def test_the_kinds_are_those_the_store_keeps() -> None:
    assert get_args(Kind) == waiting_questions.KINDS


def test_a_handler_is_found_by_its_kind_and_an_unknown_kind_is_refused() -> None:
    handlers = ResumeHandlers()
    handlers.register("ask", handler)
    assert handlers.lookup("ask") is handler
    assert handlers.lookup("chat") is None  # its cog did not register one
    assert handlers.lookup("voice") is None  # not a kind at all (a row written by another version)
    with pytest.raises(ValueError, match="unknown kind of kept question 'voice'"):
        handlers.register("voice", handler)  # type: ignore[arg-type]


class ReadyClient:
    """What ``resume_waiting_questions`` asks of the Discord client before it looks at the rows."""

    async def wait_until_ready(self) -> None:
        return None


class Kept:
    def __init__(self, store: WaitingQuestionStore) -> None:
        self.waiting_questions = store
        self.shutting_down = False


async def test_a_question_without_a_handler_is_logged_and_dropped(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    database = Database(tmp_path / "bot.sqlite3")
    await database.open()
    try:
        store = WaitingQuestionStore(database, max_rows=10)
        assert await store.add(WaitingQuestion("docs", 5, 1, 101, "a /docs ask question", 1.0, message_id=900))
        async with database.transaction() as db:  # a kind this version does not know
            await db.execute("INSERT INTO waiting_questions (kind, guild_id, channel_id, member_id, question,"
                             " queued_at) VALUES ('voice', 5, 1, 102, 'a spoken question', 2.0)")
        handlers = ResumeHandlers()
        handlers.register("chat", handler)
        tasks = TaskRegistry()
        with caplog.at_level(logging.WARNING, logger="bot.kept_questions"):
            started = await resume_waiting_questions(
                ReadyClient(), keeping=Kept(store), handlers=handlers, tasks=tasks,  # type: ignore[arg-type]
                settings=Settings(_env_file=None),  # type: ignore[call-arg]
            )
        assert started == 0
        assert await store.all() == []
        assert [record.getMessage() for record in caplog.records] == [
            f"dropping the kept question of member {member_id}: no handler for its kind {kind!r} (unknown, or its cog"
            " did not load)" for member_id, kind in ((101, "docs"), (102, "voice"))
        ]
        await tasks.shutdown(timeout_s=1)
    finally:
        await database.close()
