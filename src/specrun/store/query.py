"""Reading the store on a user's behalf: ad-hoc SQL (read-only, other files off limits unless allowed)
and consistent snapshot copies for notebooks."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import duckdb

from specrun.errors import StoreError, UsageError
from specrun.store.db import Store


def run_query(store: Store, query: str, allow_files: bool = False) -> tuple[list[str], list[tuple]]:
    """(columns, rows) of ``query`` on a read-only connection; ([], []) for a statement without a
    result. Several statements run in order, but at most one of them may give a result (a UsageError
    otherwise, before any runs). A mistake in the query is a UsageError with DuckDB's message."""
    results = run_queries(store, query, allow_files=allow_files, most=1)
    return results[-1][1:] if results else ([], [])


def run_queries(
    store: Store, query: str, allow_files: bool = False, most: int | None = None
) -> list[tuple[str, list[str], list[tuple]]]:
    """Run the statements of ``query`` in order on one read-only connection; (statement, columns, rows)
    for each one that gives a result (a SELECT, SHOW, PRAGMA..., not a SET). With ``most``, more
    statements that give results than that is a UsageError raised before any statement runs. A mistake
    in any statement is a UsageError naming it; nothing is returned then."""
    if not query.strip():
        raise UsageError('give a SQL query, e.g. specrun sql "SELECT * FROM run_summary"')
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise UsageError(f"SQL error: {exc}") from None
    if not statements:  # only semicolons and comments
        raise UsageError(f'no SQL statement in {query!r}; give a query, e.g. specrun sql "SELECT * FROM run_summary"')
    gives = [duckdb.ExpectedResultType.QUERY_RESULT in s.expected_result_type for s in statements]
    if most is not None and sum(gives) > most:
        raise UsageError(
            f"{sum(gives)} of the statements give results, and this output holds {most}: run them one at a time"
            " (specrun sql's table and markdown formats show each result in turn)"
        )
    results = []
    with store.read(allow_files=allow_files) as db:
        for number, (statement, gives_result) in enumerate(zip(statements, gives), 1):
            text = statement.query.strip()
            where = f" (statement {number} of {len(statements)}: {_short(text)})" if len(statements) > 1 else ""
            try:
                cursor = db.execute(statement)
                if gives_result and cursor.description is not None:
                    results.append((text, [d[0] for d in cursor.description], cursor.fetchall()))
            except duckdb.PermissionException as exc:
                raise UsageError(
                    f"SQL error{where}: {_first_line(exc)} (specrun sql reads the store only; pass --allow-files to read or write other files)"
                ) from None
            except (duckdb.IOException, duckdb.SerializationException):
                raise  # the file, not the query: Store.read turns it into a StoreError
            except duckdb.Error as exc:
                raise UsageError(f"SQL error{where}: {exc}") from None
    return results


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0]


def snapshot(store: Store, path: Path) -> int:
    """Copy the store to ``path`` (a new file) while holding it open read-only, so that no writer can
    change it mid-copy; returns how many runs the copy holds."""
    path = Path(path)
    if path.exists():
        raise UsageError(f"{path} exists; give a new path (a snapshot never overwrites a file)")
    if path.resolve() == store.path.resolve():
        raise UsageError("the snapshot path is the store itself; give a new path")
    if path.parent.exists() and not path.parent.is_dir():
        raise UsageError(f"cannot write snapshot {path}: {path.parent} is a file, not a folder")
    partial = path.with_name(f".{path.name}.partial")
    with store.read() as db:
        runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)  # as apply, report and export make their folders
            shutil.copyfile(store.path, partial)
            wal = Path(f"{store.path}.wal")
            if wal.exists():  # committed work not yet checkpointed into the file
                shutil.copyfile(wal, f"{partial}.wal")
                os.replace(f"{partial}.wal", f"{path}.wal")
            os.replace(partial, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise StoreError(f"cannot write snapshot {path}: {exc.strerror or exc}") from None
    return runs
