"""The test lanes (tests/support/lanes.py): which lane a test lands in, and that pyproject.toml registers them."""

from __future__ import annotations

import tomllib
from pathlib import Path, PurePath

import pytest

from tests.support.lanes import LANES, TIMING, lane_of

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("path", "fixtures", "marked", "lane"), [
    ("test_audio.py", ["tmp_path"], [], "unit"),
    ("test_llm.py", ["ollama", "monkeypatch"], ["parametrize"], "unit"),
    ("test_stt.py", ["tiny", "speech"], [], "models"),
    ("test_tts.py", ["joe"], [], "models"),
    ("test_tts.py", ["tmp_path"], ["models"], "models"),  # loads a voice of its own
    ("test_voice_receive.py", ["sandbox"], [], "sandbox"),
    ("sandbox/test_voice.py", ["client", "sandbox"], [], "sandbox"),
    ("test_paused_speech.py", ["cutter", "tiny", "sandbox"], [], "sandbox"),  # the sandbox goes before models
    ("e2e/test_chat_e2e.py", ["make_harness", "speech_models"], [], "e2e"),
    ("test_playground_cli.py", ["ollama"], ["e2e"], "e2e"),
    ("test_index.py", ["make_index"], [TIMING], "unit"),  # timing is not a lane
])  # fmt: skip
def test_a_test_lands_in_one_lane(path: str, fixtures: list[str], marked: list[str], lane: str) -> None:
    assert lane_of(PurePath(path), fixtures, marked) == lane


def test_pyproject_registers_every_lane_and_timing() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    registered = {marker.split(":")[0] for marker in config["markers"]}
    assert registered == {*LANES, TIMING}


def test_a_unit_test_cannot_load_a_speech_model() -> None:
    from services.speech.stt import FasterWhisperTranscriber

    with pytest.raises(pytest.fail.Exception, match="loads a speech model, so it is not a unit test"):
        FasterWhisperTranscriber(fallback=False).load()
