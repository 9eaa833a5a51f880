"""Opening the DuckDB store: migrations on open, short connections, retry while another process writes.

DuckDB lets one process hold a database file open for writing, so specrun never keeps the store open
through training: every read or write opens it, does one short transaction, and closes it.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from specrun.errors import StoreError
from specrun.store.migrations import MIGRATIONS

DEFAULT_STORE = "specrun.duckdb"
LOCK_TIMEOUT_S = float(os.environ.get("SPECRUN_STORE_TIMEOUT", "300"))


def default_store_path() -> Path:
    return Path(os.environ.get("SPECRUN_STORE", DEFAULT_STORE))


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "lock" in text.lower() and ("Could not set lock" in text or "Conflicting lock" in text)


class Store:
    """A DuckDB result store at ``path``. Use ``with store.write() as db:`` / ``with store.read() as db:``."""

    def __init__(self, path: str | Path | None = None, timeout: float = LOCK_TIMEOUT_S):
        self.path = Path(path) if path is not None else default_store_path()
        self.timeout = timeout
        self._migrated = False

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.timeout
        delay = 0.02
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                if not _is_lock_error(exc):
                    raise StoreError(f"cannot open store {self.path}: {exc}") from None
                if time.monotonic() > deadline:
                    raise StoreError(f"store {self.path} stayed locked by another process for {self.timeout:.0f}s") from None
            except duckdb.Error as exc:
                raise StoreError(f"cannot open store {self.path}: {exc}") from None
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)

    def migrate(self, db: duckdb.DuckDBPyConnection) -> list[str]:
        """Apply pending migrations; returns the names applied."""
        db.execute("CREATE TABLE IF NOT EXISTS _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
        done = {row[0] for row in db.execute("SELECT name FROM _migrations").fetchall()}
        applied = []
        for fn in MIGRATIONS:
            if fn.__name__ in done:
                continue
            db.execute("BEGIN TRANSACTION")
            try:
                fn(db)
                db.execute("INSERT INTO _migrations VALUES (?, ?)", [fn.__name__, now()])
                db.execute("COMMIT")
            except Exception:
                db.execute("ROLLBACK")
                raise
            applied.append(fn.__name__)
        return applied

    @contextlib.contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A writable connection inside one transaction, committed on success, rolled back on error."""
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = self._connect(read_only=False)
        try:
            if not self._migrated:
                self.migrate(db)
                self._migrated = True
            db.execute("BEGIN TRANSACTION")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    @contextlib.contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection (the store must exist; pending migrations are applied first)."""
        if not self.path.exists():
            raise StoreError(f"no store at {self.path} (run `specrun apply` first, or pass --store)")
        if not self._migrated:
            with self.write():
                pass
        db = self._connect(read_only=True)
        try:
            yield db
        finally:
            db.close()
