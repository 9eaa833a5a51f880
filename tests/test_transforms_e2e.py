"""Transforms end to end through the CLI on the tiny model: noisy training and eval sets, few-shot k=0, bad k."""

from __future__ import annotations

import json

from specrun.runner.data import prepare_run_data

NOISE = """
[[data.transforms]]
name = "noise"
char_rate = 0.1

[data.eval_sets.noisy]
transforms = [{name = "noise", char_rate = 0.15, typo_rate = 0.05}]
"""

FEW_SHOT_SWEEP = """
[[data.transforms]]
name = "few_shot"
k = 4

[sweep]
"data.transforms.0.k" = [0, 4]
"""


def sql(cli, query: str) -> list[dict]:
    code, out, err = cli("sql", query, "-f", "json")
    assert code == 0, err
    return json.loads(out)


def test_noise_on_train_and_a_noisy_eval_set(write_spec, cli, registry):
    spec = write_spec(train="epochs = 1", extra=NOISE)
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    assert "1 completed" in err
    [run] = sql(cli, "SELECT run_id, config FROM runs WHERE status = 'completed'")
    run_id, config = run["run_id"], json.loads(run["config"])

    # both evaluation sets are predicted and scored for the same run, over the same example ids
    splits = sql(
        cli,
        f"SELECT split, count(*) AS n, list(example_id ORDER BY example_id) AS ids FROM predictions WHERE run_id = '{run_id}' GROUP BY split ORDER BY split",
    )
    assert [(s["split"], s["n"]) for s in splits] == [("noisy", 80), ("validation", 80)]
    assert splits[0]["ids"] == splits[1]["ids"]
    final = sql(
        cli, f"SELECT split FROM metrics WHERE run_id = '{run_id}' AND final AND name = 'accuracy' ORDER BY split"
    )
    assert [m["split"] for m in final] == ["noisy", "validation"]

    # provenance: train_examples holds exactly the examples the run trained on, originals plus noisy copies
    trained = sql(cli, f"SELECT example_id, label FROM train_examples WHERE run_id = '{run_id}' ORDER BY position")
    data = prepare_run_data(config, registry)
    assert [(t["example_id"], t["label"]) for t in trained] == list(zip(data.train.ids, data.train.label))
    originals = [i for i in data.train.ids if "~" not in i]
    assert len(originals) == 240 and sorted(data.train.ids) == sorted(originals + [f"{i}~noise1" for i in originals])
    label_of = dict(zip(data.train.ids, data.train.label))
    assert all(label_of[i.split("~")[0]] == y for i, y in label_of.items())
    # the noisy eval set is the validation split corrupted in place
    assert data.eval_sets["noisy"].ids == data.eval_sets["validation"].ids
    assert data.eval_sets["noisy"].text != data.eval_sets["validation"].text


def test_few_shot_sweep_with_k_zero_evaluates_the_untrained_model(write_spec, cli):
    spec = write_spec(train="epochs = 2", extra=FEW_SHOT_SWEEP)
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    assert "2 completed" in err
    rows = sql(
        cli,
        """
        SELECT CAST(r.sweep->>'$."data.transforms.0.k"' AS INTEGER) AS k,
               max(m.value) FILTER (WHERE m.split = 'cost' AND m.name = 'train_steps') AS steps,
               max(m.value) FILTER (WHERE m.split = 'validation' AND m.name = 'accuracy') AS accuracy,
               (SELECT count(*) FROM train_examples t WHERE t.run_id = r.run_id) AS trained,
               (SELECT count(DISTINCT t.label) FROM train_examples t WHERE t.run_id = r.run_id) AS labels
        FROM runs r JOIN metrics m ON m.run_id = r.run_id AND m.final
        WHERE r.status = 'completed' GROUP BY ALL ORDER BY k
    """,
    )
    assert [(r["k"], r["steps"], r["trained"], r["labels"]) for r in rows] == [(0, 0, 0, 0), (4, 2, 8, 2)]
    assert all(0 <= r["accuracy"] <= 1 for r in rows)


