"""Benchmarks of whole processes: W1 end to end against a Trainer script, a sweep's overhead, CLI latency.

  end_to_end    ``specrun apply`` of W1 (fresh process, empty store) against ``trainer_script.py`` (fresh
                process) on the same examples; wall clock of each subprocess, alternating who goes first
  sweep         an 8-run sweep in one ``specrun apply``: its wall clock against the sum of its runs'
                training and evaluation seconds as the store records them
  cli_latency   fresh processes of the light commands, against ``python -c pass`` and ``import duckdb``

The store is also read for where an apply's time went (``timeline``): start-up and planning (launch to the
apply's row), checks before the first run, each run's span (training, evaluation, the rest: data, model,
tokenizing, latency probe, saving, recording), gaps between runs, and the tail (the last record's commit,
analyses, interpreter exit).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPECRUN = str(Path(sys.executable).parent / "specrun")
TRAINER_SCRIPT = str(HERE / "trainer_script.py")

#: The sweep of target 4: 2 ranks x 2 learning rates x 2 seeds = 8 runs of W1's settings.
SWEEP = '\n[sweep]\n"method.rank" = [8, 16]\n"train.learning_rate" = [0.001, 0.002]\n'
SWEEP_SEEDS = [0, 1]


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # the store's timestamps are naive UTC


def env(threads: int | None, artifacts: Path | None = None) -> dict:
    e = {**os.environ}
    e.pop("SPECRUN_STORE", None)
    # Processes run as installed: Python writes specrun's bytecode on the untimed first pass and reads it
    # after, as in a user's environment (site-packages has its bytecode from pip). With
    # PYTHONDONTWRITEBYTECODE (set in some shells and CI images) each process would recompile specrun's
    # ~85 modules from source, about 0.1 s, which the peers' already-compiled libraries never pay.
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    if threads:
        e["OMP_NUM_THREADS"] = str(threads)
    if artifacts is not None:
        e["SPECRUN_ARTIFACTS"] = str(artifacts)
    return e


def timed(
    args: list[str], environ: dict, cwd: Path | None = None
) -> tuple[float, subprocess.CompletedProcess, datetime]:
    """Run ``args``; (wall seconds, the finished process, its launch time in UTC). Raises if it fails."""
    launched = utcnow()
    t0 = time.perf_counter()
    done = subprocess.run(args, env=environ, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds, done, launched


# --- what the store says -------------------------------------------------------------------------


def store_runs(store: Path) -> list[dict]:
    """Completed runs, in start order: times, train and evaluation seconds, accuracy, latency probe."""
    import duckdb

    db = duckdb.connect(str(store), read_only=True)
    try:
        rows = db.execute("""
            SELECT r.run_id, r.started_at, r.finished_at, r.train_seconds,
              (SELECT value FROM metrics m WHERE m.run_id = r.run_id AND m.split = 'cost' AND m.name = 'eval_examples_per_second') AS eps,
              (SELECT value FROM metrics m WHERE m.run_id = r.run_id AND m.split = r.eval_set AND m.name = 'n_examples' AND m.final) AS n,
              (SELECT count(*) FROM metrics m WHERE m.run_id = r.run_id AND m.split = r.eval_set AND m.name = 'accuracy' AND NOT m.final) AS evals,
              (SELECT value FROM metrics m WHERE m.run_id = r.run_id AND m.split = r.eval_set AND m.name = 'accuracy' AND m.final) AS accuracy,
              (SELECT value FROM metrics m WHERE m.run_id = r.run_id AND m.split = 'cost' AND m.name = 'latency_ms_mean') AS latency_ms,
              (SELECT value FROM metrics m WHERE m.run_id = r.run_id AND m.split = 'cost' AND m.name = 'latency_examples') AS latency_n
            FROM runs r WHERE r.status = 'completed' ORDER BY r.started_at
        """).fetchall()
        applied = db.execute("SELECT min(started_at) FROM applies").fetchone()[0]
    finally:
        db.close()
    runs = []
    for run_id, started, finished, train, eps, n, evals, accuracy, latency_ms, latency_n in rows:
        # evaluation seconds: each evaluation during training is of the primary set at eps examples/s
        # (the final one is reused for the final metrics; named extra sets are not timed in the store)
        eval_seconds = max(int(evals), 1) * n / eps if eps else 0.0
        runs.append(
            {
                "run_id": run_id,
                "started_at": started,
                "finished_at": finished,
                "applied_at": applied,
                "train_seconds": train,
                "eval_seconds": eval_seconds,
                "accuracy": accuracy,
                # the batch-size-1 latency probe, estimated: timed examples (64 unless recorded) + 3 warm-ups
                "latency_probe_seconds": (latency_ms or 0.0) * ((latency_n or 64) + 3) / 1000,
            }
        )
    return runs


def timeline(store: Path, launched: datetime, wall: float) -> dict:
    """Where an apply's wall time went, from the store's timestamps and cost metrics."""
    runs = store_runs(store)
    spans = [(r["finished_at"] - r["started_at"]).total_seconds() for r in runs]
    train = sum(r["train_seconds"] for r in runs)
    evaluation = sum(r["eval_seconds"] for r in runs)
    probe = sum(r["latency_probe_seconds"] for r in runs)
    gaps = sum((b["started_at"] - a["finished_at"]).total_seconds() for a, b in itertools.pairwise(runs))
    first, last = runs[0], runs[-1]
    return {
        "wall": wall,
        "runs": len(runs),
        "startup_and_planning": (first["applied_at"] - launched).total_seconds(),
        "checks_before_first_run": (first["started_at"] - first["applied_at"]).total_seconds(),
        "run_spans": sum(spans),
        "train": train,
        "eval": evaluation,
        "latency_probe_estimate": probe,
        "in_runs_other": sum(spans) - train - evaluation - probe,
        "between_runs": gaps,
        "tail": wall - (last["finished_at"] - launched).total_seconds(),
        "accuracy": [r["accuracy"] for r in runs],
    }


def describe_timeline(t: dict) -> str:
    return (
        f"start-up+planning {t['startup_and_planning']:.1f}, checks {t['checks_before_first_run']:.1f}, "
        f"train {t['train']:.1f}, eval {t['eval']:.1f}, latency probe ~{t['latency_probe_estimate']:.1f}, "
        f"other in runs {t['in_runs_other']:.1f}, between runs {t['between_runs']:.1f}, tail {t['tail']:.1f} s"
    )


# --- target 3: end to end ------------------------------------------------------------------------


def write_examples(work, folder: Path) -> tuple[Path, Path]:
    """The workload's training and dev examples as JSONL for trainer_script.py."""
    paths = []
    for name, examples in (("train", work.train), ("dev", work.dev)):
        path = folder / f"{name}.jsonl"
        with path.open("w") as f:
            for text, label in zip(examples.text, examples.label):
                f.write(json.dumps({"text": text, "label": int(label)}) + "\n")
        paths.append(path)
    return paths[0], paths[1]


