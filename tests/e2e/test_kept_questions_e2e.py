"""Questions waiting for the model at shutdown survive a restart: the member is told their question is kept, and the
next bot (same sandbox, same DATA_DIR) answers it in place; an interaction too old to edit is dropped; /forget me
deletes a kept question."""

from __future__ import annotations

import asyncio
import sqlite3

from bot.streaming import KEPT, NOT_ANSWERED
from tests.e2e.conftest import HeldAnswer, ephemeral_replies, shown
from tests.support.queue_e2e import asked, held_first, queued

SETTINGS = {"LLM_MAX_CONCURRENCY": 1, "LLM_TIMEOUT_S": 60}


def kept_rows(harness) -> list[tuple]:
    """(kind, member's question) of every kept question, read from the database file itself."""
    with sqlite3.connect(harness.settings.db_path) as db:
        return db.execute("SELECT kind, question FROM waiting_questions ORDER BY queued_at").fetchall()


async def shut_down(harness, held: HeldAnswer) -> None:
    try:
        await harness.bot.close()
    finally:
        held.release.set()  # the stand-in's held answer to "first" ends; nobody receives it any more


async def until_no_kept_rows(harness, timeout_s: float = 20) -> None:
    async with asyncio.timeout(timeout_s):
        while kept_rows(harness):  # noqa: ASYNC110 - the database file has no event to wait on
            await asyncio.sleep(0.05)


async def test_waiting_questions_are_kept_at_shutdown_and_answered_in_place_after_the_restart(make_harness):
    harness, held, first = await held_first(make_harness)
    bob = await queued(harness, "bob", "second", ahead=1)
    owner = await queued(harness, "owner", "third", ahead=2, command="chat", channel="random")
    await shut_down(harness, held)
    # The answer already at the model is not kept; the two waiting ones are, and their members are told.
    assert [m["content"] for m in harness.bot_messages(first.interaction_id)] == [NOT_ANSWERED]
    assert [m["content"] for m in harness.bot_messages(bob.interaction_id)] == [KEPT]
    assert [m["content"] for m in harness.bot_messages(owner.interaction_id, channel="random")] == [KEPT]
    assert kept_rows(harness) == [("ask", "second"), ("chat", "third")]

    restarted = await make_harness(sandbox=harness.sandbox, **SETTINGS)
    await harness.sandbox.wait_for(shown(owner, "You said: third"), since=owner, timeout=20)
    await harness.sandbox.wait_for(shown(bob, "You said: second"), since=bob, timeout=20)
    await restarted.settle(interaction_id=bob.interaction_id)
    assert [m["content"] for m in harness.bot_messages(bob.interaction_id)] == ["You said: second"]
    assert [m["content"] for m in harness.bot_messages(owner.interaction_id, channel="random")] == ["You said: third"]
    assert asked(harness) == ["first", "second", "third"]
    assert kept_rows(harness) == []
    with sqlite3.connect(harness.settings.db_path) as db:  # the /chat turn joined the channel's conversation
        assert db.execute("SELECT role, content FROM messages ORDER BY id").fetchall() == [
            ("user", "third"), ("assistant", "You said: third")]


async def test_a_kept_interaction_older_than_discord_lets_it_be_edited_is_dropped(make_harness):
    harness, held, first = await held_first(make_harness)
    bob = await queued(harness, "bob", "second", ahead=1)
    await shut_down(harness, held)
    # The bot comes back 15 minutes later: Discord no longer accepts the interaction's token.
    with sqlite3.connect(harness.settings.db_path) as db:
        db.execute("UPDATE waiting_questions SET interaction_created_at = interaction_created_at - 900")
    harness.sandbox.interactions[bob.interaction_id].created -= 900

    await make_harness(sandbox=harness.sandbox, **SETTINGS)
    await until_no_kept_rows(harness)
    await asyncio.sleep(0.5)
    assert [m["content"] for m in harness.bot_messages(bob.interaction_id)] == [KEPT]
    assert asked(harness) == ["first"]