def test_few_shot_k_larger_than_a_class_fails_before_anything_trains(write_spec, cli, tmp_path):
    spec = write_spec(extra=FEW_SHOT_SWEEP.replace("[0, 4]", "[4, 500]"))
    # located at the sweep entry that set k = 500, which the message names
    line = next(
        i for i, text in enumerate(spec.read_text().splitlines(), 1) if text.startswith('"data.transforms.0.k"')
    )
    for command in ("plan", "apply"):
        code, out, err = cli(command, str(spec))
        assert code == 2, (command, out, err)
        message = err.strip()
        assert message.startswith(
            f"error: {spec}:{line}: data.transforms.0: (from sweep data.transforms.0.k = 500) "
            "transform 'few_shot' on split 'train': k=500 but class '0' has only"
        ), message
        assert "[1 run: " in message and "k=500 seed=0" in message
        assert "k=4" not in message  # the feasible sweep point is not blamed
    # nothing trained, not even the feasible point: the store was never created
    assert not (tmp_path / "store.duckdb").exists()


def test_a_data_problem_leaves_an_existing_store_untouched(write_spec, cli):
    good = write_spec(train="epochs = 1")
    assert cli("apply", str(good))[0] == 0
    before = sql(cli, "SELECT run_id, status FROM runs")
    bad = write_spec(name="bad", extra='[[data.transforms]]\nname = "few_shot"\nk = 500\n')
    code, _, err = cli("apply", str(bad))
    assert code == 2 and "k=500 but class" in err
    assert sql(cli, "SELECT run_id, status FROM runs") == before


def test_a_teacher_run_id_that_is_not_in_the_store_fails_before_training(write_spec, cli):
    spec = write_spec(
        extra='[[data.transforms]]\nname = "difficulty"\nteacher = "0123456789ab"\nn = 10\nstrategy = "easy"\n'
    )
    code, _, err = cli("apply", str(spec))
    assert code == 2
    assert "toy.toml:25: data.transforms.0: teacher '0123456789ab' is not a completed run in" in err


def test_a_budget_larger_than_the_split_fails_before_the_teacher_trains(write_spec, cli, tmp_path):
    write_spec(name="teacher", train="epochs = 1")
    spec = write_spec(
        extra='[[data.transforms]]\nname = "difficulty"\nteacher = "teacher.toml"\nn = 100000\nstrategy = "easy"\n'
    )
    code, _, err = cli("apply", str(spec))
    assert code == 2
    assert "budget n=100000 but the split has only 240 examples" in err
    assert not (tmp_path / "store.duckdb").exists()


def test_static_option_errors_fail_validation_with_file_line_and_key(write_spec, cli):
    spec = write_spec(extra='[[data.transforms]]\nname = "few_shot"\nk = 4\nn = 10\n')
    code, _, err = cli("validate", str(spec))
    assert code == 2
    assert "data.transforms.0: give exactly one of k, n, fraction (got k, n)" in err
    assert f"{spec}:" in err


def test_difficulty_trains_its_teacher_and_keeps_the_easiest_per_label(write_spec, cli):
    write_spec(name="teacher", train="epochs = 1")
    spec = write_spec(
        train="epochs = 1",
        extra="""
[[data.transforms]]
name = "difficulty"
teacher = "teacher.toml"
n = 40
strategy = "easy"
""",
    )
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    [student] = sql(
        cli, "SELECT run_id, config->>'$.data.transforms[0].teacher' AS teacher FROM runs WHERE experiment = 'toy'"
    )
    teacher = student["teacher"]
    assert sql(cli, f"SELECT status FROM runs WHERE run_id = '{teacher}'") == [{"status": "completed"}]
    scores = sql(cli, f"SELECT example_id, label, loss FROM example_scores WHERE teacher_run_id = '{teacher}'")
    assert len(scores) == 240
    trained = sql(cli, f"SELECT example_id, label FROM train_examples WHERE run_id = '{student['run_id']}'")
    by_label: dict[int, list] = {}
    for s in scores:
        by_label.setdefault(s["label"], []).append((s["loss"], s["example_id"]))
    for label, ranked in by_label.items():
        picked = {t["example_id"] for t in trained if t["label"] == label}
        quota = round(40 * len(ranked) / 240)
        assert abs(len(picked) - quota) <= 1
        assert picked == {i for _, i in sorted(ranked)[: len(picked)]}


