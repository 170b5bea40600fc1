"""Typed errors raised by the services.

Every error a user can cause or meet carries ``user_message``: one sentence saying what went wrong and
what to do. The command tree (``bot/tree.py``) shows that sentence ephemerally; anything that is not a
``ServiceError`` is an internal error and is logged with an error id instead.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error whose message is meant for the member who ran the command."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class BackendUnavailable(ServiceError):
    """A backend (Ollama, ChromaDB) could not be reached or did not answer within its timeout."""


class ModelNotFound(ServiceError):
    """The named model is not pulled on the Ollama server."""

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` is not available on the Ollama server; run `ollama pull {model}`.")
        self.model = model


class InvalidInput(ServiceError):
    """The input of a command cannot be used (bad file name, unsupported type, too large...)."""


class IndexMismatch(ServiceError):
    """The stored index was built with another embedding model or dimension than the configured one."""


class NotFound(ServiceError):
    """A named thing (a document, a conversation) does not exist."""
