"""The layering rules of docs/architecture.md, checked on the source (AST) rather than hoped for.

- ``services/`` is plain async Python: it never imports discord, davey, ``bot``, ``cogs`` or ``sandbox``;
- ``bot/`` never imports ``cogs`` or ``sandbox``; a cog never imports another cog;
- the product (``bot``, ``cogs``, ``services``, ``config``, ``main``) never imports ``tests`` or ``bench``, and
  only ``main.py`` (the playground) imports ``sandbox``;
- the sandbox imports only leaf utilities of the product (``SANDBOX_MAY_IMPORT``);
- ``services/`` is split into domains (``DOMAINS``): each imports only the domains its row names, besides the shared
  kernel (``SHARED_KERNEL``) and ``config``; the shared kernel imports no domain; every other module of ``services/``
  lives in a domain;
- no two modules of the project import each other, not even through type-only imports (under
  ``if TYPE_CHECKING:``): each piece takes the narrow thing it needs, never the whole bot.

Each rule is also run on a small tree with a deliberately bad import, so a checker that sees nothing fails here.
"""

from __future__ import annotations

import ast
import gc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "cogs", "services", "sandbox", "tests", "bench")
TOP_MODULES = ("config", "main")
PRODUCT = ("bot", "cogs", "services", "config", "main")
SANDBOX_MAY_IMPORT = ("bot.opus", "services.speech.audio", "services.speech.speech_text", "services.errors",
                      "services.files")

# The domains of services/: domain -> the other domains it may import. Each may also import the shared kernel and
# config; nothing else of services/ is a module of its own.
DOMAINS: dict[str, tuple[str, ...]] = {
    "storage": (),  # the database and its stores: guild settings, the bot's threads, the questions kept at shutdown
    "knowledge": (),  # the documents, the index (ChromaDB, lexical), their vocabulary
    "speech": (),  # audio, speech to text, text to speech, their models, Whisper's prompt and window
    "chat": ("storage",),  # the LLM and its queue, thinking, attachments, conversations, chat settings, grounding
    "voice": ("speech", "chat"),  # endpointing, turn taking, the spoken turns; storage only through chat
}
SHARED_KERNEL = ("services.errors", "services.files")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted ("cogs.chat")
    target: str  # the imported module, dotted and resolved ("bot.streaming", "discord.ext")
    line: int
    type_checking: bool  # under ``if TYPE_CHECKING:``: never run


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(root: Path) -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((root / package).rglob("*.py"))
    for name in TOP_MODULES:
        if (root / f"{name}.py").exists():
            yield root / f"{name}.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(root: Path, path: Path, known: set[str]) -> list[Import]:
    """Every import in ``path`` (module level, in functions, under TYPE_CHECKING), resolved to dotted names."""
    module = module_name(root, path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit_stmt(stmt, True)
                for stmt in child.orelse:
                    visit_stmt(stmt, type_checking)
                continue
            visit_stmt(child, type_checking)

    def visit_stmt(node: ast.AST, type_checking: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(module, alias.name, node.lineno, type_checking))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                target = candidate if candidate in known else base  # "from pkg import module" names the module
                found.append(Import(module, target, node.lineno, type_checking))
        else:
            visit(node, type_checking)

    visit(parse_source(path), False)
    return found


def parse_source(path: Path) -> ast.Module:
    """``ast.parse`` with the garbage collector paused. In CPython 3.11 a finalizer run by the collector in the
    middle of a parse (say, asyncio logging "Task exception was never retrieved" for an earlier test's task)
    formats a traceback, which parses too and upsets the parser's shared recursion counter: "SystemError: AST
    constructor recursion depth mismatch" (python/cpython#106905 and its kin), as seen on CI."""
    source = path.read_text(encoding="utf-8")
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source, filename=str(path))
    finally:
        if was_enabled:
            gc.enable()


