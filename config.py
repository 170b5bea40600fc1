"""Settings: every token, URL, model, limit, cooldown, timeout and path of the bot.

Values come from the environment, then from ``.env`` in the working directory, then from the defaults
below; ``.env.example`` mirrors this file. ``load_settings`` validates them and turns the first invalid
value into a ``ConfigError`` whose message names the setting, the value and the accepted range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AnyHttpUrl, Field, SecretStr, TypeAdapter, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ConfigError(Exception):
    """An invalid setting; the message is one sentence fit to print instead of a traceback."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)

    # Discord
    DISCORD_TOKEN: SecretStr | None = Field(None, description="Bot token; when unset the bot runs against the local sandbox.")
    DEV_GUILD_ID: int | None = Field(None, ge=0, description="Guild to sync commands to during development (instant); global sync when unset.")
    ADMIN_ROLE_IDS: Annotated[list[int], NoDecode] = Field(default_factory=list, description="Comma-separated role ids that count as admin besides Manage Server.")

    # Ollama
    OLLAMA_HOST: str = Field("http://127.0.0.1:11434", description="URL of the Ollama server (http://host:port; a bare host:port means http).")
    CHAT_MODEL: str = Field("llama3.2", min_length=1, description="Ollama model used for chat answers, unless /settings model sets another for the guild or channel.")
    EMBED_MODEL: str = Field("nomic-embed-text", min_length=1, description="Ollama model used for document embeddings.")
    LLM_TIMEOUT_S: float = Field(60.0, gt=0, le=3600, description="Seconds to wait for Ollama to connect or send the next token.")
    LLM_NUM_CTX: int = Field(8192, ge=512, le=1_048_576, description="Context window (tokens) passed as options.num_ctx on every request.")
    LLM_KEEP_ALIVE: str = Field("30m", description="How long Ollama keeps the model loaded after a request (e.g. 30m, 1h, -1 = always). Unloading also empties its prompt cache, so the next question is read whole again: on a CPU-only machine, keep it longer than your server's quiet spells.")
    LLM_MAX_CONCURRENCY: int = Field(1, ge=1, le=256, description="Chat answers requested from Ollama at once; set it to Ollama's OLLAMA_NUM_PARALLEL (default 1). The others wait in the bot's fair queue (members take turns, voice first).")
    LLM_QUEUE_MAX: int = Field(25, ge=0, le=10_000, description="Requests that may wait for the model across the bot; more are refused with 'try again in a few minutes' (0: refuse while LLM_MAX_CONCURRENCY answers are being written).")
    LLM_QUEUE_FAIR: bool = Field(True, description="Serve waiting members in turn (round robin) so one member's backlog never delays the others; false serves in arrival order, as Ollama does.")
    EMBED_BATCH_SIZE: int = Field(32, ge=1, le=1024, description="Texts per /api/embed request.")
    SYSTEM_PROMPT: str = Field(
        "You are a helpful assistant in a Discord server. Answer concisely and use Markdown sparingly.",
        description="System prompt of every conversation, unless /settings persona sets another for the guild or channel.",
    )

    # Chat
    HISTORY_TOKEN_BUDGET: int = Field(3000, ge=100, le=1_000_000, description="Tokens of past conversation sent with each message (estimated at 4 characters a token).")
    HISTORY_MAX_MESSAGES: int = Field(200, ge=2, le=100_000, description="Messages kept per channel conversation in the database; older ones are pruned.")
    SESSION_MAX: int = Field(1000, ge=1, le=1_000_000, description="Chat sessions held in memory at once; the least recently used is dropped.")
    SESSION_TTL_S: float = Field(3600.0, gt=0, description="Seconds after which an idle in-memory chat session expires (history stays on disk).")
    THREAD_MEMORY_DAYS: float = Field(30.0, gt=0, le=3650, description="Days a thread the bot started is remembered after its last answer; after that it answers there only when mentioned.")
    THREADS_MAX: int = Field(10_000, ge=1, le=10_000_000, description="Threads the bot started that it remembers at once; the least recently active is forgotten first.")
    ATTACHMENT_MAX_BYTES: int = Field(8_000_000, ge=1, le=100_000_000, description="Largest attachment (text file or image) read as context for an answer, in bytes.")
    STREAM_EDIT_INTERVAL_S: float = Field(1.0, ge=0.2, le=10, description="Minimum seconds between two edits of a streamed answer.")
    CHAT_MAX_CHARS: int = Field(4000, ge=1, le=6000, description="Maximum length of a /chat message or a mention.")
    PERSONA_MAX_CHARS: int = Field(2000, ge=1, le=6000, description="Maximum length of a persona (system prompt) set with /settings persona.")
    ASK_MAX_CHARS: int = Field(2000, ge=1, le=6000, description="Maximum length of an /ask or /docs question.")
    CHAT_QUEUE_MAX: int = Field(5, ge=0, le=50, description="Messages (/chat, mentions) that may wait per channel while an answer is being written; more are refused with 'try again shortly' (0: refuse while busy).")
    CHAT_COOLDOWN_S: float = Field(5.0, ge=0, le=3600, description="Per-member cooldown of /chat, /ask and mentions, in seconds.")
    DOCS_COOLDOWN_S: float = Field(10.0, ge=0, le=3600, description="Per-member cooldown of /docs commands, in seconds.")
    ADMIN_COOLDOWN_S: float = Field(30.0, ge=0, le=3600, description="Per-guild cooldown of /docs reload, add and remove, in seconds.")
    SETTINGS_COOLDOWN_S: float = Field(2.0, ge=0, le=3600, description="Per-member cooldown of each admin settings command (/settings ..., /voice autospeak, /forget channel), in seconds; the chat cooldown does not apply to them.")

    # Documents and index
    DATA_DIR: Path = Field(Path("data"), description="Runtime data: database, index, models.")
    DOCUMENTS_DIR: Path = Field(Path("data/documents"), description="Documents root: <guild_id>/ per guild and global/ for every guild.")
    CHROMA_HOST: str | None = Field(None, description="ChromaDB server host name or address (no scheme, no port); unset uses an embedded index under DATA_DIR.")
    CHROMA_WORKER_PROCESS: bool = Field(True, description="Run the embedded ChromaDB in a child process so index writes never stall the bot.")
    CHROMA_PORT: int = Field(8000, ge=1, le=65535, description="ChromaDB server port, with CHROMA_HOST.")
    CHROMA_TIMEOUT_S: float = Field(30.0, gt=0, le=600, description="Seconds to wait for the ChromaDB server to answer a request, with CHROMA_HOST.")
    DOC_MAX_BYTES: int = Field(5_000_000, ge=1, le=500_000_000, description="Largest document file indexed or accepted by /docs add, in bytes.")
    CHUNK_MAX_CHARS: int = Field(1200, ge=200, le=20_000, description="Largest chunk of a document, in characters.")
    CHUNK_OVERLAP_CHARS: int = Field(150, ge=0, le=5000, description="Characters repeated between consecutive chunks of a long section.")
    RETRIEVAL_TOP_K: int = Field(5, ge=1, le=50, description="Passages retrieved for a grounded answer.")
    RETRIEVAL_MIN_SCORE: float = Field(0.02, ge=0, le=1, description="Fused score below which passages are not used to ground /ask.")

    # Voice
    PIPER_VOICE: str = Field("en_US-joe-medium", min_length=1, description="Piper voice: en_US-joe-medium (installed with the bot, verified, no download), another voice name such as en_US-lessac-medium (downloaded to MODELS_DIR when the network allows, else the bot speaks with en_US-joe-medium and logs how to get it) or a path to an .onnx file.")
    MODELS_DIR: Path = Field(Path("data/models"), description="Folder of downloaded voice and speech models.")
    SPEAK_MAX_CHARS: int = Field(1000, ge=1, le=6000, description="Maximum length of a /speak text.")
    VOICE_QUEUE_MAX: int = Field(10, ge=1, le=1000, description="Speech requests waiting per guild; more are refused.")
    VOICE_IDLE_TIMEOUT_S: float = Field(300.0, ge=5, le=86_400, description="Seconds the bot stays in a voice channel while alone or silent before leaving.")
    VOICE_COOLDOWN_S: float = Field(3.0, ge=0, le=3600, description="Per-member cooldown of the voice commands, in seconds.")
    VOICE_PRELOAD: bool = Field(False, description="Load the voice (Piper, a few seconds of CPU and about 100 MB of memory) at start, in the background (readiness does not wait for it), instead of when the bot joins a voice channel; either way a /speak after /join does not wait for it.")

    # Listening (speech to text)
    WHISPER_MODEL: str = Field("tiny.en", min_length=1, description="faster-whisper model: tiny.en (installed with the bot, verified, no download), another size name such as base.en or small.en (downloaded to MODELS_DIR when the network allows, else the bot listens with tiny.en and logs how to get it) or a path to a converted model folder.")
    WHISPER_COMPUTE_TYPE: str = Field("int8", pattern=r"^(int8|int8_float32|float32)$", description="CTranslate2 compute type on the CPU.")
    STT_MAX_NO_SPEECH_PROB: float = Field(0.6, ge=0, le=1, description="Segments Whisper thinks are more likely silence than this are dropped.")
    STT_MIN_AVG_LOGPROB: float = Field(-1.0, ge=-10, le=0, description="Segments with a lower average log-probability (unsure guesses, noise) are dropped.")
    STT_SHORT_WINDOW: bool = Field(True, description="Decode utterances of up to 25 s of speech in a Whisper window of their length plus 5 s (at least 10 s), greedily, instead of the full 30 s window with a beam of 5: about 4x faster on short questions at a similar word error rate (bench/bench_stt.py). Off: the full window.")
    STT_VOCABULARY_BIAS: bool = Field(True, description="Bias speech recognition towards the bot's name, the wake words and the distinctive terms of the server's indexed documents (product and setting names), recomputed at each /docs reload.")
    ENDPOINT_SILENCE_MS: int = Field(850, ge=100, le=5000, description="Milliseconds without voice packets that end a member's utterance, unless the words heard decide sooner or later (ENDPOINT_COMPLETE_MS, ENDPOINT_INCOMPLETE_MS): then only while they are still being transcribed, or when Whisper doubts words that read as finished (ENDPOINT_SURE_NO_SPEECH_PROB). Longer than a pause mid-sentence (300-800 ms), short enough that a doubted question is still answered within a second. About 600 without the words.")
    ENDPOINT_COMPLETE_MS: int = Field(650, ge=0, le=5000, description="Milliseconds of silence that end a member's turn when the words heard on the ENDPOINT_SPECULATE_MS silence read as a finished request; 0 turns the end of turn from the words off (ENDPOINT_SILENCE_MS for every turn).")
    ENDPOINT_INCOMPLETE_MS: int = Field(1300, ge=100, le=10000, description="Milliseconds of silence that end a member's turn when the words heard on the ENDPOINT_SPECULATE_MS silence trail off ('What is the'); ENDPOINT_SILENCE_MS applies while they are not transcribed yet.")
    ENDPOINT_SURE_NO_SPEECH_PROB: float = Field(0.08, ge=0, le=1, description="Words that read as a finished request end the turn after ENDPOINT_COMPLETE_MS only when Whisper's probability that the audio held no speech is at most this; above it the bot is unsure (a member who broke off mid-sentence: mostly 0.08-0.3 with the bundled tiny.en, whole questions mostly under 0.06) and ENDPOINT_SILENCE_MS ends the turn. 1 turns this off.")
    ENDPOINT_SPECULATE_MS: int = Field(150, ge=0, le=5000, description="Milliseconds of silence after which a member's utterance-so-far is transcribed and answered speculatively, before ENDPOINT_SILENCE_MS confirms the end of the turn (the work is discarded if they speak again, and nothing is posted or spoken before the confirmation); 0 turns it off. Must be less than ENDPOINT_SILENCE_MS.")
    ENDPOINT_CHECK_MS: int = Field(20, ge=5, le=500, description="Milliseconds between the checks for silences that end (or tentatively end) a member's turn; Discord sends nothing during silence, so a silence is noticed up to this late.")
    PRE_ROLL_MS: int = Field(200, ge=0, le=2000, description="Milliseconds of audio kept before the first voiced packet of an utterance.")
    MIN_UTTERANCE_S: float = Field(0.4, ge=0, le=10, description="Shorter utterances (coughs, clicks) are dropped.")
    MAX_UTTERANCE_S: float = Field(15.0, ge=1, le=120, description="Longer utterances are cut and transcribed in pieces of this length.")
    VOICE_WAKE_WORDS: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Comma-separated names the bot answers to in voice (e.g. assistant); empty: it answers everything it hears.")
    BARGE_IN: str = Field("stop", pattern=r"^(stop|off)$", description="stop: a member talking over the bot for 300 ms stops its answer; off: the bot finishes.")
    VOICE_STREAM_ANSWERS: bool = Field(True, description="Speak each sentence of a voice answer as soon as the LLM completes it; false waits for the whole answer.")
    VOICE_FIRST_CLAUSE_WORDS: int = Field(4, ge=0, le=50, description="A spoken answer's first sentence is sent to the speech synthesizer in two pieces when it has a comma, semicolon or colon after at least this many words, so the bot starts speaking sooner; 0 turns it off (whole sentences).")
    VOICE_POST_TRANSCRIPTS: bool = Field(True, description="Post transcripts and spoken answers to the text channel where /listen was used.")
    VOICE_TRANSCRIPT_CHANNEL_ID: int | None = Field(None, ge=0, description="Post them to this text channel instead (same guild); unset: where /listen was used.")
    STORE_VOICE_TRANSCRIPTS: bool = Field(False, description="Keep voice conversations (transcripts and answers) in the database; off: in memory only, gone when the bot leaves.")
    STT_QUEUE_MAX: int = Field(4, ge=1, le=100, description="Utterances waiting for transcription per guild; more are dropped and reported.")

    # Lifecycle
    SHUTDOWN_TIMEOUT_S: float = Field(10.0, gt=0, le=300, description="Seconds allowed for a clean shutdown before tasks are abandoned.")
    SHUTDOWN_GRACE_S: float = Field(10.0, ge=0, le=300, description="At shutdown (SIGTERM, Ctrl-C), seconds the answers the model already works on may take to finish before they are cut and marked interrupted; questions still waiting for the model are kept for after the restart. Comes before SHUTDOWN_TIMEOUT_S.")
    LOG_LEVEL: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="Log level: DEBUG, INFO, WARNING or ERROR.")

    @field_validator("ADMIN_ROLE_IDS", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("VOICE_WAKE_WORDS", mode="before")
    @classmethod
    def _split_words(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("OLLAMA_HOST")
    @classmethod
    def _check_ollama_url(cls, value: str) -> str:
        # Like Ollama's own clients, a bare "host:port" means http://host:port.
        url = value.strip() if "://" in value else f"http://{value.strip()}"
        _parse_http_url(url, example="http://127.0.0.1:11434")
        return url.rstrip("/")

    @field_validator("CHROMA_HOST")
    @classmethod
    def _check_chroma_host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        try:
            host = _parse_http_url(f"http://{value}", example="").host
        except ValueError:
            host = None
        if host is None or host != value.lower():
            raise ValueError("must be a host name or address such as 127.0.0.1, without http:// or a port "
                             "(the port goes in CHROMA_PORT)")
        return value

    @field_validator("CHUNK_OVERLAP_CHARS")
    @classmethod
    def _overlap_below_chunk(cls, value: int, info: object) -> int:
        max_chars = getattr(info, "data", {}).get("CHUNK_MAX_CHARS")
        if max_chars is not None and value >= max_chars // 2:
            raise ValueError(f"must be less than half of CHUNK_MAX_CHARS ({max_chars})")
        return value

    @field_validator("ENDPOINT_SPECULATE_MS")
    @classmethod
    def _speculate_before_silence(cls, value: int, info: object) -> int:
        silence_ms = getattr(info, "data", {}).get("ENDPOINT_SILENCE_MS")
        if value and silence_ms is not None and value >= silence_ms:
            raise ValueError(f"must be less than ENDPOINT_SILENCE_MS ({silence_ms}), or 0 to turn it off")
        return value

    @property
    def db_path(self) -> Path:
        return self.DATA_DIR / "bot.sqlite3"

    @property
    def index_dir(self) -> Path:
        return self.DATA_DIR / "index"


_HTTP_URL = TypeAdapter(AnyHttpUrl)


def _parse_http_url(url: str, example: str) -> AnyHttpUrl:
    """Parse an http(s) URL with pydantic (RFC 3986 / WHATWG rules); raises ValueError naming the defect."""
    try:
        parsed = _HTTP_URL.validate_python(url)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Input should be a valid URL, ")
        raise ValueError(f"is not a valid http(s) URL ({reason}); use e.g. {example}") from None
    if parsed.port == 0:
        raise ValueError(f"is not a valid http(s) URL (port 0); use e.g. {example}")
    return parsed


def _describe(error: dict) -> str:
    name = ".".join(str(part) for part in error.get("loc", ())) or "settings"
    value = error.get("input")
    reason = error.get("msg", "is invalid")
    reason = reason.removeprefix("Value error, ")
    return f"Invalid setting {name}={value!r}: {reason}."


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings; raises ConfigError naming the first invalid setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0])) from None


def env_example() -> str:
    """The text of ``.env.example``: every setting with its description and default."""
    lines = ["# Every setting of the bot, with its default. Copy to .env and edit; the environment wins over .env.", ""]
    for name, field in Settings.model_fields.items():
        default = "" if field.default_factory is not None or field.default is None else field.default
        value = default.as_posix() if isinstance(default, Path) else str(default)
        if " " in value:
            value = f'"{value}"'
        lines += [f"# {field.description}", f"{name}={value}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(env_example(), end="")