def test_editing_a_synonyms_file_makes_new_runs(write_spec, cli, tmp_path):
    (tmp_path / "syn.tsv").write_text("good\tgreat\n")
    spec = write_spec(train="epochs = 1", extra='[[data.transforms]]\nname = "augment"\nsynonyms = "syn.tsv"\n')
    assert cli("apply", str(spec))[0] == 0
    code, out, _ = cli("plan", str(spec), "-f", "json")
    assert code == 0 and [r["status"] for r in json.loads(out)] == ["cached"]
    (tmp_path / "syn.tsv").write_text("good\tgreat\tfine\n")
    code, out, _ = cli("plan", str(spec), "-f", "json")
    assert code == 0 and [r["status"] for r in json.loads(out)] == ["new"]
    (tmp_path / "syn.tsv").unlink()
    code, _, err = cli("plan", str(spec))
    line = spec.read_text().splitlines().index("[[data.transforms]]") + 1
    assert code == 2 and f"{spec}:{line}: data.transforms.0: transform 'augment': synonyms file not found" in err


def test_an_eval_set_added_later_evaluates_the_completed_run_without_retraining(write_spec, cli, tmp_path):
    spec = write_spec(train="epochs = 1")
    assert cli("apply", str(spec))[0] == 0
    [before] = sql(
        cli,
        "SELECT run_id, finished_at::VARCHAR AS finished, (SELECT max(step) FROM metrics WHERE final) AS step FROM runs",
    )

    noisy = '\n[data.eval_sets.noisy]\ntransforms = [{name = "noise", char_rate = 0.15, seed = 7}]\n'
    spec.write_text(spec.read_text() + noisy)
    code, out, _ = cli("plan", str(spec), "-f", "json")
    assert code == 0 and [(r["run_id"], r["status"]) for r in json.loads(out)] == [
        (before["run_id"], "cached, will evaluate on noisy")
    ]
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    assert (
        "evaluating on noisy (no training)" in err and "newly evaluated noisy.accuracy=" in err and "1 evaluated" in err
    )
    [after] = sql(cli, "SELECT run_id, finished_at::VARCHAR AS finished FROM runs")
    assert after == {"run_id": before["run_id"], "finished": before["finished"]}  # same run, not retrained
    rows = sql(
        cli,
        "SELECT split, step, count(*) AS n FROM metrics WHERE final AND split IN ('validation', 'noisy') GROUP BY ALL ORDER BY split",
    )
    assert [(r["split"], r["step"]) for r in rows] == [("noisy", before["step"]), ("validation", before["step"])]
    counts = sql(cli, "SELECT split, count(*) AS n FROM predictions GROUP BY split ORDER BY split")
    assert counts[0]["n"] == counts[1]["n"] > 0
    assert [r["eval_set"] for r in sql(cli, "SELECT eval_set FROM evaluations")] == ["noisy"]
    late = sql(
        cli,
        "SELECT example_id, prediction, round(loss, 4) AS loss FROM predictions WHERE split = 'noisy' ORDER BY example_id",
    )

    # the same spec applied to a new store trains once and evaluates both sets: same run id, same results
    other = tmp_path / "other.duckdb"
    assert cli("apply", str(spec), "--store", str(other))[0] == 0
    code, out, _ = cli("sql", "SELECT run_id FROM runs", "--store", str(other), "-f", "json")
    assert json.loads(out) == [{"run_id": before["run_id"]}]
    code, out, _ = cli(
        "sql",
        "SELECT example_id, prediction, round(loss, 4) AS loss FROM predictions WHERE split = 'noisy' ORDER BY example_id",
        "--store",
        str(other),
        "-f",
        "json",
    )
    assert json.loads(out) == late

    code, _, err = cli("apply", str(spec))
    assert code == 0 and "1 cached" in err

    # the same name with another definition is refused before anything runs; the store is unchanged
    spec.write_text(spec.read_text().replace("char_rate = 0.15", "char_rate = 0.3"))
    code, _, err = cli("apply", str(spec))
    assert (
        code == 2
        and "data.eval_sets.noisy: these runs were already evaluated on an evaluation set 'noisy' defined differently"
        in err
    )
    assert f"[1 run: {before['run_id']} (lora seed=0)]" in err
    assert sql(cli, "SELECT count(*) AS n FROM predictions WHERE split = 'noisy'")[0]["n"] == counts[0]["n"]
    spec.write_text(spec.read_text().replace("[data.eval_sets.noisy]", "[data.eval_sets.noisier]"))
    code, _, err = cli("apply", str(spec))
    assert code == 0 and "newly evaluated noisier.accuracy=" in err
    assert [r["eval_set"] for r in sql(cli, "SELECT eval_set FROM evaluations ORDER BY eval_set")] == [
        "noisier",
        "noisy",
    ]
