"""specrun's on-disk cache: results that are slow to compute and can be recomputed at any time.

Today it keeps parsed datasets: a dataset source that names the local files it reads
(``DatasetSource.files``) is parsed once, and later processes (``plan``, ``apply``, ``predict``) load
the parsed splits, with their content fingerprints, while those files keep their contents. Anything else (a changed file, another specrun or plugin version, other options)
is a miss and the source loads the files again.

Where: ``$SPECRUN_CACHE_DIR``, else ``$XDG_CACHE_HOME/specrun``, else ``~/.cache/specrun``.
``SPECRUN_CACHE_DIR=off`` turns it off. Deleting the folder is always safe. An entry that cannot be
read is a miss; a cache that cannot be written is skipped with a debug log line: the cache never
fails a command.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("specrun.cache")

CACHE_ENV = "SPECRUN_CACHE_DIR"
#: Entries kept per kind; the least recently used beyond it are deleted when a new one is written.
KEEP = 24
#: Bump when what an entry holds changes shape: older entries are then misses.
FORMAT = 1


def cache_dir() -> Path | None:
    """The cache folder, or None when the cache is off."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "0", "none") else Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "specrun"


def file_signature(paths: list[Path]) -> list[list] | None:
    """(path, size, content hash) of each file; None when one of them is not a readable file (its
    source then reports the problem when it loads). Contents are hashed, not trusted to modification
    times: a file rewritten within the file system's timestamp granularity still counts as changed
    (hashing is ~100x cheaper than parsing: a few ms for SST-2's 7 MB)."""
    signature = []
    for path in paths:
        path = Path(path)
        try:
            with path.open("rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            size = path.stat().st_size
        except OSError:  # missing, a folder, unreadable
            return None
        signature.append([str(path.resolve()), size, digest])
    return signature


def _entry(kind: str, key: dict[str, Any]) -> Path | None:
    folder = cache_dir()
    if folder is None:
        return None
    blob = json.dumps({"format": FORMAT, **key}, sort_keys=True, default=str)
    return folder / kind / f"{hashlib.sha256(blob.encode()).hexdigest()[:32]}.pickle"


def get(kind: str, key: dict[str, Any]) -> Any | None:
    """The value stored under ``key``, or None."""
    path = _entry(kind, key)
    if path is None or not path.is_file():
        return None
    try:
        with path.open("rb") as f:
            value = pickle.load(f)
        os.utime(path)  # recently used: kept longest
        return value
    except Exception as exc:  # a truncated or foreign file: a miss, and gone
        log.debug("cache entry %s unreadable (%s); ignoring it", path, exc)
        path.unlink(missing_ok=True)
        return None


def put(kind: str, key: dict[str, Any], value: Any) -> None:
    """Store ``value`` under ``key`` (atomically: readers never see half an entry)."""
    path = _entry(kind, key)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        _prune(path.parent)
    except OSError as exc:
        log.debug("cannot write the cache entry %s (%s); going on without it", path, exc)


def _prune(folder: Path) -> None:
    entries = sorted(folder.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP:]:
        old.unlink(missing_ok=True)
