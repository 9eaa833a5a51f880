"""Tasks as plugins (issue 20): the SQuAD v1.1 metric against hand-computed cases, SQuAD files and their bad
input, the task contract on both built-in tasks, an extractive-QA run end to end (stored per-question
rows that give back the headline, predict, analyses), refusals, and run ids that did not move."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED_DATA

from specrun.core.qa import read_squad, split_by_article, to_examples
from specrun.core.squad import exact_match_score, f1_score, normalize_answer, question_scores, squad_scores
from specrun.errors import DataError
from specrun.testing.qa import qa_spec, toy_squad, write_toy_squad

# --- the metric (official evaluate-v1.1.py logic), on cases computed by hand --------------------------


def test_normalisation_lowers_and_strips_punctuation_articles_and_whitespace():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("  an apple, A pear and THE plum. ") == "apple pear and plum"
    assert normalize_answer("theory") == "theory"  # "the" inside a word stays
    assert normalize_answer("a") == ""


def test_exact_match_and_f1_by_hand():
    assert exact_match_score("the Denver Broncos", "Denver Broncos!") == 1.0
    assert exact_match_score("Denver", "Denver Broncos") == 0.0
    # prediction "denver broncos team" vs "denver broncos": 2 common, P = 2/3, R = 1, F1 = 0.8
    assert f1_score("Denver Broncos team", "the Denver Broncos") == pytest.approx(0.8)
    # repeated tokens count with multiplicity: "x y y" vs "y z": common 1 ("y" once), P = 1/3, R = 1/2, F1 = 0.4
    assert f1_score("x y y", "y z") == pytest.approx(0.4)
    assert f1_score("y y", "y y z") == pytest.approx(0.8)  # common 2, P = 1, R = 2/3
    assert f1_score("nothing shared", "other words") == 0.0


def test_the_maximum_over_references_and_the_empty_prediction():
    em, f1 = question_scores("Broncos", ["Denver Broncos", "the Broncos", "Carolina"])
    assert em == 1.0 and f1 == 1.0  # "the Broncos" normalises to "broncos"
    em, f1 = question_scores("Santa Clara California", ["Levi's Stadium", "Santa Clara"])
    assert em == 0.0 and f1 == pytest.approx(0.8)  # P = 2/3, R = 1
    assert question_scores("", ["Denver"]) == (0.0, 0.0)
    assert question_scores("the", ["a"]) == (1.0, 0.0)  # v1.1: equal after normalisation, but no token in common
    scores = squad_scores(
        ["Denver Broncos", "", "Santa Clara California"], [["Denver Broncos"], ["x"], ["Santa Clara"]]
    )
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx((1 + 0 + 0.8) / 3)


# --- SQuAD files --------------------------------------------------------------------------------------


def _write(tmp_path, tree, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(tree))
    return path


def test_squad_files_are_checked_with_the_place_of_each_problem(tmp_path):
    good = toy_squad(1, seed=0)
    assert len(to_examples(read_squad(_write(tmp_path, good, "good.json")))) == 3 * 8

    wrong_start = json.loads(json.dumps(good))
    wrong_start["data"][0]["paragraphs"][1]["qas"][2]["answers"][0]["answer_start"] += 1
    with pytest.raises(
        DataError, match=r"data\[0\]\.paragraphs\[1\]\.qas\[2\].*answers\[0\]: answer_start \d+ does not point at"
    ):
        read_squad(_write(tmp_path, wrong_start))

    empty = json.loads(json.dumps(good))
    empty["data"][0]["paragraphs"][0]["context"] = "  "
    with pytest.raises(DataError, match=r"paragraphs\[0\]\.context: the context is empty"):
        read_squad(_write(tmp_path, empty))

    missing = json.loads(json.dumps(good))
    del missing["data"][0]["paragraphs"][2]["qas"][0]["question"]
    with pytest.raises(DataError, match=r"paragraphs\[2\]\.qas\[0\] \(id .*\): missing field 'question'"):
        read_squad(_write(tmp_path, missing))


@pytest.mark.skipif(not (SHARED_DATA / "squad" / "dev-v1.1.json").is_file(), reason="needs ../shared/data/squad")
def test_the_dev_file_splits_by_article_deterministically():
    articles = read_squad(SHARED_DATA / "squad" / "dev-v1.1.json")
    assert (len(articles), sum(len(a.rows) for a in articles)) == (48, 10570)
    train, held_out = split_by_article(articles, 0.25)
    assert len(held_out) == 12 and len(train) == 36
    assert not {a.title for a in train} & {a.title for a in held_out}
    assert [a.title for a in split_by_article(articles, 0.25)[1]] == [a.title for a in held_out]
    train_contexts = {r[2] for a in train for r in a.rows}
    assert not any(r[2] in train_contexts for a in held_out for r in a.rows)  # no shared paragraph


@pytest.mark.skipif(not (SHARED_DATA / "squad" / "dev-v1.1.json").is_file(), reason="needs ../shared/data/squad")
def test_the_squad_source_reads_the_local_dev_file_and_describes_its_split(registry):
    from specrun.plugins.api import DataContext

    source = registry.get("dataset", "squad")
    dataset = source.load(source.Options(), DataContext(data_dir=str(SHARED_DATA)))
    assert {name: len(split) for name, split in dataset.splits.items()} == {"train": 8686, "validation": 1884}
    assert "split by article: 12 of 48 articles (1884 questions) for validation" in dataset.description
    assert not set(dataset.splits["train"].title) & set(dataset.splits["validation"].title)
    with pytest.raises(DataError, match="source = 'local' needs"):
        source.load(source.Options(source="local"), DataContext(data_dir=None))


# --- the task contract ----------------------------------------------------------------------------------


def test_extractive_qa_passes_the_task_contract(specrun_registry, tiny_model_dir, tmp_path):
    from specrun.testing import check_task

    data = write_toy_squad(tmp_path / "squad")
    report = check_task(
        specrun_registry,
        "extractive_qa",
        {"doc_stride": 8},
        model_dir=tiny_model_dir,
        workdir=tmp_path / "qa",
        data={
            "dataset": "local",
            "options": {"files": {"train": str(data / "train.json"), "validation": str(data / "dev.json")}},
        },
        max_length=32,
    )
    assert report.n_train_features > 288  # contexts longer than a window: several windows per question
    assert report.metrics_after["f1"] > report.metrics_before["f1"]


def test_classification_passes_the_task_contract(specrun_registry, tuned_model_dir, toy_data, tmp_path):
    from specrun.testing import check_task

    report = check_task(
        specrun_registry,
        "classification",
        model_dir=tuned_model_dir,
        workdir=tmp_path / "cls",
        max_length=32,
        data={
            "dataset": "local",
            "options": {"files": {"train": str(toy_data / "train.tsv"), "validation": str(toy_data / "dev.tsv")}},
        },
        learning_rate=1e-3,
    )
    assert set(report.metrics_after) >= {"accuracy", "f1", "loss"}


def test_qa_windows_map_answers_to_their_tokens(specrun_registry, tiny_model_dir, tmp_path):
    """Each window that holds the answer points at the tokens whose characters are the answer; the
    others point at [CLS]."""
    from specrun.core.qa import QAExamples
    from specrun.plugins.api import TaskContext
    from specrun.runner.modeling import load_tokenizer

    task = specrun_registry.get("task", "extractive_qa")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    context = " ".join(
        f"the {o} is {c} ."
        for o, c in zip(
            ["car", "boat", "door", "hat", "cup", "lamp"], ["red", "blue", "green", "pink", "white", "brown"]
        )
    )
    start = context.index("white")
    examples = QAExamples(("q1",), ("what color is the cup ?",), (context,), ((("white", start),),), ("t",))
    ctx = TaskContext(tokenizer, 24, task.Options(doc_stride=6), ())
    features = task.encode(examples, ctx, training=True)
    assert len(features) > 1
    holding = [f for f in range(len(features)) if features.start_positions[f] != 0]
    assert holding and len(holding) < len(features)
    for f in holding:
        s, e = features.start_positions[f], features.end_positions[f]
        assert context[features.offsets[f][s][0] : features.offsets[f][e][1]] == "white"


def test_questions_that_cannot_be_used_are_counted_not_dropped(specrun_registry, tiny_model_dir):
    from specrun.core.qa import QAExamples
    from specrun.plugins.api import TaskContext
    from specrun.runner.modeling import load_tokenizer

    task = specrun_registry.get("task", "extractive_qa")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    long_answer = " ".join(["word"] * 30)
    context = f"short . {long_answer} . end"
    examples = QAExamples(
        ("ok", "long-question", "long-answer"),
        ("what is short ?", " ".join(["why"] * 40) + " ?", "what is long ?"),
        ("short . end", "short . end", context),
        ((("short", 0),), (("short", 0),), ((long_answer, context.index(long_answer)),)),
        ("t", "t", "t"),
    )
    ctx = TaskContext(tokenizer, 24, task.Options(doc_stride=4), ())
    train = task.encode(examples, ctx, training=True)
    assert task.skipped(train) == {"question_too_long": 1, "answer_in_no_window": 1}
    assert set(train.example_index.tolist()) == {0}
    evaluation = task.encode(examples, ctx, training=False)
    assert task.skipped(evaluation) == {"question_too_long": 1}
    assert evaluation.unanswered == (1,)  # answered with the empty answer: scored 0, never left out of the mean


# --- an extractive-QA run end to end --------------------------------------------------------------------


def test_a_qa_run_stores_per_question_rows_that_give_back_its_headline(specrun_registry, tiny_model_dir, tmp_path):
    from specrun.testing.toy import run_cli, run_spec

    data = write_toy_squad(tmp_path / "squad")
    extra = """
