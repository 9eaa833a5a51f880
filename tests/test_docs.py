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


# --- examples a reader copies: they validate, they run, they match the schema -----------------------

#: What a spec fragment in the docs leaves out, supplied so that the fragment can be validated on its own.
FRAGMENT_FILLERS = {"experiment.name": "docs-example", "data.dataset": "glue/sst2", "method.name": "lora"}


def _toml_examples():
    """Every ```toml block of README.md and docs/ that is a spec or a fragment of one (not a pyproject.toml)."""
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        for n, block in enumerate(re.findall(r"```toml\n(.*?)```", path.read_text(), re.S)):
            if not re.search(r"^\[(project|tool|build-system)\b", block, re.M):
                yield f"{path.name}#toml{n}", block


def test_every_toml_example_validates(registry):
    """Each spec example validates as written; a fragment, with only the required keys it leaves out filled
    in (it is read as a spec in specs/, so relative paths resolve as there)."""
    import tomllib

    from specrun.errors import SpecError
    from specrun.spec.load import load_spec_text

    examples = list(_toml_examples())
    assert len(examples) >= 25  # the extraction found them (README and docs hold about thirty)
    failures = []
    for where, block in examples:
        try:
            tree = tomllib.loads(block)
        except tomllib.TOMLDecodeError as exc:
            failures.append(f"{where}: not TOML: {exc}")
            continue
        fillers = [
            f"{key}={value}"
            for key, value in FRAGMENT_FILLERS.items()
            if key.split(".")[1] not in tree.get(key.split(".")[0], {})
        ]
        try:
            load_spec_text(block, DOCS.parent / "specs" / f"{where.replace('#', '-')}.toml", fillers, registry)
        except SpecError as exc:
            failures.append(f"{where}: {exc}")
    assert not failures, "\n".join(failures)


def _schema_field(dotted: str):
    """The pydantic field of a dotted spec key (``train.early_stopping``), or None when the schema has none."""
    model, field = Spec, None
    for part in dotted.split("."):
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return None
        field = fields[part]
        model = _inner_model(field.annotation)
    return field


def _inner_model(annotation):
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if (found := _inner_model(arg)) is not None:
            return found
    return None


def _key_rows():
    """(key, default cell or None) of every row of docs/spec.md's key tables: `| \\`section.key\\` | ...`."""
    for table in re.findall(r"(?:^\|.*\n)+", (DOCS / "spec.md").read_text(), re.M):
        header = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]
        for line in table.splitlines()[2:]:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if match := re.fullmatch(r"`([a-z_]+(?:\.[a-z_]+)+)`", cells[0]):
                yield match[1], cells[1] if header[1] == "default" else None


def _documented_default(cell: str):
    """A default cell's value: a leading `literal` (TOML, or a bare word), 'required', or prose meaning None."""
    import tomllib

    if cell == "required":
        return "required"
    if match := re.match(r"`([^`]*)`", cell):
        try:
            return tomllib.loads(f"v = {match[1]}")["v"]
        except tomllib.TOMLDecodeError:
            return match[1]  # a bare word: a string
    return None  # "none", "all", "the dataset's": the schema's None, resolved at run time


def test_spec_key_tables_match_the_schema():
    """Every key in docs/spec.md's tables is in the schema with the documented default, and every key of
    the spec's sections is in a table."""
    from pydantic_core import PydanticUndefined

    rows = dict(_key_rows())
    assert len(rows) >= 50  # the tables were found (about sixty keys)
    problems = []
    for key, cell in rows.items():
        field = _schema_field(key)
        if field is None:
            problems.append(f"{key}: documented, but the schema has no such key")
            continue
        if cell is None or key.startswith("task."):  # no default column; a task's name is its plugin's
            continue
        if field.default is PydanticUndefined and field.default_factory is None:
            schema_default = "required"
        else:
            schema_default = field.default_factory() if field.default_factory else field.default
        if _documented_default(cell) != schema_default:
            problems.append(f"{key}: docs say the default is {cell}, the schema {schema_default!r}")
    for section in ("experiment", "model", "data", "train", "search", "report", "tracking", "constraints"):
        for name in _inner_model(Spec.model_fields[section].annotation).model_fields:
            if f"{section}.{name}" not in rows:
                problems.append(f"{section}.{name}: in the schema, in no table of docs/spec.md")
    assert not problems, "\n".join(problems)


