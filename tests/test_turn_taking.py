"""The end-of-turn rule on the words of a transcript: complete requests and trailing fragments."""

from __future__ import annotations

import pytest

from services.turn_taking import TurnEnd, turn_end
from tests.support.paused_speech import PAUSED_QUESTIONS

COMPLETE = [
    "What time is it?",
    "What is the default context length?",
    "How does it work?",
    "What does Ollama do?",
    "Tell me a joke.",
    "Thank you.",
    "Stop.",
    "Yes",
    "Hello there, can you hear me?",
    "Which port does Ollama listen on by default?",
    "It is sunny today",
    "Could you explain what a context window is?",
]
INCOMPLETE = [
    "What is the?",  # Whisper punctuates fragments too
    "What is the",
    "The problem is",
    "I want to.",
    "Could you explain what a",
    "What happens when",
    "Why does the bot?",
    "Which port does Ollama",
    "How long does it",
    "What should I",
    "Can you tell me",
    "Um.",
    "so, uh",
    "Is there a way to",
    "Weather",
    "",
    "   ...",
]


@pytest.mark.parametrize("text", COMPLETE)
def test_a_finished_request_is_complete(text):
    assert turn_end(text) is TurnEnd.COMPLETE


@pytest.mark.parametrize("text", INCOMPLETE)
def test_a_fragment_is_incomplete(text):
    assert turn_end(text) is TurnEnd.INCOMPLETE


def test_the_whole_paused_questions_are_complete_and_most_first_halves_are_not():
    assert all(turn_end(f"{first} {second}") is TurnEnd.COMPLETE for first, second in PAUSED_QUESTIONS)
    halves = [first for first, _ in PAUSED_QUESTIONS]
    complete = [first for first in halves if turn_end(first) is TurnEnd.COMPLETE]
    # a noun that may end a question ("What is the default") cannot be told apart from words alone
    assert len(complete) <= 3, complete
