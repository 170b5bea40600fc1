"""The test lanes: every test runs in exactly one, a pytest marker that tests/conftest.py gives it at collection
(``lane_of``), so that a new test lands in its lane without anyone marking it.

- ``e2e``: the real bot through the sandbox: tests/e2e/, and tests marked ``e2e`` (the playground's command line);
- ``sandbox``: the local Discord on its own: tests/sandbox/, and tests using the ``sandbox`` fixture;
- ``models``: loads the bundled Whisper or Piper model: tests using a fixture of ``MODEL_FIXTURES``, and tests marked
  ``models`` (they load a model themselves, or run ``main.py doctor``, which does);
- ``unit``: the rest: the code with its stand-ins (Ollama, the Hugging Face Hub), SQLite and ChromaDB. A unit test
  that loads a speech model fails, saying to mark it ``models`` (``forbid_model_loads``).

Two markers say that a test must have the machine to itself, so ``make test`` runs it after the others, one test at
a time (the others run on several workers):

- ``voice``: the sandbox's voice, paced in real time, where how long Whisper or Piper takes decides what the bot does
  (the end of a turn, barge-in) and what the test measures (when playback stopped); a module of voice tests says so
  once (``pytestmark = pytest.mark.voice``), and a sandbox or e2e test that uses voice unmarked fails, saying to mark
  it (``forbid_voice``);
- ``timing``: measures the event loop's lag or the wall clock.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import PurePath
from typing import NoReturn

import pytest

LANES = ("e2e", "sandbox", "models", "unit")
"""The lanes, registered as markers in pyproject.toml; a test that fits more than one is in the first of them (an
e2e test loads models too)."""
VOICE, TIMING = "voice", "timing"
ALONE = (VOICE, TIMING)
"""The markers of tests that run alone, after the others."""

DIRECTORY_LANES = {"e2e": "e2e", "sandbox": "sandbox"}
"""A folder of tests/ -> the lane of every test in it."""
MODEL_FIXTURES = frozenset({"tiny", "joe", "speech_models", "cutter"})
"""Fixtures that load the bundled Whisper tiny.en or Piper voice (directly or through another fixture)."""
SANDBOX_FIXTURES = frozenset({"sandbox"})

def lane_of(path: PurePath, fixtures: Iterable[str], marked: Iterable[str] = ()) -> str:
    """The lane of a test in ``path`` (relative to tests/) that uses ``fixtures`` (all of them, those of its fixtures
    included) and carries the markers ``marked``."""
    fixtures, marked = set(fixtures), set(marked)
    applies = marked & set(LANES)
    if len(path.parts) > 1 and path.parts[0] in DIRECTORY_LANES:
        applies.add(DIRECTORY_LANES[path.parts[0]])
    if fixtures & SANDBOX_FIXTURES:
        applies.add("sandbox")
    if fixtures & MODEL_FIXTURES:
        applies.add("models")
    return next(lane for lane in LANES if lane in applies or lane == "unit")


def forbid_model_loads(monkeypatch: pytest.MonkeyPatch, test: str) -> None:
    """Make loading a speech model fail ``test`` with a message saying where it belongs (for unit tests)."""
    from services.speech import stt, tts

    def refuse(*args: object, **kwargs: object) -> NoReturn:
        pytest.fail(f"{test} loads a speech model, so it is not a unit test: use the tiny or joe fixture, or mark it "
                    "@pytest.mark.models (tests/support/lanes.py)", pytrace=False)

    monkeypatch.setattr(stt.FasterWhisperTranscriber, "_open", refuse)
    monkeypatch.setattr(tts, "_open_voice", refuse)
    paused_speech = sys.modules.get("tests.support.paused_speech")  # only where a test module imported it
    if paused_speech is not None:
        monkeypatch.setattr(paused_speech.SentenceCutter, "__init__", refuse)


def forbid_voice(monkeypatch: pytest.MonkeyPatch, test: str) -> None:
    """Make a member joining or speaking in the sandbox's voice fail ``test`` with a message saying to mark it voice
    (for sandbox and e2e tests not marked so)."""
    from sandbox import Sandbox

    def refuse(*args: object, **kwargs: object) -> NoReturn:
        pytest.fail(f"{test} uses the sandbox's voice, which runs alone in make test: mark it @pytest.mark.voice (or "
                    "its module: pytestmark = pytest.mark.voice; tests/support/lanes.py)", pytrace=False)

    monkeypatch.setattr(Sandbox, "join_voice", refuse)
    monkeypatch.setattr(Sandbox, "speak", refuse)