[sweep]
method = [{ name = "full" }, { name = "bitfit" }]

[[analyses]]
name = "paired_comparison"

[[analyses]]
name = "bootstrap_ci"
metric = "f1"
"""
    result = run_spec(qa_spec(tiny_model_dir, data, extra=extra, train="max_steps = 20"), tmp_path)
    assert [r["status"] for r in result.runs] == ["completed", "completed"]
    for run in result.runs:
        headline = {
            r["name"]: r["value"]
            for r in result.sql(
                "SELECT name, value FROM metrics WHERE run_id = ? AND final AND split = 'validation'", [run["run_id"]]
            )
        }
        stored = result.sql(
            "SELECT avg(exact_match) AS em, avg(f1) AS f1, count(*) AS n, count(DISTINCT question_id) AS ids "
            "FROM qa_predictions WHERE run_id = ? AND split = 'validation'",
            [run["run_id"]],
        )[0]
        assert stored["n"] == stored["ids"] == headline["n_examples"] == 72
        assert stored["em"] == pytest.approx(headline["exact_match"], abs=1e-12)
        assert stored["f1"] == pytest.approx(headline["f1"], abs=1e-12)
        summary = result.sql("SELECT accuracy, f1, exact_match FROM run_summary WHERE run_id = ?", [run["run_id"]])[0]
        assert summary == {"accuracy": None, "f1": headline["f1"], "exact_match": headline["exact_match"]}
        rows = result.sql(
            "SELECT question_id, prediction_text, exact_match, f1, answers FROM qa_predictions WHERE run_id = ?",
            [run["run_id"]],
        )
        for row in rows:  # each row's EM and F1 are the official ones of its text against its references
            assert (row["exact_match"], row["f1"]) == pytest.approx(
                question_scores(row["prediction_text"], json.loads(row["answers"]))
            )
        assert {r["question_id"] for r in rows} == {
            f"s2a{a}p{p}q{q}" for a in range(3) for p in range(3) for q in range(8)
        }
        data_info = json.loads(
            result.sql("SELECT environment->'data' AS d FROM runs WHERE run_id = ?", [run["run_id"]])[0]["d"]
        )
        assert data_info["task"] == "extractive_qa"
        assert result.sql("SELECT count(*) AS n FROM predictions WHERE run_id = ?", [run["run_id"]])[0]["n"] == 0
    pairs = result.sql("SELECT n_examples, accuracy_a, accuracy_b FROM paired_comparison")
    assert len(pairs) == 1 and pairs[0]["n_examples"] == 72
    cis = result.sql("SELECT metric, value, ci_low, ci_high, n_examples FROM bootstrap_ci_runs WHERE metric = 'f1'")
    assert len(cis) == 2 and all(r["ci_low"] <= r["value"] <= r["ci_high"] and r["n_examples"] == 72 for r in cis)

    run_id = result.runs[0]["run_id"]
    store = str(result.store)
    code, out, err = run_cli("runs", "--store", store)
    assert code == 0 and "exact_match" in out, err
    from specrun.report.build import headline_metrics, run_table
    from specrun.store.db import Store

    with Store(result.store).read() as db:
        experiment = db.execute("SELECT experiment FROM runs LIMIT 1").fetchone()[0]
        metrics = headline_metrics(db, experiment)
        assert metrics == ("exact_match", "f1")
        cursor = db.execute(run_table([("method", "r.method")], metrics).sql.replace("$experiment", f"'{experiment}'"))
        columns, table = [d[0] for d in cursor.description], cursor.fetchall()
        assert "exact_match" in columns and "accuracy" not in columns
        assert len(table) == 2 and all(row[columns.index("exact_match")] is not None for row in table)
    code, out, err = run_cli(
        "predict",
        run_id,
        "--question",
        "what color is the car ?",
        "--context",
        "the boat is red . the car is blue .",
        "--store",
        store,
        "-f",
        "json",
    )
    assert code == 0, err
    (answer,) = json.loads(out)
    assert (
        answer["answer"] in "the boat is red . the car is blue ."
        and 0.0 <= answer["score"] <= 1.0
        and answer["latency_ms"] > 0
    )
    questions = tmp_path / "questions.csv"
    questions.write_text('question,context,answers\nwhat color is the car ?,the car is blue .,"[""blue""]"\n')
    code, out, err = run_cli("predict", run_id, "--file", str(questions), "--store", store)
    assert code == 0, err
    assert "1 questions with answers: exact_match" in out and "latency_ms_mean" in out
    code, out, err = run_cli("predict", run_id, "a text to classify", "--store", store)
    assert code == 2 and "task is 'extractive_qa'" in err
    code, out, err = run_cli("export", run_id, "-o", str(tmp_path / "exported"), "--store", store)
    assert code == 0, err
    assert "task extractive_qa" in out and "AutoModelForQuestionAnswering.from_pretrained" in out
    assert "checked: loaded that way, it predicts what the run does" in out
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    exported = AutoModelForQuestionAnswering.from_pretrained(str(tmp_path / "exported"))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "exported"))
    inputs = tokenizer("what color is the car ?", "the car is blue .", return_tensors="pt")
    assert exported(**inputs).start_logits.shape == inputs["input_ids"].shape


def test_the_app_sends_qa_runs_to_its_question_answering_view(specrun_registry, tiny_model_dir, tmp_path):
    from specrun.app.service import Evaluation
    from specrun.errors import UsageError
    from specrun.store import Store
    from specrun.testing.toy import run_spec

    data = write_toy_squad(tmp_path / "squad", train_articles=2, dev_articles=1)
    result = run_spec(qa_spec(tiny_model_dir, data, train="max_steps = 2"), tmp_path)
    service = Evaluation(Store(result.store))
    with pytest.raises(UsageError, match=r"run of task 'extractive_qa': it answers questions.*Question answering tab"):
        service.classify(result.runs[0]["run_id"], "some text")
    found = service.answer(result.runs[0]["run_id"], "what color is the car ?", "the car is red .")
    assert found.answer in "the car is red ." and 0.0 <= found.score <= 1.0


# --- refusals, and run ids that did not move -----------------------------------------------------------


def test_prompt_tuning_is_refused_on_extractive_qa_at_validate(specrun_registry, tiny_model_dir, tmp_path):
    from specrun.testing.toy import run_cli

    data = write_toy_squad(tmp_path / "squad", train_articles=1, dev_articles=1)
    spec = tmp_path / "qa.toml"
    spec.write_text(qa_spec(tiny_model_dir, data, method='name = "prompt_tuning"'))
    code, _, err = run_cli("validate", str(spec))
    assert code == 2
    assert f"qa.toml:{spec.read_text().splitlines().index('[method]') + 2}" in err and "method.name" in err
    assert "the task 'extractive_qa' cannot use the method 'prompt_tuning'" in err and "drops token_type_ids" in err


def test_transforms_datasets_and_options_a_task_cannot_serve_are_refused(
    specrun_registry, tiny_model_dir, toy_data, tmp_path
):
    from specrun.testing.toy import run_cli

    data = write_toy_squad(tmp_path / "squad", train_articles=1, dev_articles=1)
    spec = tmp_path / "qa.toml"
    text = qa_spec(tiny_model_dir, data).replace(
        'dataset = "local"', 'dataset = "local"\ntransforms = [{ name = "label_noise", rate = 0.1 }]'
    )
    spec.write_text(text)
    code, _, err = run_cli("validate", str(spec))
    assert code == 2 and "data.transforms.0.name" in err and "cannot use the transform 'label_noise'" in err

    spec.write_text(qa_spec(tiny_model_dir, data, task="doc_stride = 64"))
    code, _, err = run_cli("validate", str(spec))
    assert code == 2 and "task.doc_stride" in err

    spec.write_text(
        qa_spec(tiny_model_dir, data)
        .replace(str(data / "train.json"), str(toy_data / "train.tsv"))
        .replace(str(data / "dev.json"), str(toy_data / "dev.tsv"))
    )
    code, _, err = run_cli("plan", str(spec), "--store", str(tmp_path / "s.duckdb"))
    assert code == 2 and "data.dataset" in err and "extractive_qa needs questions with contexts and answers" in err

    spec.write_text(qa_spec(tiny_model_dir, data).replace('[task]\nname = "extractive_qa"\ndoc_stride = 8', ""))
    code, _, err = run_cli("plan", str(spec), "--store", str(tmp_path / "s.duckdb"))
    assert code == 2 and "data.dataset" in err and "set [task] to the task they are for" in err


def test_doc_stride_defaults_to_the_largest_that_fits_model_max_length(specrun_registry, tiny_model_dir, tmp_path):
    """A QA spec that sets neither task.doc_stride nor model.max_length validates and plans: doc_stride
    left out is the largest value below half of model.max_length, at most 128 (63 at the default 128),
    resolved per sweep point into the run's config; one the spec sets is kept, and refused when too large;
    a spec whose default was already 128 (model.max_length 258 or more) keeps its run id."""
    from specrun.plugins.tasks.extractive_qa import default_doc_stride
    from specrun.runner.plan import plan_runs
    from specrun.spec.load import load_spec
    from specrun.testing.toy import run_cli

    task = specrun_registry.get("task", "extractive_qa")
    assert [default_doc_stride(n) for n in (8, 64, 128, 257, 258, 384, 4096)] == [3, 31, 63, 127, 128, 128, 128]
    for n in range(8, 600):  # the largest the check accepts, up to 128
        stride = default_doc_stride(n)
        assert task.check(task.Options(doc_stride=stride), n) == []
        assert stride == 128 or task.check(task.Options(doc_stride=stride + 1), n)

    def plan(text: str) -> list:
        spec = tmp_path / "qa.toml"
        spec.write_text(text)
        return plan_runs(load_spec(spec, registry=specrun_registry), specrun_registry)

    data = write_toy_squad(tmp_path / "squad", train_articles=1, dev_articles=1)
    neither = qa_spec(tiny_model_dir, data, task="").replace("max_length = 32\n", "")
    assert "doc_stride =" not in neither and "max_length =" not in neither
    spec = tmp_path / "neither.toml"
    spec.write_text(neither)
    code, out, err = run_cli("validate", str(spec))
    assert code == 0 and "ok" in out, err
    code, out, err = run_cli("plan", str(spec), "--store", str(tmp_path / "s.duckdb"), "-f", "json")
    assert code == 0 and [r["status"] for r in json.loads(out)] == ["new"], err
    (run,) = plan(neither)
    assert run.config["model"]["max_length"] == 128
    assert run.config["task"] == {"name": "extractive_qa", "doc_stride": 63, "max_answer_length": 30, "n_best": 20}
    (same,) = plan(qa_spec(tiny_model_dir, data, task="doc_stride = 63").replace("max_length = 32\n", ""))
    assert same.run_id == run.run_id  # the default written out is the same run

    swept = plan(neither + '\n[sweep]\n"model.max_length" = [64, 384]\n')
    assert [(r.config["model"]["max_length"], r.config["task"]["doc_stride"]) for r in swept] == [(64, 31), (384, 128)]

    # the old fixed default, where it fitted: the same config, so the same id, as doc_stride = 128 written out
    (default,) = plan(qa_spec(tiny_model_dir, data, task="", max_length=384))
    (written,) = plan(qa_spec(tiny_model_dir, data, task="doc_stride = 128", max_length=384))
    assert default.config == written.config and default.run_id == written.run_id

    spec.write_text(qa_spec(tiny_model_dir, data, task="doc_stride = 64").replace("max_length = 32\n", ""))
    code, _, err = run_cli("validate", str(spec))
    assert code == 2 and "task.doc_stride" in err and "use less than 64" in err, err
    assert "leave doc_stride out (its default, 63 here" in err and "Traceback" not in err


def test_a_qa_run_without_doc_stride_stores_the_stride_it_used(specrun_registry, tiny_model_dir, tmp_path):
    """The resolved default is in the run's config in the store (runs.config), where users read options."""
    from specrun.testing.toy import run_spec

    data = write_toy_squad(tmp_path / "squad", train_articles=1, dev_articles=1)
    text = qa_spec(tiny_model_dir, data, task="", train="max_steps = 2").replace("max_length = 32\n", "")
    result = run_spec(text, tmp_path)
    assert [r["status"] for r in result.runs] == ["completed"]
    (row,) = result.sql("SELECT config FROM runs WHERE run_id = ?", [result.runs[0]["run_id"]])
    config = json.loads(row["config"])
    assert config["model"]["max_length"] == 128 and config["task"]["doc_stride"] == 63


