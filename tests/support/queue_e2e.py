"""The fair queue in front of the model, through the sandbox: a bot answering one request at a time, held busy, and
the members queued behind it (tests/e2e/test_llm_queue_e2e.py, tests/e2e/test_kept_questions_e2e.py)."""

from __future__ import annotations

import asyncio

from tests.e2e.conftest import HeldAnswer, shown


async def held_first(make_harness, **overrides):
    """A bot answering one request at a time, busy with alice's /ask "first" until ``held.release`` is set."""
    harness = await make_harness(LLM_MAX_CONCURRENCY=1, LLM_TIMEOUT_S=60, **overrides)
    held = harness.ollama.responder = HeldAnswer()
    first = await harness.sandbox.invoke("alice", "ask", {"question": "first"})
    await asyncio.wait_for(held.arrived.wait(), 20)
    return harness, held, first


async def queued(harness, member: str, text: str, ahead: int, command: str = "ask", channel: str = "general"):
    """Send ``command`` and wait until its reply shows it waiting with ``ahead`` ahead of it."""
    option = "message" if command == "chat" else "question"
    handle = await harness.sandbox.invoke(member, command, {option: text}, channel=channel)
    await harness.sandbox.wait_for(shown(handle, f"Queued: {ahead} ahead of you while the assistant answers"),
                                   since=handle, timeout=20)
    return handle


def asked(harness) -> list[str]:
    """The questions that reached the model, in order."""
    return [request["messages"][-1]["content"] for request in harness.ollama.chat_requests]
