"""Conversation history in SQLite and the context sent to the model."""

import sqlite3

import pytest

from services.chat.conversations import (
    ConversationStore,
    HistoryMessage,
    HistoryWindows,
    build_context,
    estimate_tokens,
    history_window,
)
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


def conversation(turns: int, chars: int = 46) -> list[HistoryMessage]:
    """``turns`` exchanges; each message ``chars`` characters long (46: 12 estimated tokens), ids from 1."""
    return [HistoryMessage("user" if i % 2 == 0 else "assistant", f"message {i} ".ljust(chars, "x"), None, i + 1)
            for i in range(2 * turns)]


def test_a_new_window_keeps_the_newest_messages_within_half_the_budget_from_a_members_message():
    history = conversation(5)  # 10 messages of 12 tokens
    start = history_window(history, token_budget=60)
    assert start == 8  # two messages (24 tokens) fit in 30; the third would not
    assert history_window(history, token_budget=80) == 8  # three fit in 40; the oldest is an answer: two are sent


def test_the_window_keeps_its_start_while_the_conversation_fits_then_drops_the_oldest_half_at_once():
    budget, history, keep_from = 120, conversation(20), None  # 10 messages fit the budget
    starts = []
    for turn in range(1, 21):
        window = history[: 2 * turn]
        start = history_window(window, budget, keep_from)
        assert sum(estimate_tokens(m.content) for m in window[start:]) <= budget
        keep_from = window[start].id
        starts.append(start)
    # Ten messages fit: from turn 6 on, the four newest are kept (five fit half the budget, the oldest of them an
    # answer) and the window grows again for four turns. The prompt's beginning changes on 4 turns of 20; dropping
    # the oldest message that no longer fits would change it on every turn from the 6th, 15 of them.
    assert starts == [0] * 5 + [8] * 4 + [16] * 4 + [24] * 4 + [32] * 3


def test_a_window_whose_first_message_is_gone_starts_afresh():
    history = conversation(4)
    assert history_window(history[2:], 1000, keep_from=history[0].id) == 0  # pruned: the newest half of the budget
    assert history_window(history[2:], 60, keep_from=history[0].id) == 4


async def test_stored_messages_carry_increasing_ids_and_windows_remember_where_they_started(store):
    for turn in range(6):
        await store.add_turn(1, None, 1, f"question {turn} " + "q" * 30, f"answer {turn} " + "a" * 30)
    history = await store.history(1)
    assert [m.id for m in history] == sorted(m.id for m in history)
    windows = HistoryWindows(max_conversations=1)
    first = windows.select("channel 1", history, token_budget=60)
    await store.add_turn(1, None, 1, "one more", "reply")
    second = windows.select("channel 1", await store.history(1), token_budget=60)
    assert second[: len(first)] == first  # the earlier prompt is a prefix of the new one
    windows.select("channel 2", history, token_budget=60)  # the cap forgets channel 1's start
    assert windows.select("channel 1", await store.history(1), token_budget=1000)[0] != first[0]


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
