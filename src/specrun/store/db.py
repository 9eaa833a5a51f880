"""Opening the DuckDB store: migrations on open, short connections, bounded waits on other processes.

DuckDB lets one process hold a database file open for writing, or any number of processes hold it open
read-only, never both. So specrun never keeps the store open through training: every read or write
opens it, does one short transaction, and closes it. Reads open it read-only (once its schema is
current) and wait at most ``SPECRUN_STORE_READ_TIMEOUT`` seconds (default 10) for a writer; writes wait
up to ``SPECRUN_STORE_TIMEOUT`` (default 300) and say which process holds the lock while they wait.

A file that is not a readable store (truncated, damaged, not DuckDB) is never opened for writing, and
every fault is one ``StoreError`` naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from specrun.errors import StoreError
from specrun.store.migrations import MIGRATIONS

DEFAULT_STORE = "specrun.duckdb"
log = logging.getLogger("specrun.store")

#: A DuckDB file starts with a 4 KiB file header and two 4 KiB database headers, then its blocks.
_HEADER_BYTES = 3 * 4096
#: After this long waiting for a lock, say who holds it.
_NOTE_AFTER_S = 2.0


def _env_seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def default_store_path() -> Path:
    return Path(os.environ.get("SPECRUN_STORE", DEFAULT_STORE))


def artifacts_root(store_path: Path) -> Path:
    """Where runs save weights: ``SPECRUN_ARTIFACTS``, else ``specrun-artifacts/`` beside the store."""
    env = os.environ.get("SPECRUN_ARTIFACTS")
    return Path(env) if env else Path(store_path).resolve().parent / "specrun-artifacts"


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


def lock_holder(exc: Exception) -> str:
    """'PID 123 (python notebook.py)' from DuckDB's lock error, or 'another process'."""
    found = re.search(r"Conflicting lock is held in (.*?) \(PID (\d+)\)", str(exc))
    if not found:
        return "another process"
    program, pid = found.group(1), int(found.group(2))
    try:
        import psutil

        command = " ".join(psutil.Process(pid).cmdline())[:120] or program
    except Exception:  # the process may be gone, or not ours to inspect
        command = program
    return f"PID {pid} ({command})"


def _is_damage(exc: Exception) -> bool:
    """Whether a DuckDB error means the file itself cannot be read (not a mistake in a query)."""
    text = str(exc)
    if _is_lock_error(exc):
        return False
    return (
        isinstance(exc, (duckdb.IOException, duckdb.SerializationException))
        or "Corrupt database" in text
        or "not a valid DuckDB database" in text
    )


def _is_unwritable(exc: Exception) -> bool:
    text = str(exc)
    return any(
        s in text
        for s in ("Permission denied", "Read-only file system", "No space left", "File too large", "Disk quota")
    )


def damaged(path: Path, exc: Exception | str) -> StoreError:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return StoreError(
        f"store {path} cannot be read: it is damaged, truncated or not a DuckDB file ({detail}). "
        "specrun has not modified it. Restore it from a backup or snapshot, or pass --store with another path "
        "(a new store starts empty)"
    )


class Unwritable(StoreError):
    """A store that cannot be written (a read-only or full folder)."""


def unwritable(path: Path, exc: Exception | str) -> StoreError:
    detail = str(exc).splitlines()[0]
    if f"{path.name}.wal" in detail:  # the file may be writable; its folder is not
        return Unwritable(
            f"cannot write store {path}: DuckDB keeps a write-ahead log ({path.name}.wal) beside the store and cannot create or "
            f"remove it in {path.resolve().parent} ({detail}). Make that folder writable, or copy the store elsewhere and pass "
            "--store with a path in a writable folder (the copy); the store keeps what it held"
        )
    return Unwritable(
        f"cannot write store {path}: {detail}. Its folder may be read-only or full: free space, or pass --store with a "
        "path in a writable folder (copy the store there first to keep its runs); the store keeps what it held"
    )


