"""Settings: defaults, validation messages, and .env.example mirroring every setting."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import ConfigError, Settings, env_example, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_invalid_value_names_setting_value_and_range(monkeypatch):
    monkeypatch.setenv("STREAM_EDIT_INTERVAL_S", "0.01")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "STREAM_EDIT_INTERVAL_S" in message and "0.01" in message and "0.2" in message


def test_admin_roles_parse_from_comma_list(monkeypatch):
    monkeypatch.setenv("ADMIN_ROLE_IDS", "12, 34")
    assert load_settings().ADMIN_ROLE_IDS == [12, 34]


def test_empty_values_mean_unset(monkeypatch):
    monkeypatch.setenv("DISCORD_TOKEN", "")
    monkeypatch.setenv("DEV_GUILD_ID", "")
    settings = load_settings()
    assert settings.DISCORD_TOKEN is None and settings.DEV_GUILD_ID is None


def test_env_example_lists_every_setting_with_a_description():
    text = (ROOT / ".env.example").read_text()
    assert text == env_example(), "regenerate it: python config.py > .env.example"
    for name, field in Settings.model_fields.items():
        assert f"\n{name}=" in text and field.description, name


def test_invalid_setting_stops_start_with_exit_code_2_and_no_traceback(tmp_path):
    env = {**os.environ, "LLM_TIMEOUT_S": "-3", "DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "doctor"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "LLM_TIMEOUT_S" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("setting,value", [
    ("OLLAMA_HOST", "http://127.0.0.1:notaport"),
    ("OLLAMA_HOST", "http://exa mple:1x"),
    ("OLLAMA_HOST", "http://"),
    ("CHROMA_HOST", "chroma:8000"),
    ("CHROMA_HOST", "http://127.0.0.1:8000"),
])
def test_malformed_service_url_stops_start_with_one_line(tmp_path, setting, value):
    env = {**os.environ, setting: value, "DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "doctor"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and setting in result.stderr and "Traceback" not in result.stderr


def test_service_urls_accept_what_ollama_and_chroma_accept():
    settings = load_settings(OLLAMA_HOST="127.0.0.1:11434", CHROMA_HOST="chroma.internal")
    assert settings.OLLAMA_HOST == "http://127.0.0.1:11434"  # a bare host:port, as OLLAMA_HOST is often written
    assert settings.CHROMA_HOST == "chroma.internal"
    assert load_settings(OLLAMA_HOST="https://gpu.example/ollama/").OLLAMA_HOST == "https://gpu.example/ollama"
