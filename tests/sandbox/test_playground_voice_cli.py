"""`main.py playground --record DIR --no-dave` as a person runs it: hear what the bot said, with DAVE off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import soundfile

from tests.support.playground import finish, playground, read_until

pytestmark = pytest.mark.voice  # paced in real time: run alone (tests/support/lanes.py)


async def say(process: Any, line: str) -> None:
    process.stdin.write(line.encode() + b"\n")
    await process.stdin.drain()


async def test_record_writes_what_the_bot_said_and_no_dave_runs_version_0(tmp_path, ollama):
    seen: list[dict[str, Any]] = []
    async with playground(tmp_path, ollama.url, "--record", "rec", "--no-dave") as process:
        await read_until(process, seen, lambda event: event["event"] == "ready")
        await say(process, "join voice")
        await say(process, "/join")
        await read_until(process, seen, lambda event: str(event.get("content")).startswith("Joined"))
        await say(process, "/speak text: Hello there, this is a recorded test.")
        await read_until(process, seen, lambda event: event["event"] == "voice_audio")
        process.stdin.close()  # end of input: the playground stops
        stderr = await finish(process, seen)
    assert process.returncode == 0, (seen[-3:], stderr[-2000:])
    [spurt] = [e for e in seen if e["event"] == "voice_audio"]
    assert spurt["member"] == "Assistant" and spurt["e2ee"] is False and spurt["seconds"] > 1
    path = tmp_path / spurt["file"]  # relative to the playground's folder, as given
    assert Path(spurt["file"]).parent == Path("rec")
    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (48_000, 2, "PCM_16")
    assert info.duration == pytest.approx(spurt["seconds"])


async def test_record_into_something_that_is_not_a_folder_is_refused(tmp_path, ollama):
    (tmp_path / "taken").write_text("a file")
    async with playground(tmp_path, ollama.url, "--record", "taken/rec") as process:
        stderr = await finish(process, [])
    assert process.returncode == 2
    assert "error: --record: cannot record into 'taken/rec': Not a directory" in stderr
