"""The docs stay true: every spec key, CLI command and store table is documented."""

from pathlib import Path

from pydantic import BaseModel

from specrun.spec.schema import Spec

DOCS = Path(__file__).resolve().parent.parent / "docs"
README = Path(__file__).resolve().parent.parent / "README.md"


def _models(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field.annotation


def test_every_spec_key_documented():
    text = (DOCS / "spec.md").read_text()
    for section in ("experiment", "model", "data", "train"):
        sub = Spec.model_fields[section].annotation
        for name in sub.model_fields:
            assert f"`{section}.{name}`" in text, f"{section}.{name} is missing from docs/spec.md"


def test_every_store_table_documented():
    from specrun.store import Store

    text = (DOCS / "store.md").read_text()
    store = Store(Path("/tmp") / f"docs-check-{id(text)}.duckdb")
    try:
        with store.write() as db:
            tables = [r[0] for r in db.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()]
            columns = db.execute("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'").fetchall()
    finally:
        store.path.unlink(missing_ok=True)
    for table in tables:
        if table.startswith("_"):
            continue
        assert f"`{table}`" in text, f"table {table} is missing from docs/store.md"
    for table, column in columns:
        if not table.startswith("_"):
            assert column in text, f"{table}.{column} is missing from docs/store.md"


def test_every_command_in_readme():
    from specrun.cli import app

    readme = README.read_text()
    for command in app.registered_commands:
        name = command.name or command.callback.__name__
        assert f"specrun {name}" in readme, f"`specrun {name}` is not in README.md"
