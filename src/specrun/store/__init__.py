"""The DuckDB result store: schema migrations, short write transactions, queries."""

from specrun.store.db import Store, artifacts_root, default_store_path

__all__ = ["Store", "artifacts_root", "default_store_path"]
