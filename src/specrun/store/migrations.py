"""The store's schema, as an append-only list of numbered migrations.

Never edit a migration that has shipped: add ``m00N_...`` at the end. Each runs once per store, in
order, inside a transaction, and is recorded in ``_migrations``. docs/store.md documents the result.
"""

from __future__ import annotations

from collections.abc import Callable

MIGRATIONS: list[Callable] = []


def migration(fn: Callable) -> Callable:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_initial(db):
    db.execute("""
        CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY,
            experiment VARCHAR,
            status VARCHAR NOT NULL,
            method VARCHAR,
            dataset VARCHAR,
            model VARCHAR,
            seed INTEGER,
            eval_set VARCHAR,
            config JSON,
            sweep JSON,
            created_at TIMESTAMP,
            started_at TIMESTAMP,
            finished_at TIMESTAMP,
            train_seconds DOUBLE,
            error VARCHAR,
            environment JSON,
            host VARCHAR,
            pid INTEGER,
            attempts INTEGER DEFAULT 0
        )
    """)
    db.execute("""
        CREATE TABLE experiment_runs (
            experiment VARCHAR,
            run_id VARCHAR,
            spec_path VARCHAR,
            linked_at TIMESTAMP,
            PRIMARY KEY (experiment, run_id)
        )
    """)
    db.execute("""
        CREATE TABLE metrics (
            run_id VARCHAR,
            step INTEGER,
            epoch DOUBLE,
            split VARCHAR,
            name VARCHAR,
            value DOUBLE,
            final BOOLEAN
        )
    """)
    db.execute("""
        CREATE TABLE predictions (
            run_id VARCHAR,
            split VARCHAR,
            example_id VARCHAR,
            label INTEGER,
            prediction INTEGER,
            confidence DOUBLE,
            loss DOUBLE
        )
    """)
    db.execute("""
        CREATE TABLE artifacts (
            run_id VARCHAR,
            kind VARCHAR,
            path VARCHAR,
            sha256 VARCHAR,
            bytes BIGINT,
            created_at TIMESTAMP
        )
    """)
    db.execute("""
        CREATE TABLE train_examples (
            run_id VARCHAR,
            position INTEGER,
            example_id VARCHAR,
            label INTEGER
        )
    """)


@migration
def m002_run_summary(db):
    db.execute("""
        CREATE VIEW run_summary AS
        SELECT
            r.run_id, r.experiment, r.status, r.method, r.dataset, r.model, r.seed, r.sweep,
            max(m.value) FILTER (WHERE m.split = r.eval_set AND m.name = 'accuracy') AS accuracy,
            max(m.value) FILTER (WHERE m.split = r.eval_set AND m.name = 'f1') AS f1,
            max(m.value) FILTER (WHERE m.split = r.eval_set AND m.name = 'loss') AS eval_loss,
            max(m.value) FILTER (WHERE m.split = 'cost' AND m.name = 'trainable_params') AS trainable_params,
            max(m.value) FILTER (WHERE m.split = 'cost' AND m.name = 'total_params') AS total_params,
            max(m.value) FILTER (WHERE m.split = 'cost' AND m.name = 'trainable_pct') AS trainable_pct,
            max(m.value) FILTER (WHERE m.split = 'cost' AND m.name = 'train_seconds') AS train_seconds,
            max(m.value) FILTER (WHERE m.split = 'cost' AND m.name = 'samples_per_second') AS samples_per_second,
            max(m.value) FILTER (WHERE m.split = 'cost' AND m.name = 'peak_memory_mb') AS peak_memory_mb,
            r.finished_at
        FROM runs r
        LEFT JOIN metrics m ON m.run_id = r.run_id AND m.final
        GROUP BY ALL
    """)


@migration
def m003_example_scores(db):
    db.execute("""
        CREATE TABLE example_scores (
            teacher_run_id VARCHAR,
            example_id VARCHAR,
            text_hash VARCHAR,
            label INTEGER,
            loss DOUBLE,
            scored_at TIMESTAMP
        )
    """)


@migration
def m004_evaluations(db):
    """Which named evaluation sets each run was evaluated on, and their definitions (a completed run is
    evaluated on an evaluation set added later without retraining)."""
    db.execute("""
        CREATE TABLE evaluations (
            run_id VARCHAR,
            eval_set VARCHAR,
            definition JSON,
            fingerprint VARCHAR,
            evaluated_at TIMESTAMP,
            PRIMARY KEY (run_id, eval_set)
        )
    """)


@migration
def m005_applies(db):
    """Each ``specrun apply`` and the runs its spec expanded into, so that queries can take an
    experiment's runs as its latest apply defined them (``current_runs``), not every run any earlier
    version of the spec produced (``experiment_runs``)."""
    db.execute("""
        CREATE TABLE applies (
            apply_id VARCHAR PRIMARY KEY,
            experiment VARCHAR,
            spec_path VARCHAR,
            spec_sha256 VARCHAR,
            overrides JSON,
            started_at TIMESTAMP
        )
    """)
    db.execute("CREATE TABLE apply_runs (apply_id VARCHAR, run_id VARCHAR, PRIMARY KEY (apply_id, run_id))")
    db.execute("""
        CREATE VIEW current_runs AS
        SELECT a.experiment, ar.run_id, a.apply_id, a.spec_path, a.started_at AS applied_at
        FROM applies a
        JOIN apply_runs ar USING (apply_id)
        WHERE a.apply_id = (
            SELECT b.apply_id FROM applies b WHERE b.experiment = a.experiment ORDER BY b.started_at DESC, b.apply_id DESC LIMIT 1
        )
    """)