class Store:
    """A DuckDB result store at ``path``. Use ``with store.write() as db:`` / ``with store.read() as db:``."""

    def __init__(self, path: str | Path | None = None, timeout: float | None = None, read_timeout: float | None = None):
        self.path = Path(path) if path is not None else default_store_path()
        self.timeout = timeout if timeout is not None else _env_seconds("SPECRUN_STORE_TIMEOUT", 300)
        self.read_timeout = read_timeout if read_timeout is not None else _env_seconds("SPECRUN_STORE_READ_TIMEOUT", 10)

    #: The file's state when a read last found it intact and fully migrated (see ``read``).
    _checked: tuple | None = None

    def _file_state(self) -> tuple | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_size, stat.st_mtime_ns, Path(f"{self.path}.wal").exists()

    def _connect(self, read_only: bool, timeout: float, config: dict | None = None) -> duckdb.DuckDBPyConnection:
        start = time.monotonic()
        delay, noted = 0.02, False
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only, config=config or {})
            except duckdb.Error as exc:
                if not _is_lock_error(exc):
                    if _is_unwritable(exc) and not read_only:
                        raise unwritable(self.path, exc) from None
                    if "Permission denied" in str(exc):
                        raise StoreError(
                            f"cannot read store {self.path}: {str(exc).splitlines()[0]}; check its permissions"
                        ) from None
                    raise damaged(self.path, exc) from None
                waited = time.monotonic() - start
                if waited > timeout:
                    raise self._locked(exc, timeout, read_only) from None
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("store %s is locked by %s; retrying", self.path, lock_holder(exc))
                if waited > _NOTE_AFTER_S and not noted:
                    noted = True
                    log.warning("store %s is locked by %s; waiting up to %.0fs", self.path, lock_holder(exc), timeout)
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)

    def _locked(self, exc: Exception, timeout: float, read_only: bool) -> StoreError:
        holder = lock_holder(exc)
        if read_only:
            advice = (
                "another process has it open for writing: wait for it, or close that connection "
                f"(longer waits: SPECRUN_STORE_READ_TIMEOUT, now {timeout:.0f}s)"
            )
        else:
            advice = (
                "close that connection (a notebook should open the store read-only and close it promptly, or "
                f"read a copy made with `specrun snapshot`), then retry (longer waits: SPECRUN_STORE_TIMEOUT, now {timeout:.0f}s)"
            )
        return StoreError(f"store {self.path} is locked by {holder}: {advice}")

    def _check_intact(self, db: duckdb.DuckDBPyConnection) -> None:
        """Refuse a file that ends before the last block its tables use (a truncated copy): writing into
        it could only make things worse. Skipped while a write-ahead log holds work not yet in the file."""
        if Path(f"{self.path}.wal").exists():
            return
        try:
            tables = [
                r[0]
                for r in db.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
                ).fetchall()
            ]
            if not tables:
                return
            blocks = " UNION ALL ".join(
                f"SELECT max(block_id) AS b FROM pragma_storage_info('{t.replace(chr(39), chr(39) * 2)}')"
                for t in tables
            )
            top = db.execute(f"SELECT max(b) FROM ({blocks})").fetchone()[0]
            block_size = db.execute(
                "SELECT block_size FROM pragma_database_size() WHERE database_name = current_database()"
            ).fetchone()[0]
        except duckdb.Error as exc:
            raise damaged(self.path, exc) from None
        needed = _HEADER_BYTES + (top + 1) * block_size if top is not None and top >= 0 else 0
        size = self.path.stat().st_size
        if size < needed:
            raise damaged(self.path, f"the file has {size} bytes, but its tables use blocks up to byte {needed}")

    def pending_migrations(self, db: duckdb.DuckDBPyConnection) -> list[str]:
        """Names of the migrations this store has not had yet."""
        try:
            tables = {
                r[0]
                for r in db.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
                ).fetchall()
            }
            done = (
                {r[0] for r in db.execute("SELECT name FROM _migrations").fetchall()}
                if "_migrations" in tables
                else set()
            )
        except duckdb.Error as exc:
            raise damaged(self.path, exc) from None
        if tables and "_migrations" not in tables:
            raise StoreError(
                f"{self.path} is a DuckDB database but not a specrun store (it has no _migrations table); pass --store with another path"
            )
        return [fn.__name__ for fn in MIGRATIONS if fn.__name__ not in done]

    def migrate(self, db: duckdb.DuckDBPyConnection) -> list[str]:
        """Apply pending migrations; returns the names applied."""
        pending = set(self.pending_migrations(db))
        db.execute("CREATE TABLE IF NOT EXISTS _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
        applied = []
        for fn in MIGRATIONS:
            if fn.__name__ not in pending:
                continue
            db.execute("BEGIN TRANSACTION")
            try:
                fn(db)
                db.execute("INSERT INTO _migrations VALUES (?, ?)", [fn.__name__, now()])
                db.execute("COMMIT")
            except Exception:
                _rollback(db)
                raise
            applied.append(fn.__name__)
        return applied

    @contextlib.contextmanager
    def write(self, timeout: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A writable connection inside one transaction, committed on success, rolled back on error."""
        if self.path.exists() and not self.path.is_file():
            raise StoreError(f"store {self.path} is not a file; pass --store with a file path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise unwritable(self.path, exc) from None
        created = not self.path.exists()
        if not created:  # never open a damaged file for writing: look at it read-only first
            self._probe()
        db = None
        try:
            db = self._connect(read_only=False, timeout=self.timeout if timeout is None else timeout)
            with _store_faults(self.path, writing=True):
                self.migrate(db)
                db.execute("BEGIN TRANSACTION")
                try:
                    yield db
                except BaseException:
                    _rollback(db)
                    raise
                db.execute("COMMIT")
        except Unwritable:
            if created:  # a store this write began and could not finish: leave no half-made file behind
                if db is not None:
                    _close(db)
                    db = None
                for leftover in (self.path, Path(f"{self.path}.wal")):
                    with contextlib.suppress(OSError):
                        leftover.unlink(missing_ok=True)
            raise
        finally:
            if db is not None:
                _close(db)

    def _probe(self) -> None:
        """Open an existing file read-only and check it is an intact store (raises StoreError if not).
        A writer holding it is fine: the write that follows waits for it."""
        try:
            db = duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error as exc:
            if _is_lock_error(exc):
                return
            raise damaged(self.path, exc) from None
        try:
            self._check_intact(db)
            self.pending_migrations(db)
        finally:
            _close(db)

    @contextlib.contextmanager
    def read(self, allow_files: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection, without access to other files unless ``allow_files``. The store must
        exist; pending migrations are applied first (the only time a read writes)."""
        if not self.path.exists():
            raise StoreError(f"no store at {self.path} (run `specrun apply` first, or pass --store)")
        if not self.path.is_file():
            raise StoreError(f"store {self.path} is not a file; pass --store with a file path")
        config = {} if allow_files else {"enable_external_access": False}
        db = self._connect(read_only=True, timeout=self.read_timeout, config=config)
        try:
            seen = self._file_state()
            if seen is not None and seen == self._checked:  # checked by an earlier read, and untouched since
                pending = []
            else:
                with _store_faults(self.path):
                    self._check_intact(db)
                    pending = self.pending_migrations(db)
                self._checked = None if pending else seen
            if pending:
                log.info("store %s: applying migrations %s", self.path, ", ".join(pending))
                _close(db)
                db = None
                self._upgrade(pending)
                db = self._connect(read_only=True, timeout=self.read_timeout, config=config)
            with _store_faults(self.path):
                yield db
        finally:
            if db is not None:
                _close(db)

    def _upgrade(self, pending: list[str]) -> None:
        try:
            with self.write(timeout=self.read_timeout):
                pass
        except StoreError as exc:
            raise StoreError(f"store {self.path} needs an upgrade ({', '.join(pending)}) first: {exc}") from None


@contextlib.contextmanager
def _store_faults(path: Path, writing: bool = False) -> Iterator[None]:
    """Turn DuckDB errors that mean the file cannot be read (or written) into one StoreError; errors in
    a query itself pass through for the caller to report."""
    try:
        yield
    except duckdb.Error as exc:
        if writing and _is_unwritable(exc):
            raise unwritable(path, exc) from None
        if _is_damage(exc):
            raise damaged(path, exc) from None
        raise


def _rollback(db: duckdb.DuckDBPyConnection) -> None:
    try:
        db.execute("ROLLBACK")
    except duckdb.Error:  # after a fatal error DuckDB has already rolled back (or invalidated) the transaction
        pass


def _close(db: duckdb.DuckDBPyConnection) -> None:
    try:
        db.close()
    except duckdb.Error:  # closing checkpoints; a failure leaves the write-ahead log, which the next open replays
        pass
