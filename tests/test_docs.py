"""The docs stay true: every spec key, CLI command and store table is documented."""

import re
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
            tables = [
                r[0]
                for r in db.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
                ).fetchall()
            ]
            columns = db.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
            ).fetchall()
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


def _documented_queries():
    """Every SQL query a user is shown: ```sql blocks in docs/ and README, `specrun sql "..."` in them, specs and the Makefile."""
    import re

    root = DOCS.parent
    for path in [*sorted(DOCS.glob("*.md")), README]:
        text = path.read_text()
        for n, block in enumerate(re.findall(r"```sql\n(.*?)```", text, re.S)):
            yield f"{path.name}#sql{n}", block
        for n, query in enumerate(re.findall(r'specrun sql "([^"]+)"', text)):
            if not query.startswith("<") and not query.endswith("..."):  # 'specrun sql "<query>"' is prose
                yield f"{path.name}#cli{n}", query
    for path in [*sorted((root / "specs").glob("*.toml")), root / "Makefile"]:
        for n, query in enumerate(re.findall(r'specrun sql "([^"]+)"', path.read_text())):
            yield f"{path.name}#cli{n}", query


def test_documented_queries_run_against_the_schema(tmp_path, registry):
    """Each documented query binds (tables, columns, functions exist) on an empty store of the current schema."""
    from specrun.store import Store
    from specrun.store.analyses import ensure_table

    queries = list(_documented_queries())
    assert len(queries) >= 8  # the extraction found them (docs hold about ten)
    store = Store(tmp_path / "empty.duckdb")
    with store.write() as db:  # the schema, and the result tables of the built-in analyses
        for plugin in (e.plugin for e in registry.all() if e.kind == "analysis"):
            for table in plugin.tables:
                ensure_table(db, table, plugin.name)
    failures = []
    with store.read() as db:
        for where, query in queries:
            if "<" in query and ">" in query and "'<" in query:
                query = re.sub(r"'<[^>]*>'", "'x'", query)  # placeholders such as '<run_id>'
            try:
                db.execute(query).fetchall()
            except Exception as exc:
                failures.append(f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    assert not failures, "\n".join(failures)


def test_every_command_option_documented():
    import typer.main

    from specrun.cli import app

    text = README.read_text() + "".join(p.read_text() for p in sorted(DOCS.glob("*.md")))
    missing = [
        f"specrun {name} {flag}"
        for name, command in typer.main.get_command(app).commands.items()
        for param in command.params
        if param.param_type_name == "option"  # typer vendors click: no isinstance
        for flag in param.opts
        if flag.startswith("--") and flag != "--help" and flag not in text
    ]
    assert not missing, f"options missing from README.md and docs/: {missing}"


def test_every_builtin_analysis_documented():
    """docs/analyses.md has a section per built-in analysis naming each option, table and column."""
    from specrun.plugins.registry import build_registry, make_plugin_manager

    text = (DOCS / "analyses.md").read_text()
    registry = build_registry(*make_plugin_manager(entry_points=False))
    for entry in (e for e in registry.all() if e.kind == "analysis"):
        plugin = entry.plugin
        start = text.find(f"### `{plugin.name}`")
        assert start >= 0, f"analysis {plugin.name} has no section in docs/analyses.md"
        section = text[start : text.find("\n### ", start + 1)]
        for option in plugin.Options.model_fields:
            assert f"`{option}`" in section, f"{plugin.name}: option {option} is not documented"
        for table in plugin.tables:
            assert f"`{table.name} (" in section, f"{plugin.name}: table {table.name} is not documented"
            columns = section[section.find(f"`{table.name} (") :]
            columns = columns[: columns.find(")`")]
            assert [c.strip() for c in columns.split("(", 1)[1].split(",")] == list(table.columns), (
                f"{table.name}: columns differ from the docs"
            )


def test_every_metric_name_documented():
    from specrun.metrics import COST_METRICS, EVAL_METRICS, TRAIN_METRICS

    text = (DOCS / "store.md").read_text()
    for name in (*COST_METRICS, *EVAL_METRICS, *TRAIN_METRICS):
        assert name in text, f"metric {name} is missing from docs/store.md"