@migration
def m006_analyses(db):
    """Analyses computed over an experiment's runs (their results live in tables named after each
    analysis plugin, created when first written), and the spec text of each apply, so that
    ``specrun analyze EXPERIMENT`` and ``specrun report EXPERIMENT`` work without the spec file."""
    db.execute("""
        CREATE TABLE analyses (
            experiment VARCHAR,
            analysis VARCHAR,
            name VARCHAR,
            options JSON,
            run_ids JSON,
            inputs_sha256 VARCHAR,
            status VARCHAR,
            error VARCHAR,
            result_tables JSON,
            computed_at TIMESTAMP,
            seconds DOUBLE,
            PRIMARY KEY (experiment, analysis)
        )
    """)
    db.execute("ALTER TABLE applies ADD COLUMN spec_text VARCHAR")


@migration
def m007_apply_variants(db):
    """An apply with ``--set`` overrides is a variant of its experiment (``applies.variant``): it no
    longer replaces the experiment's ``current_runs``, which come from the latest apply without
    overrides (from the latest apply, when every apply so far had overrides)."""
    db.execute("ALTER TABLE applies ADD COLUMN variant BOOLEAN DEFAULT false")
    db.execute("UPDATE applies SET variant = coalesce(json_array_length(overrides), 0) > 0")
    db.execute("""
        CREATE OR REPLACE VIEW current_runs AS
        SELECT a.experiment, ar.run_id, a.apply_id, a.spec_path, a.started_at AS applied_at
        FROM applies a
        JOIN apply_runs ar USING (apply_id)
        WHERE a.apply_id = (
            SELECT b.apply_id FROM applies b WHERE b.experiment = a.experiment
            ORDER BY b.variant, b.started_at DESC, b.apply_id DESC LIMIT 1
        )
    """)


@migration
def m008_transfers(db):
    """What each ``model.init_from`` loaded (``transfers``); and each apply's profile and effective spec
    tree (``extends`` and the profile applied), so that analyses of an experiment read the spec it ran."""
    db.execute("""
        CREATE TABLE transfers (
            run_id VARCHAR PRIMARY KEY,
            source_run_id VARCHAR,
            source_method VARCHAR,
            source_tensors INTEGER,
            loaded INTEGER,
            frozen INTEGER,
            shape_mismatch INTEGER,
            no_place INTEGER,
            head INTEGER,
            details JSON
        )
    """)
    db.execute("ALTER TABLE applies ADD COLUMN profile VARCHAR")
    db.execute("ALTER TABLE applies ADD COLUMN spec_tree JSON")


@migration
def m009_app_predictions(db):
    """Predictions made in ``specrun app`` when it was started with ``--record`` (browsing writes nothing
    otherwise): one row per text and run, grouped by the request that made them."""
    db.execute("""
        CREATE TABLE app_predictions (
            request_id VARCHAR,
            run_id VARCHAR,
            position INTEGER,
            source VARCHAR,
            text VARCHAR,
            text_pair VARCHAR,
            label VARCHAR,
            prediction VARCHAR,
            confidence DOUBLE,
            latency_ms DOUBLE,
            recorded_at TIMESTAMP,
            PRIMARY KEY (request_id, run_id, position)
        )
    """)


@migration
def m010_relative_artifact_paths(db):
    """Artifact paths relative to the store's folder, so that a store moved together with its
    ``specrun-artifacts/`` folder still finds its weights. A path under the store's folder becomes
    relative; so does one into a ``specrun-artifacts/<run_id>/`` folder elsewhere that no longer exists
    when the store's own folder holds that file (a store moved before this upgrade). Other paths (a
    ``SPECRUN_ARTIFACTS`` folder of its own) stay absolute."""
    from pathlib import Path

    found = db.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    if not found or not found[0]:
        return
    folder = Path(found[0]).resolve().parent
    rows = db.execute("SELECT DISTINCT run_id, path FROM artifacts WHERE path IS NOT NULL").fetchall()
    for run_id, path in rows:
        old = Path(path)
        if not old.is_absolute():
            continue
        new = None
        if old.resolve().is_relative_to(folder):
            new = old.resolve().relative_to(folder)
        elif old.parent.name == run_id and old.parent.parent.name == "specrun-artifacts" and not old.exists():
            moved = Path("specrun-artifacts") / run_id / old.name
            if (folder / moved).exists():
                new = moved
        if new is not None:
            db.execute("UPDATE artifacts SET path = ? WHERE run_id = ? AND path = ?", [new.as_posix(), run_id, path])


