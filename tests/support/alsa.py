"""The ALSA channel-test recordings of ../shared/speech/alsa (a voice naming each speaker: "Front Left"...)."""

from __future__ import annotations

from pathlib import Path

ALSA_DIR = Path(__file__).resolve().parents[3] / "shared" / "speech" / "alsa"

_SPELLINGS = {"center": ("center", "centre")}  # Whisper writes either


def side_named(channel: str, transcript: str) -> bool:
    """Whether ``transcript`` names the side of ``channel``, the recording's name ("Rear_Center" -> "center", in
    either spelling)."""
    side = channel.split("_")[-1].lower()
    return any(spelling in transcript.lower() for spelling in _SPELLINGS.get(side, (side,)))