def _documented_columns():
    """{table: [columns]} as docs/store.md's sections give them: a | column | table, or `table(a, b)` / `(a, b)`."""
    text = (DOCS / "store.md").read_text()
    found = {}
    for section in text.split("\n### ")[1:]:
        heading, body = section.split("\n", 1)
        body = body.split("\n## ")[0]
        tables = re.findall(r"`(\w+)`", heading)
        if rows := re.findall(r"^\| ([\w, ]+?) \|", body, re.M):
            found[tables[0]] = [c.strip() for row in rows if row != "column" for c in row.split(",")]
        elif tables[0] == "run_summary":  # the view's columns, in backticked runs around its prose
            paragraph = body.split("\n\n")[0]
            found["run_summary"] = [
                c.strip() for run in re.findall(r"`([\w,\s]+)`", paragraph) if "," in run for c in run.split(",")
            ]
        else:
            for n, table in enumerate(tables):
                match = re.search(rf"`{table}\(([^)]*)\)`", body) or (n == 0 and re.search(r"`\(([^)]*)\)`", body))
                if match:
                    found[table] = [c.strip() for c in match[1].split(",")]
    return found


def test_store_tables_have_the_documented_columns(tmp_path):
    """Each table docs/store.md describes has exactly the columns it lists (and every table is described)."""
    from specrun.store import Store

    with Store(tmp_path / "fresh.duckdb").write() as db:
        rows = db.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
        ).fetchall()
    actual = {}
    for table, column in rows:
        if not table.startswith("_"):
            actual.setdefault(table, set()).add(column)
    documented = _documented_columns()
    assert sorted(documented) == sorted(actual), "tables described in docs/store.md differ from the store's"
    problems = [
        f"{table}: docs list {sorted(set(columns) - actual[table])} that the store lacks, "
        f"and lack {sorted(actual[table] - set(columns))}"
        for table, columns in documented.items()
        if set(columns) != actual[table] or len(columns) != len(set(columns))
    ]
    assert not problems, "\n".join(problems)