def end_to_end(
    folder: Path,
    rounds: int,
    threads: int | None,
    train_examples: int,
    max_length: int,
    max_eval_examples: int | None = None,
    warmup: bool = True,
    log=print,
) -> dict:
    """W1 as ``specrun apply`` (fresh process, empty store) against trainer_script.py, ``rounds`` times;
    round r uses seed r for both. Ratio per round: trainer-script wall / specrun wall."""
    from bench_trainer import Workload

    def one(r: int, n_train: int, n_eval: int | None, tag: str) -> dict:
        sub = folder / f"e2e-{tag}{r}"
        sub.mkdir(parents=True)
        work = Workload(sub, n_train, max_length, seed=r, max_eval_examples=n_eval)
        train_file, dev_file = write_examples(work, sub)
        store = sub / "store.duckdb"
        peers = {
            "specrun": (
                [SPECRUN, "-q", "apply", str(work.spec_path), "--store", str(store)],
                env(threads, sub / "artifacts"),
            ),
            "trainer_script": (
                [
                    sys.executable,
                    TRAINER_SCRIPT,
                    "--train",
                    str(train_file),
                    "--dev",
                    str(dev_file),
                    "--seed",
                    str(r),
                    "--max-length",
                    str(max_length),
                    "--output-dir",
                    str(sub / "trainer-out"),
                ],
                env(threads),
            ),
        }
        out = {}
        for name in list(peers) if r % 2 == 0 else list(peers)[::-1]:
            args, environ = peers[name]
            wall, done, launched = timed(args, environ, cwd=sub)
            out[name] = {"wall": wall, "launched": launched}
            if name == "trainer_script":
                out[name].update(json.loads(done.stdout.strip().splitlines()[-1]))
        out["specrun"].update(timeline(store, out["specrun"].pop("launched"), out["specrun"]["wall"]))
        out["trainer_script"].pop("launched")
        out["specrun"]["accuracy"] = out["specrun"]["accuracy"][0]
        return out

    if warmup:  # page cache, dataset cache, first-import costs: not on whoever happens to go first
        one(0, min(train_examples, 128), min(max_eval_examples or 64, 64), "warmup")
    results = []
    for r in range(rounds):
        res = one(r, train_examples, max_eval_examples, "")
        res["ratio"] = res["trainer_script"]["wall"] / res["specrun"]["wall"]
        results.append(res)
        s, t = res["specrun"], res["trainer_script"]
        log(
            f"  e2e seed {r}: specrun {s['wall']:.1f} s (acc {s['accuracy']:.4f}), trainer script {t['wall']:.1f} s "
            f"(acc {t['accuracy']:.4f}): {res['ratio']:.2f}x"
        )
        log(f"    specrun: {describe_timeline(s)}")
        log("    trainer script: " + ", ".join(f"{k} {v:.1f}" for k, v in t["seconds"].items()) + " s")
    per_round = [r["ratio"] for r in results]
    return {
        "threads": threads,
        "train_examples": train_examples,
        "rounds": results,
        "per_round": per_round,
        "ratio": statistics.median(per_round),
    }