def all_imports(root: Path) -> list[Import]:
    files = list(source_files(root))
    known = {module_name(root, path) for path in files}
    return [imp for path in files for imp in imports_of(root, path, known)]


def _under(name: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def layering_violations(imports: list[Import]) -> list[str]:
    """One line per import that breaks a layering rule (see the module docstring)."""
    bad: list[str] = []
    for imp in imports:
        where = f"{imp.module}:{imp.line} imports {imp.target}"
        if _under(imp.module, "services") and _under(imp.target, ("discord", "davey", "bot", "cogs", "sandbox")):
            bad.append(f"{where}: services must not depend on Discord, the bot, cogs or the sandbox")
        if _under(imp.module, "bot") and _under(imp.target, ("cogs", "sandbox")):
            bad.append(f"{where}: bot/ must not import cogs or the sandbox")
        if _under(imp.module, "cogs") and _under(imp.target, "cogs") and imp.target != imp.module:
            bad.append(f"{where}: a cog must not import another cog")
        if _under(imp.module, PRODUCT) and _under(imp.target, ("tests", "bench")):
            bad.append(f"{where}: the product must not import tests or benchmarks")
        if _under(imp.module, PRODUCT) and imp.module != "main" and _under(imp.target, "sandbox"):
            bad.append(f"{where}: only main.py (the playground) may import the sandbox")
        if _under(imp.module, "sandbox") and _under(imp.target, PRODUCT) and imp.target not in SANDBOX_MAY_IMPORT:
            bad.append(f"{where}: the sandbox may import only {', '.join(SANDBOX_MAY_IMPORT)} of the product")
        if _under(imp.module, "tests") and _under(imp.target, "bench"):
            bad.append(f"{where}: tests must not import benchmarks")
        bad.extend(f"{where}: {why}" for why in _domain_violations(imp))
    return bad


def domain_of(module: str) -> str | None:
    """The domain of a module of services/ ("services.chat.llm" -> "chat"), None for any other module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "services" and parts[1] in DOMAINS else None


def _domain_violations(imp: Import) -> list[str]:
    if not _under(imp.module, "services") or not _under(imp.target, "services") or imp.target == "services":
        return []
    if _under(imp.module, SHARED_KERNEL):
        return [] if _under(imp.target, SHARED_KERNEL) else ["the shared kernel must not import a domain"]
    domain = domain_of(imp.module)
    target = domain_of(imp.target)
    if domain is None or target == domain or _under(imp.target, SHARED_KERNEL):
        return []  # a module outside the domains is reported by placement_violations
    allowed = DOMAINS[domain]
    if target not in allowed:
        may = f"only {' and '.join(allowed)} of the other domains" if allowed else "no other domain"
        return [f"the {domain} domain may import {may} (and {', '.join(SHARED_KERNEL)}, config)"]
    return []


def placement_violations(modules: set[str]) -> list[str]:
    """One line per module of services/ that is neither the shared kernel nor in a domain of ``DOMAINS``."""
    return [
        f"{module}: a module of services/ lives in a domain ({', '.join(DOMAINS)}) or is the shared kernel"
        for module in sorted(modules)
        if _under(module, "services") and module != "services" and module not in SHARED_KERNEL
        and domain_of(module) is None
    ]


def all_modules(root: Path) -> set[str]:
    return {module_name(root, path) for path in source_files(root)}


def import_cycles(imports: list[Import], *, count_type_only: bool = False) -> list[list[str]]:
    """Strongly connected groups (more than one module) of the project's import graph: the imports run at run time,
    and with ``count_type_only`` those under ``if TYPE_CHECKING:`` too."""
    modules = {imp.module for imp in imports}
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for imp in imports:
        if (count_type_only or not imp.type_checking) and imp.target in modules and imp.target != imp.module:
            graph[imp.module].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm (R. Tarjan, SIAM J. Comput. 1(2), 1972)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            connect(module)
    return groups


# -- the project ----------------------------------------------------------------------------------------------------


def test_the_project_follows_the_layering_rules() -> None:
    assert layering_violations(all_imports(ROOT)) == []


def test_every_module_of_services_lives_in_a_domain() -> None:
    assert placement_violations(all_modules(ROOT)) == []
    assert {domain_of(module) for module in all_modules(ROOT)} >= set(DOMAINS)  # no row names a domain that is gone


def test_no_loop_even_through_type_only_imports() -> None:
    assert import_cycles(all_imports(ROOT), count_type_only=True) == []


def test_the_checker_reads_the_real_tree() -> None:
    imports = all_imports(ROOT)
    targets = {(imp.module, imp.target) for imp in imports}
    assert ("cogs.chat", "bot.streaming") in targets  # a from-import of a name resolves to its module
    assert any(imp.module == "services.speech.stt" and imp.target == "config" and imp.type_checking for imp in imports)


# -- the checker on deliberately bad trees --------------------------------------------------------------------------


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for package in PACKAGES:
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()
    return root


@pytest.mark.parametrize(
    ("files", "rule"),
    [
        ({"services/chat/llm.py": "import discord\n"}, "services must not depend"),
        ({"services/chat/llm.py": "def f():\n    from bot.client import AssistantBot\n"}, "services must not depend"),
        ({"bot/client.py": "from cogs import chat\n", "cogs/chat.py": ""}, "bot/ must not import cogs"),
        ({"cogs/documents.py": "from cogs.chat import interaction_reply\n", "cogs/chat.py": ""}, "another cog"),
        ({"services/knowledge/index.py": "from tests.fakes.ollama import FakeOllama\n"}, "must not import tests"),
        ({"bot/client.py": "from sandbox import Sandbox\n"}, "bot/ must not import cogs or the sandbox"),
        ({"sandbox/rest.py": "from bot.client import AssistantBot\n"}, "the sandbox may import only"),
        ({"tests/test_tts.py": "from bench.loop_lag import LoopLagProbe\n"}, "tests must not import benchmarks"),
        # the domains of services/
        ({"services/storage/database.py": "from services.chat.llm import LLMClient\n", "services/chat/llm.py": ""},
         "the storage domain may import no other domain"),
        ({"services/knowledge/index.py": "from services.chat import llm\n", "services/chat/llm.py": ""},
         "the knowledge domain may import no other domain"),
        ({"services/knowledge/vocabulary.py": "from services.speech.prompt import fit_prompt\n"},
         "the knowledge domain may import no other domain"),
        ({"services/speech/stt.py": "from services.knowledge.vocabulary import Term\n"},
         "the speech domain may import no other domain"),
        ({"services/speech/tts.py": "def f():\n    from services.voice.endpointing import Utterance\n"},
         "the speech domain may import no other domain"),
        ({"services/speech/stt.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from services.knowledge import index\n"
        )}, "the speech domain may import no other domain"),  # a type is a dependency too
        ({"services/chat/grounding.py": "from services.knowledge.index import DocumentIndex\n"},
         "the chat domain may import only storage"),
        ({"services/chat/llm.py": "import services.speech.tts\n"}, "the chat domain may import only storage"),
        ({"services/chat/conversations.py": "from services.voice import voice_turns\n",
          "services/voice/voice_turns.py": ""}, "the chat domain may import only storage"),
        ({"services/voice/voice_turns.py": "from services.storage.database import Database\n"},
         "the voice domain may import only speech and chat"),
        ({"services/voice/voice_turns.py": "from services.knowledge.index import DocumentIndex\n"},
         "the voice domain may import only speech and chat"),
        ({"services/errors.py": "from services.speech.audio import FRAME_BYTES\n"}, "the shared kernel must not"),
        ({"services/files.py": "def f():\n    from services.storage import database\n",
          "services/storage/database.py": ""}, "the shared kernel must not"),
        ({"services/chat/llm.py": "from services.helpers import retry\n"}, "the chat domain may import only storage"),
    ],
)
def test_a_bad_import_is_reported(tmp_path: Path, files: dict[str, str], rule: str) -> None:
    root = write_tree(tmp_path, files)
    assert any(rule in line for line in layering_violations(all_imports(root)))


def test_allowed_imports_are_not_reported(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {
        "main.py": "from sandbox import Sandbox\n",
        "sandbox/voice.py": "from bot.opus import load_opus\nfrom services.speech.audio import FRAME_BYTES\n",
        "bench/bench_chat.py": "from tests.fakes.ollama import FakeOllama\n",
        "bot/opus.py": "", "services/speech/audio.py": "", "tests/fakes/ollama.py": "",
        # every domain: itself, the shared kernel and config; chat: storage; voice: speech and chat
        "services/storage/database.py": "from services.errors import ServiceError\nfrom services import files\n",
        "services/storage/bot_threads.py": "from services.storage.database import Database\n",
        "services/knowledge/index.py": "from services.files import write_json_atomic\nfrom config import Settings\n",
        "services/speech/stt.py": "from services.speech import audio\nfrom services.errors import ServiceError\n",
        "services/chat/chat_settings.py": "from services.storage.database import Database\nimport services.errors\n",
        "services/voice/voice_turns.py": (
            "from services.chat.chat_settings import ChatSettingsStore\nfrom services.speech.stt import Transcriber\n"
            "from services.voice.endpointing import Utterance\n"
        ),
        "services/voice/endpointing.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from config import Settings\n"
        ),
        "services/files.py": "from services.errors import ServiceError\n", "services/errors.py": "", "config.py": "",
    })
    assert layering_violations(all_imports(root)) == []
    assert placement_violations(all_modules(root)) == []


@pytest.mark.parametrize("path", ["services/helpers.py", "services/helpers/__init__.py", "services/search/index.py"])
def test_a_module_outside_the_domains_is_reported(tmp_path: Path, path: str) -> None:
    root = write_tree(tmp_path, {path: "", "services/chat/llm.py": "", "services/errors.py": ""})
    [line] = placement_violations(all_modules(root))
    assert "a module of services/ lives in a domain" in line


def test_a_run_time_cycle_is_reported_and_a_type_checking_one_only_when_counted(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {
        "sandbox/rest.py": "from sandbox.server import Sandbox\n",
        "sandbox/server.py": "from sandbox import rest\n",
        "bot/checks.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bot.client import AssistantBot\n"
        ),
        "bot/client.py": "from bot.checks import admin_only\n",
    })
    assert import_cycles(all_imports(root)) == [["sandbox.rest", "sandbox.server"]]
    assert sorted(import_cycles(all_imports(root), count_type_only=True)) == [
        ["bot.checks", "bot.client"], ["sandbox.rest", "sandbox.server"],
    ]


def test_a_loop_closed_by_a_type_only_import_is_reported_when_counted(tmp_path: Path) -> None:
    # The bot's old loop in small: the client imports its parts, which name the client (and each other) in types.
    type_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from {} import {}\n"
    root = write_tree(tmp_path, {
        "bot/client.py": "from bot.voice_manager import VoiceManager\nfrom bot.tree import AssistantTree\n",
        "bot/voice_manager.py": "from bot.voice_session import VoiceSession\n"
                                + type_only.format("bot.client", "AssistantBot"),
        "bot/voice_session.py": type_only.format("bot.listening", "TurnWorker"),
        "bot/listening.py": "from bot.voice_session import VoiceSession\n",
        "bot/tree.py": "from bot.checks import NotAdmin\n",
        "bot/checks.py": "import typing\nif typing.TYPE_CHECKING:\n    from bot import client\n",
    })
    assert import_cycles(all_imports(root)) == []
    assert sorted(import_cycles(all_imports(root), count_type_only=True)) == [
        ["bot.checks", "bot.client", "bot.tree", "bot.voice_manager"], ["bot.listening", "bot.voice_session"],
    ]
