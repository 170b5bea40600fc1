"""Is Ollama ready for the bot? Reachable, with the chat and embedding models pulled: asked at start-up (one log line
when not, the bot starts anyway) and by ``main.py doctor`` (one line per part).

No discord imports; one ``/api/tags`` request through ``LLMClient.list_models``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from services.chat.llm import LLMClient, normalize_model
from services.errors import ServiceError


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One model the bot needs: ``role`` ("chat model", "embedding model"), its configured ``name``, whether it is
    pulled on the server (a name without a tag means ``:latest``, as in Ollama)."""

    role: str
    name: str
    pulled: bool

    @property
    def fix(self) -> str:
        """The command that pulls it, e.g. "ollama pull llama3.2"."""
        return f"ollama pull {self.name}"


@dataclass(frozen=True, slots=True)
class OllamaStatus:
    """What ``check_ollama`` found.

    host: the server, as shown to people (``LLMClient.display_host``: no password).
    error: why Ollama could not be used (one sentence saying what to do), or None when it answered.
    model_count: how many models are pulled (0 when it did not answer).
    models: the chat and embedding model, pulled or not (empty when it did not answer).
    """

    host: str
    error: str | None
    model_count: int = 0
    models: tuple[ModelStatus, ...] = ()

    @property
    def missing(self) -> list[ModelStatus]:
        return [model for model in self.models if not model.pulled]

    def problem(self) -> str | None:
        """One line saying what is missing and the command that fixes it, or None when Ollama is ready."""
        if self.error is not None:
            return f"{self.error.rstrip('.')}; until then the bot cannot answer."
        missing = self.missing
        if not missing:
            return None
        names = " and ".join(f"the {model.role} `{model.name}`" for model in missing)
        fix = " && ".join(model.fix for model in missing)
        return f"Ollama at {self.host} does not have {names}; run `{fix}`."


async def check_ollama(llm: LLMClient, *, chat_model: str, embed_model: str, timeout_s: float) -> OllamaStatus:
    """Ask ``llm``'s server which models it has, within ``timeout_s`` seconds (on top of the client's own timeout),
    and compare them with ``chat_model`` and ``embed_model`` (Ollama names such as "llama3.2"). Never raises a
    ServiceError: an unreachable, failing or silent server is reported in ``OllamaStatus.error``."""
    try:
        async with asyncio.timeout(timeout_s):
            pulled = {normalize_model(name) for name in await llm.list_models()}
    except ServiceError as exc:
        return OllamaStatus(llm.display_host, exc.user_message)
    except TimeoutError:
        silent = (f"Ollama at {llm.display_host} did not answer within {timeout_s:g} s; check that it is running "
                  "(`ollama serve`) and that OLLAMA_HOST is right.")
        return OllamaStatus(llm.display_host, silent)
    models = tuple(ModelStatus(role, name, normalize_model(name) in pulled)
                   for role, name in (("chat model", chat_model), ("embedding model", embed_model)))
    return OllamaStatus(llm.display_host, None, len(pulled), models)
