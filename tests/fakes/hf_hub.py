"""A stand-in for the Hugging Face Hub's download endpoints on loopback, for tests and for trying downloads by hand.

It answers what huggingface_hub (2.x) asks when it downloads a model, with the headers it reads:

- ``HEAD /``: 200 (what ``services.speech.model_hub`` asks to see whether the Hub is reachable);
- ``GET /api/models/{repo_id}[/revision/{revision}]``: ``{"id", "sha", "siblings": [{"rfilename"}...]}``, and
  ``GET /api/models/{repo_id}/tree/{revision}``: ``[{"type": "file", "path", "size", "oid"}...]``, the listings
  ``snapshot_download`` starts from (faster-whisper's ``download_model``);
- ``HEAD`` / ``GET /{repo_id}/resolve/{revision}/{path}``: the file, with ``X-Repo-Commit``, ``ETag`` (the file's
  sha256, as the Hub gives for large files) and ``Content-Length``; 404 with ``X-Error-Code: RepoNotFound`` or
  ``EntryNotFound`` otherwise, as the Hub answers.

``mode`` makes it unreachable in the ways a network can be:

- ``"serve"``: answer as above;
- ``"down"``: nothing listens on the port (connections refused at once);
- ``"silent"``: connections are accepted and never answered (a hung server or proxy);
- ``"blackhole"``: connection attempts go unanswered (its accept queue is kept full, so the kernel drops them), as
  behind a firewall that drops packets or on a network with no route out.

Point huggingface_hub at it with ``HF_ENDPOINT=http://127.0.0.1:PORT`` (read when huggingface_hub is imported; tests
use ``point_huggingface_hub_at``). Run alone::

    python -m tests.fakes.hf_hub --port 8765 --mode blackhole
    python -m tests.fakes.hf_hub --port 8765 --serve rhasspy/piper-voices=FOLDER
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

Mode = Literal["serve", "down", "silent", "blackhole"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """The stand-in on ``127.0.0.1:port`` (0: a free port). ``repos`` maps a repo id ("rhasspy/piper-voices") to
    its files: path in the repository -> local file. ``start``/``stop`` (or ``with``) run it in a thread."""

    def __init__(self, mode: Mode = "serve", port: int = 0) -> None:
        self.mode = mode
        self.repos: dict[str, dict[str, Path]] = {}
        self.requests: list[str] = []
        """"METHOD path" of every request answered, in order."""
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sockets: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def add(self, repo_id: str, path: str, file: Path) -> None:
        """Serve the local ``file`` as ``path`` of ``repo_id``."""
        self.repos.setdefault(repo_id, {})[path] = file

    def start(self) -> FakeHub:
        if self.mode == "serve":
            self._server = ThreadingHTTPServer(("127.0.0.1", self._port), self._handler())
            self._server.daemon_threads = True
            self._port = self._server.server_port
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="fake-hf-hub", daemon=True)  # fmt: skip
            self._thread.start()
            return self
        listener = socket.socket()
        listener.bind(("127.0.0.1", self._port))
        self._port = listener.getsockname()[1]
        self._sockets.append(listener)
        if self.mode == "down":
            listener.close()  # the port is free again: connections are refused
        elif self.mode == "silent":
            listener.listen(64)  # the kernel completes the handshakes; nobody ever reads or answers
        else:  # blackhole: a backlog of 0 holds one connection; with it taken, further SYNs are dropped
            listener.listen(0)
            for _ in range(2):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", self._port))
                self._sockets.append(filler)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join()
            self._server = None
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                return

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = unquote(self.path.split("?", 1)[0])
                hub.requests.append(f"{self.command} {path}")
                if path.startswith("/api/models/"):
                    repo_id, tree, _ = path.removeprefix("/api/models/").split("/revision/")[0].partition("/tree/")
                    if repo_id not in hub.repos:
                        return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
                    files = sorted(hub.repos[repo_id].items())
                    listing: object = (
                        [{"type": "file", "path": name, "size": file.stat().st_size,
                          "oid": hashlib.sha1(file.read_bytes()).hexdigest()} for name, file in files]
                        if tree else
                        {"id": repo_id, "modelId": repo_id, "sha": COMMIT, "private": False,
                         "siblings": [{"rfilename": name} for name, _ in files]}
                    )  # fmt: skip
                    return self._send(json.dumps(listing).encode(), {"Content-Type": "application/json"}, body)
                if "/resolve/" in path:
                    repo_id, _, rest = path.lstrip("/").partition("/resolve/")
                    file_path = rest.partition("/")[2]  # after the revision
                    if repo_id not in hub.repos:
                        return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
                    file = hub.repos[repo_id].get(file_path)
                    if file is None:
                        return self._error(404, "EntryNotFound", f"{file_path} does not exist on main")
                    data = file.read_bytes()
                    headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                               "Content-Type": "application/octet-stream"}  # fmt: skip
                    return self._send(data, headers, body)
                if path == "/":
                    return self._send(b"Hugging Face Hub stand-in", {"Content-Type": "text/plain"}, body)
                return self._error(404, "NotFound", "not found")

            def _error(self, status: int, code: str, message: str) -> None:
                data = json.dumps({"error": message}).encode()
                self.send_response(status)
                for name, value in {"X-Error-Code": code, "X-Error-Message": message,
                                    "Content-Type": "application/json", "Content-Length": str(len(data))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _send(self, data: bytes, headers: dict[str, str], body: bool) -> None:
                self.send_response(200)
                for name, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(name, value)
                self.end_headers()
                if body:
                    self.wfile.write(data)

        return Handler


def point_huggingface_hub_at(monkeypatch: Any, url: str) -> None:
    """In this process, what ``HF_ENDPOINT=url`` does when huggingface_hub is imported (it reads the variable once,
    into these two constants). ``monkeypatch``: pytest's, which restores them after the test."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--mode", choices=("serve", "down", "silent", "blackhole"), default="serve")
    parser.add_argument("--serve", action="append", default=[], metavar="REPO=FOLDER",
                        help="serve every file under FOLDER as repository REPO (repeatable)")
    args = parser.parse_args()
    hub = FakeHub(args.mode, args.port)
    for spec in args.serve:
        repo_id, _, folder = spec.partition("=")
        for file in sorted(Path(folder).rglob("*")):
            if file.is_file():
                hub.add(repo_id, file.relative_to(folder).as_posix(), file)
    with hub:
        print(f"Hugging Face Hub stand-in ({args.mode}) at {hub.url}; use HF_ENDPOINT={hub.url}. Ctrl-C stops it.")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
