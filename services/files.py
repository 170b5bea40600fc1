"""Atomic file writes: the one way the bot (and its benchmarks) replace a file's content.

Guarantee: after ``write_bytes_atomic(path, data)`` or ``write_json_atomic(path, obj)`` returns, ``path`` holds
exactly the new content; if the call raises (the object cannot be serialized, the disk is full, the process is
killed mid-write), ``path`` still holds its previous content (or is still absent), never a torn file, and no
temp file is left behind (except after a crash of the whole process or machine: then a hidden ``.<name>.*.tmp``
may remain beside it, and ``path`` is still old or new). How: the content goes to a hidden temp file in the same
folder, which is flushed and fsynced, then moved over ``path`` with ``os.replace`` (atomic on POSIX and Windows
within one filesystem); on any error the temp file is removed. The temp file's name starts with a dot, so
folder scans that skip hidden files (the document index) never see it.

Both functions block (disk writes and fsync): callers on the event loop run them in ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace the content of ``path`` with ``data`` atomically (see the module docstring); blocking.

    The parent folder is created when missing. Raises OSError when the folder or file cannot be written;
    ``path`` then keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A bounded prefix of the name keeps the temp name under the usual 255-byte file name limit.
    tmp = path.with_name(f".{path.name[:40]}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("xb") as handle:  # "x": never reuse an existing file; permissions follow the umask
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, obj: object, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    """Write ``obj`` as UTF-8 JSON (non-ASCII kept as is, a final newline) to ``path`` atomically; blocking.

    ``obj`` is serialized before anything touches the disk, so one that ``json`` cannot serialize raises
    TypeError (ValueError for a circular reference) and leaves ``path`` untouched.
    Raises OSError as :func:`write_bytes_atomic`.
    """
    text = json.dumps(obj, ensure_ascii=False, indent=indent, sort_keys=sort_keys) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))