def test_documented_queries_run_over_real_runs(study):
    """Each documented query runs over a store holding trained runs and analysis results (type errors and
    JSON paths show only on rows), with the experiments it names swapped for the study's."""
    from specrun.store import Store

    _, store = study
    nonempty, failures = 0, []
    with Store(store).read() as db:
        for where, query in _documented_queries():
            query = re.sub(r"'<[^>]*>'", "'x'", query)
            query = re.sub(r"experiment\s*(=|LIKE)\s*'[^']*'", "experiment = 'study'", query)
            query = re.sub(r"experiment IN \([^)]*\)", "experiment = 'study'", query)
            for statement in db.extract_statements(query):  # a block may hold several
                try:
                    nonempty += bool(db.execute(statement).fetchall())
                except Exception as exc:
                    if "transfer does not exist" not in str(exc):  # the transfer analysis's table: no transfer here
                        failures.append(f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    assert not failures, "\n".join(failures)
    assert nonempty >= 15, f"only {nonempty} documented queries found rows in the study's store"


def test_documented_command_options_exist():
    """Every `specrun COMMAND --option` README.md, docs/ and CHANGELOG.md show names an option COMMAND has."""
    import typer.main

    from specrun.cli import app

    commands = typer.main.get_command(app).commands
    top_level = {"-v", "--verbose", "-q", "--quiet", "--version", "-h", "--help"}
    shown, wrong = 0, []
    for path in [README, DOCS.parent / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]:
        for match in re.finditer(r"specrun(?: -[vq])? ([a-z-]+)([^\n`|]*)", path.read_text()):
            if match[1] not in commands:  # prose ("specrun creates them ...")
                continue
            options = {opt for param in commands[match[1]].params for opt in param.opts} | top_level
            for flag in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", match[2].split("#")[0]):
                shown += 1
                if flag not in options:
                    wrong.append(f"{path.name}: specrun {match[1]} {flag}")
    assert shown >= 30  # the extraction found them
    assert not wrong, f"options the commands lack: {wrong}"


def _option_sections(doc: str) -> dict[str, str]:
    """{plugin name: its section's text} of docs/methods.md or docs/transforms.md (`## name` or ``## `name` ``),
    with the options a section says it shares: noise and augment's common table, qlora's `lora` options."""
    text = (DOCS / doc).read_text()
    sections = {}
    for section in text.split("\n## ")[1:]:
        heading, _, body = section.partition("\n")
        sections[re.sub(r"^`(\w+)`$", r"\1", heading.strip())] = body
    shared = sections.pop("Options shared by `noise` and `augment`", "")
    for name in ("noise", "augment"):
        if name in sections:
            sections[name] += shared
    if "qlora" in sections:  # "Takes every `lora` option except `quantize`, plus:"
        sections["qlora"] += re.sub(r"^\| `quantize` \|.*\n", "", sections["lora"], flags=re.M)
    return sections


def test_method_and_transform_options_documented(registry):
    """Each built-in method's section of docs/methods.md and transform's of docs/transforms.md lists exactly
    its options; a default the options model gives (not None: resolved at run time) is the documented one."""
    import tomllib

    from pydantic_core import PydanticUndefined

    problems, checked = [], 0
    for doc, kind in (("methods.md", "method"), ("transforms.md", "transform")):
        sections = _option_sections(doc)
        for plugin in (e.plugin for e in registry.all() if e.kind == kind):
            if plugin.name not in sections:
                problems.append(f"{kind} {plugin.name} has no section in docs/{doc}")
                continue
            rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]*) \|", sections[plugin.name], re.M))
            fields = plugin.Options.model_fields
            problems += [f"{plugin.name}.{name}: documented, not an option" for name in rows.keys() - fields.keys()]
            problems += [f"{plugin.name}.{name}: an option, not documented" for name in fields.keys() - rows.keys()]
            for name in rows.keys() & fields.keys():
                field, cell = fields[name], rows[name].strip()
                if field.default is PydanticUndefined and field.default_factory is None:
                    ok, default = cell in ("required", "—"), "required"
                elif (default := field.default_factory() if field.default_factory else field.default) is None:
                    continue
                else:
                    literal = re.match(r"`([^`]*)`", cell)
                    try:
                        ok = literal is not None and tomllib.loads(f"v = {literal[1]}")["v"] == default
                    except tomllib.TOMLDecodeError:
                        ok = literal[1] == default
                checked += 1
                if not ok:
                    problems.append(f"{plugin.name}.{name}: docs say {cell!r}, the options model {default!r}")
    assert checked >= 20  # the tables were found
    assert not problems, "\n".join(problems)


