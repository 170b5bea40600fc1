"""Conversation history in SQLite and the context sent to the model."""

import sqlite3

import pytest

from services.chat.conversations import ConversationStore, HistoryMessage, build_context
from services.storage.database import Database


@pytest.fixture
async def store(tmp_path):
    database = Database(tmp_path / "bot.sqlite3")
    await database.open()
    yield ConversationStore(database, max_messages=6)
    await database.close()


async def test_turns_are_kept_per_channel_in_order(store):
    await store.add_turn(1, 10, 100, "hi", "hello!")
    await store.add_turn(1, 10, 100, "how are you?", "fine")
    await store.add_turn(2, 10, 101, "other channel", "yes")
    history = await store.history(1)
    assert [(m.role, m.content) for m in history] == [
        ("user", "hi"), ("assistant", "hello!"), ("user", "how are you?"), ("assistant", "fine")
    ]
    assert [m.content for m in await store.history(2)] == ["other channel", "yes"]


async def test_history_is_pruned_to_max_messages(store):
    for i in range(5):
        await store.add_turn(1, None, 100, f"q{i}", f"a{i}")
    history = await store.history(1)
    assert [m.content for m in history] == ["q2", "a2", "q3", "a3", "q4", "a4"]


async def test_history_survives_reopening(tmp_path):
    path = tmp_path / "bot.sqlite3"
    first = Database(path)
    await first.open()
    await ConversationStore(first, max_messages=10).add_turn(7, None, 1, "remember me", "ok")
    await first.close()
    second = Database(path)
    await second.open()
    assert [m.content for m in await ConversationStore(second, max_messages=10).history(7)] == ["remember me", "ok"]
    await second.close()


async def test_a_failed_turn_leaves_no_half_turn(store):
    with pytest.raises(sqlite3.IntegrityError):
        await store.add_turn(1, None, 1, "question", None)  # type: ignore[arg-type]
    assert await store.history(1) == []


async def test_clear_forgets_only_that_channel(store):
    await store.add_turn(1, None, 1, "a", "b")
    await store.add_turn(2, None, 1, "c", "d")
    assert await store.clear(1) == 2
    assert await store.history(1) == []
    assert len(await store.history(2)) == 2


def test_context_keeps_newest_history_within_budget():
    history = [HistoryMessage("user" if i % 2 == 0 else "assistant", f"message {i} " + "x" * 36) for i in range(10)]
    messages = build_context("be nice", history, "new question", token_budget=36)
    assert messages[0] == {"role": "system", "content": "be nice"}
    assert messages[-1] == {"role": "user", "content": "new question"}
    kept = [m["content"].split()[1] for m in messages[1:-1]]
    assert kept == ["7", "8", "9"]  # 46 characters = 12 tokens each: three fit in 36, newest first


def test_context_with_zero_history():
    assert build_context("s", [], "q", 100) == [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]


async def test_forget_member_deletes_their_messages_and_the_answers_to_them_in_that_guild_only(store):
    await store.add_turn(1, 10, 100, "my secret", "noted: your secret")
    await store.add_turn(1, 10, 101, "hello", "hi")
    await store.add_turn(7, 10, 100, "spoken in voice", "heard you")  # a stored voice transcript
    await store.add_turn(3, 20, 100, "another server", "sure")
    assert await store.forget_member(10, 100) == (2, 2)
    assert [(m.author_id, m.content) for m in await store.history(1)] == [(101, "hello"), (None, "hi")]
    assert await store.history(7) == []
    assert [m.content for m in await store.history(3)] == ["another server", "sure"]