@migration
def m011_memory_kind(db):
    """What each run's ``peak_memory_mb`` measures (``runs.memory_kind``): ``cpu_rss_growth`` (the
    process's resident memory growth, sampled) or ``cuda_allocated_peak`` (torch's allocator peak on the
    device). The two are not comparable. Runs recorded before are given the kind of the device their
    environment names."""
    db.execute("ALTER TABLE runs ADD COLUMN memory_kind VARCHAR")
    db.execute("""
        UPDATE runs SET memory_kind = CASE WHEN json_extract_string(environment, '$.device') LIKE 'cuda%' THEN 'cuda_allocated_peak'
                                           ELSE 'cpu_rss_growth' END
        WHERE json_extract_string(environment, '$.device') IS NOT NULL
          AND run_id IN (SELECT run_id FROM metrics WHERE split = 'cost' AND name = 'peak_memory_mb')
    """)


@migration
def m012_skipped_steps(db):
    """``runs.skipped_steps``: optimizer steps an fp16 run skipped because its gradient scaler found
    inf/NaN gradients (0 for bf16 and fp32 runs, which need no loss scaling). NULL for runs recorded
    before this migration: not counted then (fp16 trained without a scaler)."""
    db.execute("ALTER TABLE runs ADD COLUMN skipped_steps INTEGER")


@migration
def m013_inputs_fingerprint(db):
    """``runs.inputs_fingerprint``: what shapes a run's result but is not in its id (which hashes the
    model's name, so ids of existing runs stay as they are): the content hash of a local model folder,
    the hub commit a hub model resolved to, the bitsandbytes version of quantized runs. A completed run
    whose recorded fingerprint differs from the planned one is stale: ``plan`` says so and ``apply``
    trains it again. Runs recorded before this migration have NULL: they stay cached (their inputs
    cannot be known), and the next apply that finds one cached records the current fingerprint."""
    db.execute("ALTER TABLE runs ADD COLUMN inputs_fingerprint JSON")


@migration
def m014_search(db):
    """Adaptive search (issue 24): a run a search's pruner stopped is 'pruned' with the step it stopped
    at (``runs.pruned_step``; its metrics are the learning curve so far), and each search trial's
    configuration, runs and outcome (``search_trials``)."""
    db.execute("ALTER TABLE runs ADD COLUMN pruned_step BIGINT")
    db.execute("""
        CREATE TABLE search_trials (
            experiment VARCHAR NOT NULL,
            trial INTEGER NOT NULL,
            run_id VARCHAR NOT NULL,
            seed BIGINT,
            params JSON,
            state VARCHAR,
            value DOUBLE,
            recorded_at TIMESTAMP,
            PRIMARY KEY (experiment, trial, run_id)
        )
    """)


@migration
def m015_qa_predictions(db):
    """Per-question predictions of extractive-QA runs (``[task] name = "extractive_qa"``): keyed by the
    question's own id from the data; the predicted answer text, its score (the softmax of its start+end
    logit over the n-best candidate spans; 0 for the empty answer), its SQuAD v1.1 exact match and F1
    against the reference answers (a JSON list of their texts). Classification runs keep writing
    ``predictions``."""
    db.execute("""
        CREATE TABLE qa_predictions (
            run_id VARCHAR,
            split VARCHAR,
            question_id VARCHAR,
            prediction_text VARCHAR,
            score DOUBLE,
            exact_match DOUBLE,
            f1 DOUBLE,
            answers JSON
        )
    """)


@migration
def m016_run_summary_exact_match(db):
    """``run_summary`` gains ``exact_match`` (extractive-QA runs' SQuAD exact match on the primary
    evaluation set; NULL for classification runs), as its last column: every earlier column keeps its
    name and position."""
    db.execute("""
        CREATE OR REPLACE VIEW run_summary AS
        SELECT
            r.run_id, r.experiment, r.status, r.method, r.dataset, r.model, r.seed, r.sweep,
            max(m.value) FILTER (WHERE m.split = r.eval_set AND m.name = 'accuracy') AS accuracy,
            max(m.value) FILTER (WHERE m.split = r.eval_set AND m.name = 'f1') AS f1,
            max(m.value) FILTER (WHERE m.split = r.eval_set AND m.name = 'loss') AS eval_loss,
            max(m.value) FILTER (WHERE m.split = 'cost' AND m.name = 'trainable_params') AS trainable_params,
            max(m.value) FILTER (WHERE m.split = 'cost' AND m.name = 'total_params') AS total_params,
            max(m.value) FILTER (WHERE m.split = 'cost' AND m.name = 'trainable_pct') AS trainable_pct,
            max(m.value) FILTER (WHERE m.split = 'cost' AND m.name = 'train_seconds') AS train_seconds,
            max(m.value) FILTER (WHERE m.split = 'cost' AND m.name = 'samples_per_second') AS samples_per_second,
            max(m.value) FILTER (WHERE m.split = 'cost' AND m.name = 'peak_memory_mb') AS peak_memory_mb,
            r.finished_at,
            max(m.value) FILTER (WHERE m.split = r.eval_set AND m.name = 'exact_match') AS exact_match
        FROM runs r
        LEFT JOIN metrics m ON m.run_id = r.run_id AND m.final
        GROUP BY ALL
    """)