async def test_a_kept_mention_is_answered_after_the_restart_in_the_reply_that_said_it_was_kept(make_harness):
    harness, held, first = await held_first(make_harness)
    mention = await harness.sandbox.send_message("owner", "random", "fourth", mention_bot=True)
    await harness.sandbox.wait_for(lambda e: e.get("reference_id") == mention["id"]
                                   and "Queued: 1 ahead of you" in (e.get("content") or ""), timeout=20)
    # The sandbox shows the reply before the bot has its response (the message id) back; a shutdown in between
    # would make the bot send its last word as a second message.
    await asyncio.sleep(0.5)
    await shut_down(harness, held)
    notices = [m for m in harness.bot_messages(channel="random") if m["reference_id"] == mention["id"]]
    assert [m["content"] for m in notices] == [KEPT]

    await make_harness(sandbox=harness.sandbox, **SETTINGS)
    await harness.sandbox.wait_for(lambda e: e.get("reference_id") == mention["id"]
                                   and e.get("content") == "You said: fourth", timeout=20)
    replies = [m for m in harness.bot_messages(channel="random") if m["reference_id"] == mention["id"]]
    assert [m["content"] for m in replies] == ["You said: fourth"]  # the notice became the answer: none is left
    assert replies[0]["id"] == notices[0]["id"]
    assert asked(harness) == ["first", "fourth"]
    await until_no_kept_rows(harness)


async def test_forget_me_deletes_the_members_kept_question(make_harness):
    harness, held, first = await held_first(make_harness)
    await queued(harness, "bob", "second", ahead=1)
    await shut_down(harness, held)
    assert kept_rows(harness) == [("ask", "second")]

    # After the restart bob's question is at the model again (held there) when he asks to be forgotten.
    held_again = HeldAnswer()
    harness.ollama.responder = lambda body: held_again({"messages": [{"content": "first"}]})
    restarted = await make_harness(sandbox=harness.sandbox, **SETTINGS)
    await asyncio.wait_for(held_again.arrived.wait(), 20)
    _, events = await restarted.answer("bob", "forget me")
    assert "1 of your questions kept for after a restart" in ephemeral_replies(events)[-1]
    assert kept_rows(harness) == []
    held_again.release.set()


async def test_a_kept_mention_whose_message_was_deleted_is_dropped_without_a_traceback(make_harness, caplog):
    harness, held, first = await held_first(make_harness)
    mention = await harness.sandbox.send_message("owner", "random", "fourth", mention_bot=True)
    await harness.sandbox.wait_for(lambda e: e.get("reference_id") == mention["id"]
                                   and "Queued: 1 ahead of you" in (e.get("content") or ""), timeout=20)
    await asyncio.sleep(0.5)  # as above: the bot has its reply's id before it shuts down
    await shut_down(harness, held)
    assert kept_rows(harness) == [("chat", "fourth")]
    await harness.sandbox.delete_message(harness.sandbox.messages[mention["id"]])  # while the bot is away

    await make_harness(sandbox=harness.sandbox, **SETTINGS)
    await until_no_kept_rows(harness)
    assert asked(harness) == ["first"]
    assert any("dropping the kept question" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_kept_question_still_waiting_at_the_next_shutdown_stays_kept(make_harness):
    harness, held, first = await held_first(make_harness)
    bob = await queued(harness, "bob", "second", ahead=1)
    owner = await queued(harness, "owner", "third", ahead=2, command="chat", channel="random")
    await shut_down(harness, held)

    # The next bot stops again while answering bob's question, with the owner's still waiting behind it.
    held_again = HeldAnswer()
    harness.ollama.responder = lambda body: held_again(
        {"messages": [{"content": "first" if body["messages"][-1]["content"] == "second" else "other"}]})
    restarted = await make_harness(sandbox=harness.sandbox, **SETTINGS)
    await asyncio.wait_for(held_again.arrived.wait(), 20)
    await harness.sandbox.wait_for(shown(owner, "Queued: 1 ahead of you"), since=owner, timeout=20)
    await shut_down(restarted, held_again)
    assert [m["content"] for m in harness.bot_messages(bob.interaction_id)] == [NOT_ANSWERED]
    assert [m["content"] for m in harness.bot_messages(owner.interaction_id, channel="random")] == [KEPT]
    assert kept_rows(harness) == [("chat", "third")]

    harness.ollama.responder = lambda body: f"You said: {body['messages'][-1]['content']}"
    await make_harness(sandbox=harness.sandbox, **SETTINGS)
    await harness.sandbox.wait_for(shown(owner, "You said: third"), since=owner, timeout=20)
    await until_no_kept_rows(harness)