def test_classification_stays_implicit_so_run_ids_do_not_move(specrun_registry, write_spec, tmp_path, tiny_model_dir):
    from specrun.runner.plan import plan_runs
    from specrun.spec.load import load_spec

    plain = write_spec(method='name = "full"')
    text = plain.read_text()
    explicit = tmp_path / "explicit.toml"
    explicit.write_text(text.replace("[model]", '[task]\nname = "classification"\n\n[model]'))
    runs = plan_runs(load_spec(plain, registry=specrun_registry), specrun_registry)
    again = plan_runs(load_spec(explicit, registry=specrun_registry), specrun_registry)
    assert [r.run_id for r in runs] == [r.run_id for r in again]
    for run in runs:  # the identity is what it was before tasks existed: no task key, no task code version
        assert "task" not in run.config and set(run.identity) == {"config", "data", "code"}
        assert not any(k.startswith("task:") for k in run.identity["code"])

    data = write_toy_squad(tmp_path / "squad", train_articles=1, dev_articles=1)
    qa = tmp_path / "qa.toml"
    qa.write_text(qa_spec(tiny_model_dir, data))
    (qa_run,) = plan_runs(load_spec(qa, registry=specrun_registry), specrun_registry)
    assert qa_run.config["task"] == {"name": "extractive_qa", "doc_stride": 8, "max_answer_length": 30, "n_best": 20}
    assert "task:extractive_qa" in qa_run.identity["code"]