# --- target 4: sweep overhead --------------------------------------------------------------------


def sweep_spec(folder: Path, train_examples: int, max_length: int, max_eval_examples: int | None = None) -> Path:
    from bench_trainer import spec_text

    spec = folder / "sweep.toml"
    spec.write_text(
        spec_text(
            train_examples, max_length, 0, name="bench-sweep", seeds=SWEEP_SEEDS, max_eval_examples=max_eval_examples
        )
        + SWEEP
    )
    return spec


def sweep(
    folder: Path,
    rounds: int,
    threads: int | None,
    train_examples: int,
    max_length: int,
    max_eval_examples: int | None = None,
    log=print,
) -> dict:
    """The 8-run sweep as one ``specrun apply`` (fresh process, empty store), ``rounds`` times; ratio per
    round: wall / sum over runs of (train + eval seconds)."""
    spec = sweep_spec(folder, train_examples, max_length, max_eval_examples)
    results = []
    for r in range(rounds):
        store = folder / f"sweep-{r}.duckdb"
        wall, _, launched = timed(
            [SPECRUN, "-q", "apply", str(spec), "--store", str(store)],
            env(threads, folder / f"sweep-artifacts-{r}"),
            cwd=folder,
        )
        t = timeline(store, launched, wall)
        t["ratio"] = wall / (t["train"] + t["eval"])
        t["store"] = str(store)
        results.append(t)
        log(
            f"  sweep round {r}: {t['runs']} runs, wall {wall:.1f} s, train+eval {t['train'] + t['eval']:.1f} s: {t['ratio']:.3f}"
        )
        log(f"    {describe_timeline(t)}")
    per_round = [t["ratio"] for t in results]
    return {
        "spec": spec.read_text(),
        "threads": threads,
        "train_examples": train_examples,
        "rounds": results,
        "per_round": per_round,
        "ratio": statistics.median(per_round),
    }


# --- target 6: CLI latency -----------------------------------------------------------------------


def import_profile(args: list[str], environ: dict, cwd: Path) -> dict:
    """Import seconds of a command by top-level package (``python -X importtime``: each module's own
    time, summed per package, so nothing counts twice), the largest first; and whether torch was imported.
    -X importtime itself slows imports a little."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args], env=environ, cwd=cwd, capture_output=True, text=True
    )
    packages: dict[str, float] = {}
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3:
            continue
        try:
            own = int(parts[0].removeprefix("import time:")) / 1e6
        except ValueError:
            continue  # the header line
        root = parts[2].strip().split(".")[0]
        packages[root] = packages.get(root, 0.0) + own
    ranked = dict(sorted(packages.items(), key=lambda kv: -kv[1]))
    return {"import_seconds": sum(packages.values()), "imports": ranked, "torch": "torch" in packages}


def cli_latency(folder: Path, repeats: int, spec: Path, store: Path, log=print) -> dict:
    """Median wall seconds of fresh processes of each light command (``spec``'s runs are in ``store``),
    ``repeats`` times each, the commands interleaved (each repeat starts with another command)."""
    py = sys.executable
    commands = {
        "python -c pass": [py, "-c", "pass"],
        "python -c 'import duckdb'": [py, "-c", "import duckdb"],
        "python -c 'import torch'": [py, "-c", "import torch"],
        "specrun --help": [SPECRUN, "--help"],
        "specrun validate SPEC": [SPECRUN, "validate", str(spec)],
        "specrun plan SPEC (cached)": [SPECRUN, "plan", str(spec), "--store", str(store)],
        "specrun runs": [SPECRUN, "runs", "--store", str(store)],
        'specrun sql "select 1"': [SPECRUN, "sql", "select 1", "--store", str(store)],
        "specrun plugins": [SPECRUN, "plugins"],
    }
    environ = env(None)
    names = list(commands)
    times: dict[str, list[float]] = {n: [] for n in names}
    for name in names:  # warm-up: the page cache of every library these load, specrun's bytecode
        _, done, _ = timed(commands[name], environ, cwd=folder)
        if name.startswith("specrun plan") and (
            "cached" not in done.stdout or re.search(r"\bnew\b|will (fail|rerun|resume)", done.stdout)
        ):
            log(f"  warning: {name} does not show every run as cached:\n{done.stdout[-2000:]}")
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(timed(commands[name], environ, cwd=folder)[0])
    results = {}
    for name in names:
        entry = {"median": statistics.median(times[name]), "runs": times[name]}
        if name.startswith("specrun"):
            entry.update(import_profile(["-m", "specrun", *commands[name][1:]], environ, folder))
        results[name] = entry
        imports = ", ".join(f"{k} {v:.2f}" for k, v in list(entry.get("imports", {}).items())[:5])
        log(
            f"  {name:30s} median {entry['median']:.2f} s  ({', '.join(f'{t:.2f}' for t in times[name])})"
            + (f"  imports {entry['import_seconds']:.2f} s: {imports}" if imports else "")
        )
    return {"repeats": repeats, "bytecode": "written on the untimed pass, then read", "commands": results}
