"""The main job on real input: the Ollama documentation as global documents, ten questions through the playground.

Copies ``../shared/corpus/ollama-docs`` into a fresh DOCUMENTS_DIR/global, starts the Ollama stand-in,
and runs ``python main.py playground --script ... --json`` (the real bot against the sandbox): an admin
runs ``/docs reload``, then a member asks ten questions with ``/ask``. For each answer, the files listed
under "Sources" are compared with the file that answers the question. Retrieval is what is measured: the
stand-in's embeddings are hashed bags of words, not a neural model, so the figure is a floor for what
``nomic-embed-text`` gives.

Usage: ``.venv/bin/python -m bench.corpus_demo``; writes bench/results/corpus_demo.json. Exits 0 with a
message when the corpus is absent.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from services.files import write_json_atomic
from tests.fakes.ollama import FakeOllama

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "ollama-docs"
RESULTS = ROOT / "bench" / "results" / "corpus_demo.json"

# question -> the files that answer it (the first is the best one)
QUESTIONS: dict[str, tuple[str, ...]] = {
    "How do I select which NVIDIA GPUs are used when I have several?": ("gpu.mdx",),
    "How do I import a GGUF model or adapter?": ("import.mdx",),
    "Which variables can a model template use, such as .System and .Prompt?": ("template.mdx",),
    "How do I get a structured JSON answer that follows a schema?": ("capabilities/structured-outputs.mdx",),
    "How do I send an image to a vision model through the API?": ("capabilities/vision.mdx",),
    "Which fields of /v1/chat/completions does the OpenAI compatibility support?": ("api/openai-compatibility.mdx",),
    "How do I run the Ollama container with an AMD GPU in Docker?": ("docker.mdx",),
    "How do I add Ollama as a startup service with systemd on Linux?": ("linux.mdx",),
    "What does the PARAMETER instruction of a Modelfile set?": ("modelfile.mdx",),
    "How do I check the allocated context length and model offloading?": ("context-length.mdx",),
}

SOURCE_RE = re.compile(r"^\[(\d+)\] `([^`]+)`", re.MULTILINE)


def script_text() -> str:
    lines = ["as admin", "/docs reload", "as alice"]
    lines += [f"/ask question: {question}" for question in QUESTIONS]
    return "\n".join(lines) + "\n"


def answers_by_interaction(events: list[dict[str, Any]]) -> list[str]:
    """The final visible text of each interaction's answer, in the order the interactions were answered."""
    order: list[int] = []
    latest: dict[tuple[int, int], str] = {}
    for event in events:
        interaction_id = event.get("interaction_id")
        if event.get("event") not in ("message", "edit") or interaction_id is None:
            continue
        if interaction_id not in order:
            order.append(interaction_id)
        latest[(interaction_id, event["message_id"])] = event.get("content") or ""
    return ["\n".join(text for (iid, _), text in latest.items() if iid == interaction_id) for interaction_id in order]


async def run_demo() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        shutil.copytree(CORPUS, tmp / "documents" / "global")
        (tmp / "script.txt").write_text(script_text())
        fake = FakeOllama()
        await fake.start()
        try:
            env = {**os.environ, "OLLAMA_HOST": fake.url, "DATA_DIR": str(tmp / "data"),
                   "DOCUMENTS_DIR": str(tmp / "documents"), "CHAT_COOLDOWN_S": "0", "ADMIN_COOLDOWN_S": "0"}
            env.pop("DISCORD_TOKEN", None)
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "main.py"), "playground", "--script", str(tmp / "script.txt"), "--json",
                cwd=tmp, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=600)
        finally:
            await fake.stop()
    if process.returncode != 0:
        raise RuntimeError(f"playground exited {process.returncode}: {stderr.decode()[-2000:]}")
    events = [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]
    answers = answers_by_interaction(events)
    reload_report, asked = answers[0], answers[1:]
    rows = []
    for (question, expected), answer in zip(QUESTIONS.items(), asked, strict=True):
        cited = [source for _, source in SOURCE_RE.findall(answer)]
        rows.append({
            "question": question,
            "expected": expected[0],
            "cited": cited,
            "first_cited_right": bool(cited) and cited[0] in expected,
            "cited_right": any(source in expected for source in cited),
        })
    return {
        "reload_report": reload_report,
        "questions": len(rows),
        "first_source_right": sum(row["first_cited_right"] for row in rows),
        "right_source_cited": sum(row["cited_right"] for row in rows),
        "rows": rows,
    }


def main() -> int:
    if not CORPUS.is_dir():
        print(f"corpus not found at {CORPUS}; nothing to do")
        return 0
    result = asyncio.run(run_demo())
    for row in result["rows"]:
        mark = "OK " if row["first_cited_right"] else ("ok~" if row["cited_right"] else "NO ")
        print(f"{mark} {row['question']}\n     expected {row['expected']}; cited {', '.join(row['cited']) or '-'}")
    print(f"\nfirst source right: {result['first_source_right']}/{result['questions']}; "
          f"right source among those cited: {result['right_source_cited']}/{result['questions']}")
    write_json_atomic(RESULTS, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
