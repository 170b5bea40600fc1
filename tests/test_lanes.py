"""The suite's own layout: the lanes (tests/support/lanes.py), which lane a test lands in and that pyproject.toml
registers them; helpers shared between test modules live in tests/support."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path, PurePath

import pytest

from tests.support.lanes import ALONE, LANES, TIMING, lane_of

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


def test_pyproject_registers_every_lane_and_marker() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    registered = {marker.split(":")[0] for marker in config["markers"]}
    assert registered == {*LANES, *ALONE}


def test_a_unit_test_cannot_load_a_speech_model() -> None:
    from services.speech.stt import FasterWhisperTranscriber

    with pytest.raises(pytest.fail.Exception, match="loads a speech model, so it is not a unit test"):
        FasterWhisperTranscriber(fallback=False).load()


def test_no_test_module_imports_another() -> None:
    """A helper two test modules need lives in tests/support (or a conftest), not in one of them, where it changes
    with that module's tests and whoever runs the other module has to know."""
    importing = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                if name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_"):
                    importing.setdefault(str(path.relative_to(ROOT)), []).append(name)
    assert importing == {}


def test_a_test_not_marked_voice_cannot_use_the_sandboxs_voice(monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox import Sandbox
    from tests.support.lanes import forbid_voice

    forbid_voice(monkeypatch, "tests/e2e/test_x.py::test_y")
    with pytest.raises(pytest.fail.Exception, match=r"test_y uses the sandbox's voice.*mark it @pytest.mark.voice"):
        Sandbox.join_voice(None, "alice", "Lounge")  # type: ignore[arg-type]  # refused before it would start
