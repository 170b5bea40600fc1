"""The command line: `main.py index` and `main.py doctor`, run as a server owner would."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.fakes.hf_hub import FakeHub

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_DOCS = ROOT / "tests" / "fixtures" / "docs"


async def run_main(tmp_path: Path, ollama_url: str, *args: str, **settings: str) -> tuple[int, str, str]:
    env = {**os.environ, "OLLAMA_HOST": ollama_url, "DATA_DIR": str(tmp_path / "data"),
           "DOCUMENTS_DIR": str(tmp_path / "documents"), **settings}
    env.pop("DISCORD_TOKEN", None)
    for variable in ("ORT_DISABLE_TELEMETRY", "HF_HUB_DISABLE_TELEMETRY"):
        env.pop(variable, None)  # as in an owner's shell (importing our services sets them in this process)
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "main.py"), *args, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, stdout.decode(), stderr.decode()


async def test_index_command_reloads_incrementally(tmp_path, ollama):
    shutil.copytree(FIXTURE_DOCS, tmp_path / "documents" / "global")
    (tmp_path / "documents" / "global" / "blob.md").write_bytes(b"\x00\x01binary")
    code, out, err = await run_main(tmp_path, ollama.url, "index")
    assert code == 0, err
    assert "global: 4 added, 0 updated, 0 removed, 0 unchanged, 1 skipped" in out
    assert "skipped blob.md: binary" in out
    calls = ollama.embed_calls
    code, out, _ = await run_main(tmp_path, ollama.url, "index")
    assert "global: 0 added, 0 updated, 0 removed, 4 unchanged, 1 skipped" in out
    assert ollama.embed_calls == calls


async def test_index_command_reports_ollama_down(tmp_path):
    (tmp_path / "documents" / "global").mkdir(parents=True)
    (tmp_path / "documents" / "global" / "a.md").write_text("# A\n\nSome text.\n")
    code, _, err = await run_main(tmp_path, "http://127.0.0.1:9", "index")
    assert code == 1 and "could not be reached" in err and "Traceback" not in err


@pytest.mark.models
async def test_doctor_says_what_to_fix(tmp_path, ollama):
    ollama.models = ["llama3.2:latest"]  # the embedding model is not pulled
    code, out, _ = await run_main(tmp_path, ollama.url, "doctor")
    assert code == 1
    assert "OK   Ollama: reachable" in out
    assert "FIX  Ollama embedding model: `nomic-embed-text` is missing: run `ollama pull nomic-embed-text`" in out
    assert "FIX  Discord token: not set" in out
    assert "OK   ChromaDB" in out
    assert "FIX  Documents" in out
    assert "OK   Speech (TTS): Piper voice en_US-joe-medium (bundled, md5 verified)" in out
    assert "OK   Speech recognition (STT): Whisper model tiny.en (bundled, sha256 verified)" in out


@pytest.mark.models
async def test_doctor_never_prints_the_password_in_ollama_host(tmp_path, ollama):
    # A reverse proxy with basic auth in front of Ollama: the owner may paste doctor's output in a support channel.
    with_password = ollama.url.replace("http://", "http://owner:s3cret-pass@")
    code, out, err = await run_main(tmp_path, with_password, "doctor")
    assert f"OK   Ollama: reachable at {ollama.url} " in out
    assert "s3cret-pass" not in out + err


@pytest.mark.models
async def test_speech_models_send_no_telemetry(tmp_path, ollama):
    # ONNX Runtime (Piper; faster-whisper's VAD) sends usage events to Microsoft from Linux since 1.29, keeping a
    # device id and an offline event cache under the home folder to send them once the network is back.
    home = tmp_path / "home"
    code, out, _ = await run_main(tmp_path, ollama.url, "doctor", HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    assert "OK   Speech (TTS): Piper voice en_US-joe-medium (bundled, md5 verified)" in out  # the voice ran
    assert not (home / ".cache" / "Microsoft").exists()


@pytest.mark.models
async def test_named_models_are_looked_up_with_no_other_request_to_the_hub(tmp_path, ollama):
    # huggingface_hub 2.4 fetched /api/agent-harnesses (3 s timeout) before its first lookup, even a local one: a Hub
    # that never answers made a named voice fall back to the bundled one after 6 s instead of 3.
    with FakeHub("serve") as hub:
        code, out, _ = await run_main(tmp_path, ollama.url, "doctor", PIPER_VOICE="en_US-lessac-medium",
                                      WHISPER_MODEL="base.en", HF_ENDPOINT=hub.url)
    assert "FIX  Speech (TTS): speaking with Piper voice en_US-joe-medium (bundled, md5 verified) for now." in out
    assert hub.requests and all(request == "HEAD /" or "lessac" in request or "base.en" in request
                                for request in hub.requests), hub.requests


@pytest.mark.models
async def test_doctor_says_the_bundled_models_stand_in_for_named_ones_it_cannot_get(tmp_path, ollama):
    # HF_ENDPOINT: the Hub is a loopback port nothing listens on (as with no network, answered at once).
    code, out, _ = await run_main(tmp_path, ollama.url, "doctor", PIPER_VOICE="en_US-lessac-medium",
                                  WHISPER_MODEL="base.en", HF_ENDPOINT="http://127.0.0.1:9")
    assert code == 1
    assert ("FIX  Speech (TTS): speaking with Piper voice en_US-joe-medium (bundled, md5 verified) for now. The Piper "
            "voice `en_US-lessac-medium` is not available (the Hugging Face Hub at http://127.0.0.1:9 cannot be "
            "reached: ConnectError") in out
    assert "python -m piper.download_voices en_US-lessac-medium --data-dir data/models" in out
    assert ("FIX  Speech recognition (STT): listening with Whisper model tiny.en (bundled, sha256 verified) for now. "
            "The Whisper model `base.en` is not available") in out


async def test_index_command_names_links_it_does_not_follow(tmp_path, ollama):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "passwd").write_text("root:x:0:0:SECRET_PASSWORD_LINE\n")
    folder = tmp_path / "documents" / "global"
    folder.mkdir(parents=True)
    (folder / "guide.md").write_text("# Guide\n\nSome text.\n")
    (folder / "passwd.txt").symlink_to(tmp_path / "outside" / "passwd")
    code, out, err = await run_main(tmp_path, ollama.url, "index")
    assert code == 0, err
    assert "global: 1 added, 0 updated, 0 removed, 0 unchanged, 1 skipped" in out
    assert "skipped passwd.txt: link to a file outside the documents folder" in out


@pytest.mark.models
async def test_doctor_names_a_chroma_server_that_never_answers(tmp_path, ollama, silent_server):
    code, out, _ = await run_main(tmp_path, ollama.url, "doctor", CHROMA_HOST="127.0.0.1",
                                  CHROMA_PORT=str(silent_server), CHROMA_TIMEOUT_S="1")
    assert code == 1
    where = f"ChromaDB server at 127.0.0.1:{silent_server}"
    assert f"FIX  ChromaDB: The document index ({where}) did not answer within 1 s" in out