def test_analyses_asking_for_a_metric_the_task_does_not_record_are_refused(specrun_registry, tiny_model_dir, tmp_path):
    from specrun.testing.toy import run_cli

    data = write_toy_squad(tmp_path / "squad", train_articles=1, dev_articles=1)
    spec = tmp_path / "qa.toml"
    spec.write_text(qa_spec(tiny_model_dir, data, extra='[[analyses]]\nname = "bootstrap_ci"\nmetric = "accuracy"'))
    code, _, err = run_cli("validate", str(spec))
    assert code == 2 and "analyses.0.metric" in err and "records no metric 'accuracy'" in err
    spec.write_text(qa_spec(tiny_model_dir, data, extra='[[analyses]]\nname = "bootstrap_ci"\nmetric = "exact_match"'))
    code, _, err = run_cli("validate", str(spec))
    assert code == 0, err


def _qa_head(name: str) -> bool:
    """A parameter of the QA head, plain or as peft's trained copy (``modules_to_save``)."""
    return name.startswith("qa_outputs.") or ".qa_outputs.modules_to_save." in name


def _adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name or ".ia3_l." in name


#: Every method but prompt_tuning (refused above, with its reason), with what it is meant to train on a QA model.
QA_METHODS = [
    ({"name": "full"}, lambda n: True, 3e-3),
    ({"name": "bitfit"}, lambda n: n.endswith(".bias") or _qa_head(n), 1e-2),
    ({"name": "bitfit", "subset": "query-ffn"}, None, 1e-2),
    ({"name": "freeze", "layers": 1}, lambda n: not n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")), 1e-2),
    ({"name": "head_only"}, _qa_head, 1e-2),
    ({"name": "lora", "rank": 4}, lambda n: _adapter(n) or _qa_head(n), 1e-2),
    ({"name": "lora", "rank": 4, "quantize": "8bit"}, lambda n: _adapter(n) or _qa_head(n), 1e-2),
    ({"name": "qlora", "rank": 4, "compute_dtype": "fp32"}, lambda n: _adapter(n) or _qa_head(n), 1e-2),
    ({"name": "ia3"}, lambda n: _adapter(n) or _qa_head(n), 1e-2),
]


@pytest.mark.parametrize(
    "method, trains, learning_rate",
    QA_METHODS,
    ids=["-".join(str(v) for v in m.values()) for m, _, _ in QA_METHODS],
)
def test_methods_that_serve_extractive_qa_pass_its_contract(
    method, trains, learning_rate, specrun_registry, tiny_model_dir, tmp_path
):
    """The QA head (qa_outputs) trains under every method, inside peft's adapters (modules_to_save) for the
    peft methods; the run saves, rebuilds and loads with plain peft/transformers to the same metrics."""
    from specrun.testing import check_task

    if method.get("quantize") or method["name"] == "qlora":
        from specrun.plugins.methods.lora import bitsandbytes_problem

        problem = bitsandbytes_problem(4 if method["name"] == "qlora" else 8, "cpu")
        if problem:
            pytest.skip(problem)
    data = write_toy_squad(tmp_path / "squad", train_articles=6, dev_articles=1)
    report = check_task(
        specrun_registry,
        "extractive_qa",
        {"doc_stride": 8},
        model_dir=tiny_model_dir,
        workdir=tmp_path / "qa",
        data={
            "dataset": "local",
            "options": {"files": {"train": str(data / "train.json"), "validation": str(data / "dev.json")}},
        },
        max_length=32,
        method=method,
        steps=30,
        learning_rate=learning_rate,
    )
    assert report.loss_after < 0.9 * report.loss_before
    head = {n for n in report.trainable if _qa_head(n)}
    assert head and head <= report.changed, "the QA head did not train"
    if trains is not None:
        intended = {n for n in report.parameters if trains(n)}
        assert report.trainable == intended, (
            sorted(report.trainable - intended)[:5],
            sorted(intended - report.trainable)[:5],
        )
    if method["name"] not in ("qlora",) and not method.get("quantize"):
        assert report.metrics_plain is not None  # a peft or transformers folder, loaded plainly to the same metrics


def test_peft_methods_on_qa_keep_the_question_and_context_segments(specrun_registry, tiny_model_dir, tmp_path):
    """peft's question-answering wrapper drops token_type_ids; lora and ia3 on a QA model must not (BERT reads
    the question/context segments from them, as under full fine-tuning)."""
    import torch

    from specrun.runner.build import build_model
    from specrun.spec.load import load_spec

    data = write_toy_squad(tmp_path / "squad", train_articles=1, dev_articles=1)
    for method in ('name = "lora"\nrank = 4', 'name = "ia3"'):
        spec = tmp_path / "qa.toml"
        spec.write_text(qa_spec(tiny_model_dir, data, method=method))
        config = load_spec(spec, registry=specrun_registry).runs[0].config
        model, _ = build_model(config, specrun_registry, 0, (), torch.device("cpu"))
        model.eval()
        ids = torch.tensor([[101, 2054, 102, 1996, 2482, 102]])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            zeros = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).start_logits
            pair = torch.tensor([[0, 0, 0, 1, 1, 1]])
            segments = model(input_ids=ids, attention_mask=mask, token_type_ids=pair).start_logits
        assert not torch.allclose(zeros, segments), f"{method}: token_type_ids do not reach the model"


