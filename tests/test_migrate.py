"""Upgrading a store made by an earlier specrun: pending migrations apply on open, data kept."""

import duckdb

from specrun.store import Store
from specrun.store.migrations import MIGRATIONS


def _old_store(path, last: str) -> None:
    """A store with the migrations up to ``last`` only, as an older specrun left it."""
    db = duckdb.connect(str(path))
    db.execute("CREATE TABLE _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
    for fn in MIGRATIONS:
        if fn.__name__ > last:
            continue
        fn(db)
        db.execute("INSERT INTO _migrations VALUES (?, now())", [fn.__name__])
    db.close()


def test_m007_marks_applies_with_overrides_as_variants(tmp_path):
    path = tmp_path / "old.duckdb"
    _old_store(path, "m005_applies")
    db = duckdb.connect(str(path))
    db.execute("""INSERT INTO applies VALUES
        ('base', 'x', 'x.toml', 'h', '[]', TIMESTAMP '2026-01-01 10:00:00'),
        ('tweak', 'x', 'x.toml', 'h', '["train.epochs=1"]', TIMESTAMP '2026-01-01 11:00:00'),
        ('only', 'y', 'y.toml', 'h', '["train.epochs=1"]', TIMESTAMP '2026-01-01 11:00:00')""")
    db.execute("INSERT INTO apply_runs VALUES ('base', 'r1'), ('tweak', 'r2'), ('only', 'r3')")
    before = db.execute("SELECT experiment, run_id FROM current_runs ORDER BY 1").fetchall()
    db.close()
    assert before == [("x", "r2"), ("y", "r3")]  # m005: the override clobbered x's runs
    with Store(path).read() as db:  # a read upgrades a store whose schema is behind
        variants = db.execute("SELECT apply_id, variant FROM applies ORDER BY apply_id").fetchall()
        current = db.execute("SELECT experiment, run_id FROM current_runs ORDER BY 1").fetchall()
        done = {r[0] for r in db.execute("SELECT name FROM _migrations").fetchall()}
    assert variants == [("base", False), ("only", True), ("tweak", True)]
    assert current == [("x", "r1"), ("y", "r3")]
    assert done == {fn.__name__ for fn in MIGRATIONS}


def test_m010_records_artifact_paths_relative_to_the_store(tmp_path):
    """Paths under the store's folder become relative; so does one into a default artifacts folder the
    store was moved away from (when the moved copy is there); a SPECRUN_ARTIFACTS folder elsewhere stays."""
    home = tmp_path / "home"
    (home / "specrun-artifacts" / "r1").mkdir(parents=True)
    (home / "specrun-artifacts" / "r2").mkdir(parents=True)
    (home / "specrun-artifacts" / "r2" / "trained.safetensors").write_bytes(b"x")
    elsewhere = tmp_path / "shared-artifacts" / "r3"
    elsewhere.mkdir(parents=True)
    (elsewhere / "trained.safetensors").write_bytes(b"x")
    path = home / "old.duckdb"
    _old_store(path, "m008_transfers")
    db = duckdb.connect(str(path))
    db.executemany(
        "INSERT INTO artifacts VALUES (?, 'weights', ?, 'h', 1, now())",
        [
            ["r1", str(home / "specrun-artifacts" / "r1" / "trained.safetensors")],
            ["r2", str(tmp_path / "before-the-move" / "specrun-artifacts" / "r2" / "trained.safetensors")],
            ["r3", str(elsewhere / "trained.safetensors")],
        ],
    )
    db.close()
    with Store(path).read() as db:
        paths = dict(db.execute("SELECT run_id, path FROM artifacts").fetchall())
    assert paths == {
        "r1": "specrun-artifacts/r1/trained.safetensors",
        "r2": "specrun-artifacts/r2/trained.safetensors",
        "r3": str(elsewhere / "trained.safetensors"),
    }
