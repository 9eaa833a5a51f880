"""The DuckDB result store: schema migrations, short write transactions, queries."""

from specrun.store.db import Store, default_store_path

__all__ = ["Store", "default_store_path"]