def test_a_qa_lora_run_saves_its_head_in_the_adapter_predicts_and_transfers(specrun_registry, tiny_model_dir, tmp_path):
    """A LoRA run on extractive QA: its adapter folder holds the QA head (modules_to_save) and no peft task
    type (peft's QA wrapper would drop token_type_ids when loading it); `predict --question` answers with it;
    a QA run starting from it (model.init_from) loads its adapters and leaves its qa_outputs behind."""
    from specrun.testing.toy import run_cli, run_spec

    data = write_toy_squad(tmp_path / "squad", train_articles=2, dev_articles=1)
    result = run_spec(
        qa_spec(tiny_model_dir, data, method='name = "lora"\nrank = 4', train="max_steps = 6", name="qalora"), tmp_path
    )
    (run,) = result.runs
    assert run["status"] == "completed"
    path = result.sql("SELECT path FROM artifacts WHERE run_id = ? AND kind = 'weights'", [run["run_id"]])[0]["path"]
    folder = (result.store.parent / path).parent  # a relative path is the store's folder's; an absolute one stays
    meta = json.loads((folder / "run.json").read_text())
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert meta["format"] == "peft" and adapter["task_type"] is None and "qa_outputs" in adapter["modules_to_save"]
    assert any("qa_outputs" in name for name in meta["tensors"].values())

    code, out, err = run_cli(
        "predict",
        run["run_id"],
        "--question",
        "what color is the car ?",
        "--context",
        "the boat is red . the car is blue .",
        "--store",
        str(result.store),
        "-f",
        "json",
    )
    assert code == 0, err
    (answer,) = json.loads(out)
    assert answer["answer"] in "the boat is red . the car is blue ." and 0.0 <= answer["score"] <= 1.0
    for merge, kind in ((["--merge"], "adapters merged"), ([], "the base model and the run's adapters")):
        out_dir = tmp_path / f"exported{len(merge)}"
        code, out, err = run_cli("export", run["run_id"], "-o", str(out_dir), *merge, "--store", str(result.store))
        assert code == 0, err
        assert kind in out and "checked: loaded that way, it predicts what the run does" in out

    target = qa_spec(
        tiny_model_dir, data, method='name = "lora"\nrank = 4', train="max_steps = 2", name="qalora-transfer"
    ).replace("max_length = 32", f'max_length = 32\ninit_from = "{run["run_id"]}"')
    moved = run_spec(target, tmp_path)  # the same store
    (child,) = moved.runs
    (transfer,) = moved.sql("SELECT * FROM transfers WHERE run_id = ?", [child["run_id"]])
    assert transfer["source_run_id"] == run["run_id"]
    details = json.loads(transfer["details"])
    loaded, head = details["loaded"], details["head"]
    assert loaded and all("lora_" in name for name in loaded)
    assert head and all("qa_outputs" in name for name in head)
