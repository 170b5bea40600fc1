"""The fair queue in front of the model, through the sandbox: with LLM_MAX_CONCURRENCY=1 a waiting member sees
their place and is answered in the same message; members take turns; a full queue refuses; shutdown keeps those
waiting and tells them so (answered after the restart: ``test_kept_questions_e2e.py``)."""

from __future__ import annotations

from bot.streaming import KEPT, NOT_ANSWERED
from tests.e2e.conftest import shown
from tests.support.queue_e2e import asked, held_first, queued

FULL = "Too many requests are waiting for the assistant right now; try again in a few minutes."


async def test_a_second_member_sees_their_place_then_gets_the_answer_in_the_same_message(make_harness):
    harness, held, first = await held_first(make_harness)
    bob = await queued(harness, "bob", "second", ahead=1)
    owner = await queued(harness, "owner", "third", ahead=2, command="chat", channel="random")
    assert asked(harness) == ["first"]  # nothing else reached the model while it was busy
    held.release.set()
    await harness.sandbox.wait_for(shown(owner, "You said: third"), since=owner, timeout=20)
    await harness.settle(interaction_id=owner.interaction_id)
    assert [m["content"] for m in harness.bot_messages(bob.interaction_id)] == ["You said: second"]
    assert [m["content"] for m in harness.bot_messages(owner.interaction_id, channel="random")] == ["You said: third"]
    assert asked(harness) == ["first", "second", "third"]
    assert harness.ollama.peak_generating == 1


async def test_a_member_with_a_backlog_does_not_delay_another_members_first_request(make_harness):
    harness, held, first = await held_first(make_harness)
    for number in range(2, 5):
        await queued(harness, "alice", f"alice {number}", ahead=number - 1)
    # Four are waiting or running, but bob only waits for alice's current answer and her next one.
    bob = await queued(harness, "bob", "bob 1", ahead=2)
    held.release.set()
    await harness.sandbox.wait_for(shown(bob, "You said: bob 1"), since=bob, timeout=20)
    await harness.settle()
    assert asked(harness) == ["first", "alice 2", "bob 1", "alice 3", "alice 4"]


async def test_a_full_queue_refuses_with_a_sentence_and_the_others_are_still_answered(make_harness):
    harness, held, first = await held_first(make_harness, LLM_QUEUE_MAX=1)
    bob = await queued(harness, "bob", "second", ahead=1)
    refused = await harness.sandbox.invoke("owner", "ask", {"question": "third"})
    await harness.sandbox.wait_for(shown(refused, FULL), since=refused, timeout=20)
    mention = await harness.sandbox.send_message("owner", "random", "fourth", mention_bot=True)
    await harness.sandbox.wait_for(lambda e: e.get("reference_id") == mention["id"] and e["content"] == FULL,
                                   since=refused, timeout=20)
    held.release.set()
    await harness.sandbox.wait_for(shown(bob, "You said: second"), since=bob, timeout=20)
    await harness.settle()
    assert asked(harness) == ["first", "second"]


async def test_shutdown_tells_every_waiting_member_their_request_is_kept(make_harness):
    harness, held, first = await held_first(make_harness)
    try:
        waiting = [await queued(harness, "bob", "second", ahead=1),
                   await queued(harness, "owner", "third", ahead=2, command="chat")]
        await harness.bot.close()
    finally:
        held.release.set()
    assert [m["content"] for m in harness.bot_messages(first.interaction_id)] == [NOT_ANSWERED]  # at the model
    for handle in waiting:
        assert [m["content"] for m in harness.bot_messages(handle.interaction_id)] == [KEPT]
    assert harness.bot.llm_queue.waiting == 0 and harness.bot.llm_queue.running == 0
    assert asked(harness) == ["first"]