def test_extractive_qa_options_documented(registry):
    """docs/spec.md's table of extractive_qa's options lists exactly its options with their defaults;
    doc_stride's depends on model.max_length (resolved per run), its cap is the options model's default."""
    from specrun.plugins.tasks.extractive_qa import default_doc_stride

    text = (DOCS / "spec.md").read_text()
    section = text[text.find("- `extractive_qa`:") :]
    section = section[: section.find("\n```")]
    rows = {name: cell.strip() for name, cell in re.findall(r"^ *\| `(\w+)` \| ([^|]*) \|", section, re.M)}
    fields = registry.get("task", "extractive_qa").Options.model_fields
    assert rows.keys() == fields.keys()
    for name, field in fields.items():
        if name == "doc_stride":
            assert rows[name] == "`min(128, model.max_length // 2 - 1)`" and field.default == 128
            assert all(default_doc_stride(n) == min(128, n // 2 - 1) for n in range(8, 4097))
        else:
            assert rows[name] == f"`{field.default}`", name


def test_the_walkthrough_plugin_is_what_new_plugin_writes(tmp_path):
    """docs/plugins.md's word-dropout plugin is the code `specrun new-plugin transform word-dropout` writes
    (comments, docstrings and the __future__ import aside), and its pyproject excerpt is in the package's."""
    import ast
    import tomllib

    from specrun.plugins.template import write_package

    text = (DOCS / "plugins.md").read_text()
    walkthrough = text[text.index("### 1. The plugin") :]
    shown = re.search(r"```python\n(.*?)```", walkthrough, re.S)[1]
    folder = tmp_path / "specrun-word-dropout"
    write_package("transform", "word-dropout", folder)

    def code(source: str) -> str:
        tree = ast.parse(source)
        body = [
            node
            for node in tree.body
            if not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
            and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))  # a docstring
        ]
        for node in ast.walk(ast.Module(body=body, type_ignores=[])):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.body:
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and len(node.body) > 1:
                    node.body = node.body[1:]
        return ast.dump(ast.Module(body=body, type_ignores=[]))

    assert code(shown) == code((folder / "src" / "specrun_word_dropout" / "plugin.py").read_text())

    excerpt = tomllib.loads(re.search(r"```toml\n(.*?)```", walkthrough, re.S)[1])
    written = tomllib.loads((folder / "pyproject.toml").read_text())

    def contains(whole, part):
        if isinstance(part, dict):
            return isinstance(whole, dict) and all(k in whole and contains(whole[k], v) for k, v in part.items())
        return whole == part

    assert contains(written, excerpt), "docs/plugins.md's pyproject.toml excerpt differs from the package's"


def test_help_texts_render_whole():
    """Every option's and argument's help shows in `--help` as written: rich markup must not swallow a
    `[section]` (write `\\\\[section]`)."""
    import typer.main
    from typer.testing import CliRunner

    from specrun.cli import app

    eaten = []
    for name, command in typer.main.get_command(app).commands.items():
        output = CliRunner().invoke(app, [name, "--help"], terminal_width=400).output
        shown = " ".join(output.replace("│", " ").split())
        for param in command.params:
            for bracketed in re.findall(r"\[[^\]]+\]", (getattr(param, "help", None) or "").replace("\\[", "[")):
                if bracketed not in shown:
                    eaten.append(f"specrun {name} {param.opts[0]}: {bracketed}")
    assert not eaten, f"help text lost in --help: {eaten}"


def test_documented_spec_commands_validate(registry):
    """Each `specrun validate|plan|apply|analyze|report specs/X.toml [--set ...] [--profile P]` the docs and
    the Makefile show names a spec that validates with those overrides and that profile."""
    import itertools
    import shlex

    from specrun.errors import SpecError
    from specrun.spec.load import load_spec

    root = DOCS.parent
    shown, failures = 0, []
    for path in [README, root / "CHANGELOG.md", root / "Makefile", *sorted(DOCS.glob("*.md"))]:
        pattern = r"specrun (?:-[vq] )?(?:validate|plan|apply|analyze|report) (specs/[\w.-]+\.toml)([^\n`#|]*)"
        for match in re.finditer(pattern, path.read_text()):
            args = shlex.split(match[2])
            overrides = [value for flag, value in itertools.pairwise(args) if flag == "--set"]
            profile = next((value for flag, value in itertools.pairwise(args) if flag == "--profile"), None)
            shown += 1
            try:
                load_spec(root / match[1], overrides, registry, profile)
            except SpecError as exc:
                failures.append(f"{path.name}: {match[0].strip()}: {exc}")
    assert shown >= 15  # the extraction found them
    assert not failures, "\n".join(failures)
