"""The evaluation app's functions, without a browser: what it reads from the store, the model cache,
reading uploaded files, classifying with the two tiny runs, the efficiency view, --record, the page's
error handling and the `specrun app` command's checks."""

from __future__ import annotations

import hashlib
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from app_support import build_two_runs
from conftest import toy_rows

pytest.importorskip("gradio")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model_dir) -> Path:
    return build_two_runs(tmp_path_factory.mktemp("app"), tiny_model_dir)


@pytest.fixture
def store(two_runs, tmp_path):
    """A copy of the two-run store for one test (the weights stay shared: nothing here retrains)."""
    from specrun.store import Store

    mine = tmp_path / "store.duckdb"
    shutil.copy(two_runs, mine)
    # artifact paths are relative to the store's folder: the copy sees the same weights through a link
    (tmp_path / "artifacts").symlink_to(two_runs.parent / "artifacts", target_is_directory=True)
    return Store(mine)


@pytest.fixture
def evaluation(store, tmp_path):
    from specrun.app.service import Evaluation

    return Evaluation(store, out_dir=tmp_path / "downloads")


def _by_method(evaluation):
    return {m.method: m for m in evaluation.models()}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- what the app reads from the store -------------------------------------------------------------


def test_stored_models_carry_what_their_runs_recorded(store):
    from specrun.store.catalog import model_experiments, stored_models

    models = {m.method: m for m in stored_models(store)}
    assert set(models) == {"lora", "full"}
    with store.read() as db:
        summary = {
            r[0]: r[1:]
            for r in db.execute(
                "SELECT method, accuracy, f1, trainable_params, total_params FROM run_summary"
            ).fetchall()
        }
        latency = dict(
            db.execute("SELECT run_id, value FROM metrics WHERE split = 'cost' AND name = 'latency_ms_mean'").fetchall()
        )
    for method, model in models.items():
        assert (model.accuracy, model.f1, model.trainable_params, model.total_params) == summary[method]
        assert model.latency_ms_mean == latency[model.run_id] and model.latency_ms_p95 >= model.latency_ms_mean * 0.5
        assert model.model_memory_mb > 0 and model.experiments == ("duo",) and model.eval_set == "validation"
    assert models["full"].accuracy == 1.0  # the full run learned the toy task
    assert models["lora"].trainable_params < models["full"].trainable_params
    assert model_experiments(store) == ["duo"]
    assert [m.run_id for m in stored_models(store, "duo")] == [m.run_id for m in stored_models(store)]
    assert stored_models(store, "nope") == []


def test_runs_without_weights_are_not_models(store):
    from specrun.store.catalog import stored_models

    with store.write() as db:
        db.execute(
            "INSERT INTO runs (run_id, experiment, status, method, dataset, model, seed, eval_set) "
            "VALUES ('failedrun0001', 'duo', 'failed', 'lora', 'local', 'x', 1, 'validation')"
        )
        full = db.execute("SELECT run_id FROM runs WHERE method = 'full'").fetchone()[0]
        db.execute("DELETE FROM artifacts WHERE run_id = ?", [full])
    assert [m.method for m in stored_models(store)] == ["lora"]


# --- the model cache and how models are described ---------------------------------------------------


def test_cache_keeps_the_most_recently_used_models():
    from specrun.app.models import PredictorCache

    loads = []
    cache = PredictorCache(lambda run_id: loads.append(run_id) or f"model {run_id}", size=2)
    assert cache.get("a")[0] == "model a" and cache.get("a")[1] == 0.0
    cache.get("b")
    cache.get("a")  # a is now the most recent: b goes first
    cache.get("c")
    assert "a" in cache and "c" in cache and "b" not in cache and len(cache) == 2
    cache.get("b")
    assert loads == ["a", "b", "c", "b"]
    with pytest.raises(ValueError):
        PredictorCache(lambda r: r, size=0)


def test_cache_loads_a_model_once_when_asked_for_at_the_same_time():
    from specrun.app.models import PredictorCache

    loads = []

    def slow(run_id):
        loads.append(run_id)
        time.sleep(0.2)
        return object()

    cache = PredictorCache(slow, size=2)
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("a")[0])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["a"] and len({id(g) for g in got}) == 1


def test_models_are_described_with_their_numbers(evaluation):
    from specrun.app.models import card, choice_label, human_count, hyperparameters, number, takes_pairs

    models = _by_method(evaluation)
    lora, full = models["lora"], models["full"]
    assert hyperparameters(lora) == "rank=4 alpha=16 dropout=0.1 lr=0.05"
    assert hyperparameters(full) == "lr=0.003"
    label = choice_label(full)
    assert label.startswith(full.run_id[:8]) and "duo" in label and "full" in label and "acc 1.000" in label
    text = card(lora, loaded_seconds=1.5)
    for part in (
        lora.run_id,
        "rank=4",
        "trainable · total parameters",
        human_count(lora.trainable_params),
        "MB",
        "ms mean",
        "in 1.50 s",
    ):
        assert part in text
    assert (
        number(3140.2, 3) == "3,140"
        and number(161.77, 3) == "162"
        and number(0.80964) == "0.8096"
        and number(None) == "—"
    )
    assert human_count(1_090) == "1.09k" and human_count(22_700_000) == "22.7M" and human_count(None) == "—"
    assert takes_pairs(full) is False
    assert takes_pairs(type(full)(**{**full.__dict__, "dataset": "glue/mrpc"})) is True
    assert takes_pairs(type(full)(**{**full.__dict__, "dataset": "glue/sst2"})) is False
    assert takes_pairs(type(full)(**{**full.__dict__, "dataset": "someones/plugin"})) is None
    paired = {
        **full.config,
        "data": {**full.config["data"], "options": {**full.config["data"]["options"], "text_pair_column": "second"}},
    }
    assert takes_pairs(type(full)(**{**full.__dict__, "config": paired})) is True


def test_the_model_table_shows_the_newest_models_and_says_how_many_it_leaves_out(evaluation):
    """A store of thousands of runs: the page sends the newest TABLE_ROWS rows, says so, and keeps every
    model in the picker (issue 23: the first page of a 1,000-run store)."""
    import dataclasses

    from specrun.app.ui import TABLE_ROWS, _choices, models_frame, table_note

    model = evaluation.models()[0]
    many = [dataclasses.replace(model, run_id=f"{i:012x}", seed=i) for i in range(TABLE_ROWS + 40)]
    frame = models_frame(many)
    assert frame["run"].tolist() == [m.run_id[:12] for m in many[:TABLE_ROWS]]
    note = table_note(many)
    assert f"newest {TABLE_ROWS} of {TABLE_ROWS + 40:,} models" in note and "picker lists them all" in note
    assert len(_choices(many)) == TABLE_ROWS + 40
    few = many[:3]
    assert len(models_frame(few)) == 3 and table_note(few) == ""


# --- reading uploaded files -------------------------------------------------------------------------


def _write(tmp_path, name, content):
    path = tmp_path / "server-copy" / name
    path.parent.mkdir(exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def test_uploads_keep_quoted_commas_and_read_every_format(tmp_path):
    from specrun.app.batch import read_upload

    csv = read_upload(
        _write(tmp_path, "a.csv", 'text,label\n"an utterly gorgeous, heartfelt film",1\n"a ""quoted"" mess",0\n')
    )
    assert csv.items == [("an utterly gorgeous, heartfelt film", None), ('a "quoted" mess', None)]
    assert csv.labels == ["1", "0"] and csv.lines == [2, 3]
    tsv = read_upload(_write(tmp_path, "b.tsv", "text\ttext_pair\nfirst, with comma\tsecond\n"))
    assert tsv.items == [("first, with comma", "second")] and tsv.labels is None
    jsonl = read_upload(
        _write(tmp_path, "c.jsonl", '{"text": "fine", "label": "positive"}\n\n{"text": "bad", "label": "negative"}\n')
    )
    assert jsonl.items == [("fine", None), ("bad", None)] and jsonl.labels == ["positive", "negative"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.csv", "", "empty.csv: the file is empty"),
        ("header.csv", "text,label\n", "header.csv: no rows"),
        ("cols.csv", "review,label\nfine,1\n", "cols.csv: needs a 'text' column; columns are ['review', 'label']"),
        ("latin.csv", "text\ncaf\xe9 cr\xe8me\n".encode("latin-1"), "latin.csv:2: not UTF-8 text (byte 0xe9"),
        (
            "unquoted.csv",
            "text,label\nan utterly gorgeous, heartfelt film,1\n",
            "unquoted.csv:2: 3 field(s), but the header has 2",
        ),
        ("gap.csv", 'text\nfine\n""\n', "gap.csv:3: the text is empty"),
        (
            "open.csv",
            'text\n"never closed\n',
            "open.csv:2: a quoted field opens in the row starting here and never closes",
        ),
        ("sheet.xlsx", "text\nfine\n", "sheet.xlsx: the app reads CSV, TSV, JSONL and parquet files"),
        ("bad.jsonl", '{"text": "fine"}\nnot json\n', "bad.jsonl:2: not valid JSON"),
    ],
)
def test_uploads_the_app_cannot_classify_get_one_clear_sentence(tmp_path, name, content, message):
    from specrun.app.batch import read_upload
    from specrun.errors import DataError

    path = _write(tmp_path, name, content)
    with pytest.raises(DataError) as caught:
        read_upload(path)
    assert str(caught.value).startswith(message), str(caught.value)
    assert str(path.parent) not in str(caught.value)  # the file as the user named it, not the server's copy


def test_uploads_over_the_row_limit_are_refused_with_the_way_out(tmp_path):
    from specrun.app.batch import read_upload
    from specrun.errors import DataError

    path = _write(tmp_path, "big.csv", "text\n" + "".join(f"row {i}\n" for i in range(30)))
    assert len(read_upload(path, max_rows=30).items) == 30
    with pytest.raises(
        DataError,
        match=r"big.csv: 30 rows; the app classifies at most 29 rows per file: .*specrun predict RUN --file big.csv",
    ):
        read_upload(path, max_rows=29)


class _Fixed:
    """A predictor that answers from a table: text → probabilities."""

    label_names = ("neg", "pos")

    def __init__(self, answers):
        self.answers = answers

    def classify(self, items):
        from specrun.runner.predict import Classified

        out = []
        for i, (text, _) in enumerate(items):
            probs = self.answers[text]
            label = max(probs, key=probs.get)
            out.append(Classified(text, label, probs[label], probs, float(i + 1)))
        return out


def test_labelled_uploads_are_scored_with_a_confusion_matrix_and_a_download(tmp_path):
    from specrun.app.batch import classify_upload, expect_labels, read_upload

    path = _write(tmp_path, "reviews.csv", 'text,label\n"good, really",pos\nbad,neg\nfine,1\nawful,neg\n')
    upload = expect_labels(read_upload(path), _Fixed.label_names)
    assert upload.expected == [1, 0, 1, 0]
    answers = {
        "good, really": {"neg": 0.1, "pos": 0.9},
        "bad": {"neg": 0.8, "pos": 0.2},
        "fine": {"neg": 0.6, "pos": 0.4},
        "awful": {"neg": 0.7, "pos": 0.3},
    }
    result = classify_upload(_Fixed(answers), upload, tmp_path / "out", "abcdef123456")
    assert result.scores["accuracy"] == 0.75 and result.scores["f1"] == pytest.approx(2 / 3)
    assert result.confusion == (("neg", "pos"), [[2, 0], [1, 1]])
    assert result.latency_ms_mean == 2.5 and result.latency_ms_p95 == pytest.approx(3.85)
    assert result.columns == ["line", "text", "label", "prediction", "confidence", "p(neg)", "p(pos)", "latency_ms"]
    assert "accuracy 0.7500" in result.summary() and "p95 3.85 ms" in result.summary()
    assert result.csv_path.name == "reviews-predictions-abcdef12.csv"
    lines = result.csv_path.read_text().splitlines()
    assert lines[1] == '2,"good, really",pos,pos,0.9,0.1,0.9,1.0' and len(lines) == 5


def test_labels_outside_the_models_labels_are_named_by_line(tmp_path):
    from specrun.app.batch import expect_labels, read_upload
    from specrun.errors import DataError

    upload = read_upload(_write(tmp_path, "mixed.csv", "text,label\nfine,pos\nodd,great\n"))
    with pytest.raises(DataError, match=r"^mixed.csv:3: label 'great' is not one of the run's labels \['neg', 'pos'\]"):
        expect_labels(upload, _Fixed.label_names)


# --- classifying with the tiny runs -----------------------------------------------------------------


def test_classify_one_text_loads_the_model_once(evaluation):
    full = _by_method(evaluation)["full"]
    first = evaluation.classify(full.run_id, "the acting was really wonderful")
    assert first.label == "1" and first.confidence > 0.5 and first.load_seconds > 0 and first.latency_ms > 0
    assert sum(first.probabilities.values()) == pytest.approx(1.0) and first.probabilities["1"] == first.confidence
    again = evaluation.classify(full.run_id, "the plot was dreadful")
    assert again.label == "0" and again.load_seconds == 0.0  # cached: switching back is instant


def test_compare_runs_the_same_text_through_each_model_in_order(evaluation):
    from specrun.errors import UsageError

    models = _by_method(evaluation)
    ids = [models["lora"].run_id, models["full"].run_id]
    found = evaluation.compare(ids, "the movie was superb")
    assert [p.model.run_id for p in found] == ids and found[1].label == "1"
    with pytest.raises(UsageError, match=r"pick 2 to 4 models to compare \(1 picked\)"):
        evaluation.compare(ids[:1], "fine")
    with pytest.raises(UsageError, match=r"pick 2 to 4 models to compare \(1 picked\)"):
        evaluation.compare([ids[0], ids[0]], "fine")


@pytest.mark.parametrize(
    "run, text, pair, message",
    [
        (None, "fine", None, "pick a model first"),
        ("full", "   ", None, "type a text to classify"),
        ("full", "x" * 20_001, None, "the text has 20,001 characters; the app classifies at most 20,000"),
        ("full", "fine", "a second text", "was trained on single texts (local): leave the second text empty"),
        ("gone", "fine", None, "is no longer a completed run with weights"),
    ],
)
def test_mistakes_in_the_single_text_tab_are_one_sentence(evaluation, run, text, pair, message):
    from specrun.errors import SpecrunError

    run_id = {"full": _by_method(evaluation)["full"].run_id, "gone": "deadbeef0000", None: None}[run]
    with pytest.raises(SpecrunError) as caught:
        evaluation.classify(run_id, text, pair)
    assert message in str(caught.value)


def test_pair_models_need_the_second_text_and_single_text_models_refuse_it(evaluation):
    from specrun.app.service import _check_pair
    from specrun.errors import UsageError

    full = _by_method(evaluation)["full"]
    mrpc = type(full)(**{**full.__dict__, "dataset": "glue/mrpc"})
    with pytest.raises(UsageError, match=r"classifies sentence pairs \(glue/mrpc\): give the second text too$"):
        _check_pair(mrpc, has_pair=False)
    with pytest.raises(UsageError, match=r"^pairs.csv: run \w+ classifies sentence pairs .* \(a 'text_pair' column\)"):
        _check_pair(mrpc, has_pair=False, where="pairs.csv: ")
    with pytest.raises(
        UsageError, match=r"^one.csv: run \w+ was trained on single texts \(local\): drop the 'text_pair' column"
    ):
        _check_pair(full, has_pair=True, where="one.csv: ")
    _check_pair(mrpc, has_pair=True)
    _check_pair(type(full)(**{**full.__dict__, "dataset": "someones/plugin"}), has_pair=True)  # unknown: either


def test_a_labelled_file_scores_as_specrun_predict_scores_it(evaluation, store, tmp_path, cli):
    full = _by_method(evaluation)["full"]
    path = tmp_path / "held-out.csv"
    path.write_text("text,label\n" + "".join(f'"{t}, honestly",{y}\n' for t, y in toy_rows(30, seed=11)))
    result, seconds = evaluation.classify_file(full.run_id, path)
    assert seconds > 0 and len(result.rows) == 30 and result.scores["accuracy"] >= 0.9
    code, out, err = cli("predict", full.run_id, "--file", str(path), "--store", str(store.path))
    assert code == 0, err
    reported = dict(part.split(" ") for part in out.strip().splitlines()[-1].split(": ")[-1].split(", "))
    assert float(reported["accuracy"]) == pytest.approx(result.scores["accuracy"])
    assert float(reported["f1"]) == pytest.approx(result.scores["f1"])
    assert "latency_ms_mean" in reported


def test_efficiency_puts_configurations_on_accuracy_against_a_cost(evaluation, store):
    from specrun.app.ui import efficiency_chart
    from specrun.errors import UsageError

    view = evaluation.efficiency("duo", "trainable_params")
    rows = view.rows
    assert view.metric == view.primary == "accuracy" and view.splits == ["validation"]  # classification's headline
    assert [r["label"] for r in rows] == ["lora", "full"]  # sorted by the cost
    assert all(r["on_front"] for r in rows)  # lora is cheaper, full is more accurate
    assert rows[1]["accuracy"] == 1.0 and rows[0]["runs"] == 1
    spec = efficiency_chart(view).to_dict()
    drawn = spec["layer"][1]["encoding"]
    assert (
        drawn["x"]["field"] == "trainable_params"
        and drawn["x"]["scale"]["type"] == "log"
        and drawn["y"]["field"] == "accuracy"
    )
    # a loss is better lower: full (lower loss, more parameters) stays on the front beside the cheaper lora
    loss = evaluation.efficiency("duo", "trainable_params", "loss")
    assert loss.rows[1]["loss"] < loss.rows[0]["loss"] and all(r["on_front"] for r in loss.rows)
    assert "picked their weights" not in view.status()
    # a run that selected its weights on the split it reports (train.allow_selection_on_reported) is flagged
    full = _by_method(evaluation)["full"].run_id
    with store.write() as db:
        db.execute(
            "INSERT INTO metrics (run_id, step, epoch, split, name, value, final) "
            "SELECT run_id, step, NULL, 'selection', 'on_reported_split', 1.0, true FROM metrics "
            "WHERE run_id = ? AND final AND split = 'cost' AND name = 'train_seconds'",
            [full],
        )
    flagged = evaluation.efficiency("duo", "trainable_params").status()
    assert "⚠ 1 run(s) picked their weights on the split they report: their numbers are optimistic" in flagged
    with pytest.raises(UsageError, match="cost must be one of"):
        evaluation.efficiency("duo", "price")
    with pytest.raises(UsageError, match="pick an experiment"):
        evaluation.efficiency(None)
    with pytest.raises(UsageError, match="experiment 'nope' has no completed runs with weights"):
        evaluation.efficiency("nope")


# --- nothing is written unless --record -------------------------------------------------------------


def test_browsing_writes_nothing_to_the_store(evaluation, store, tmp_path):
    full = _by_method(evaluation)["full"].run_id
    lora = _by_method(evaluation)["lora"].run_id
    before, stamp = _sha(store.path), store.path.stat().st_mtime_ns
    evaluation.models()
    evaluation.classify(full, "fine film")
    evaluation.compare([full, lora], "fine film")
    path = tmp_path / "f.csv"
    path.write_text("text,label\ngood movie,1\n")
    evaluation.classify_file(full, path)
    evaluation.efficiency("duo")
    assert _sha(store.path) == before and store.path.stat().st_mtime_ns == stamp
    assert not Path(f"{store.path}.wal").exists()


def test_record_writes_each_prediction_into_its_own_table(store, tmp_path):
    from specrun.app.service import Evaluation

    evaluation = Evaluation(store, record=True, out_dir=tmp_path / "downloads")
    models = _by_method(evaluation)
    evaluation.classify(models["full"].run_id, "fine film")
    evaluation.compare([models["full"].run_id, models["lora"].run_id], "awful film")
    path = tmp_path / "reviews.csv"
    path.write_text('text,label\n"good, fine",1\nbad,0\n')
    evaluation.classify_file(models["full"].run_id, path)
    with store.read() as db:
        rows = db.execute(
            "SELECT source, run_id, position, text, label, prediction, confidence > 0, latency_ms > 0 FROM app_predictions "
            "ORDER BY recorded_at, source, run_id, position"
        ).fetchall()
        requests = db.execute("SELECT count(DISTINCT request_id) FROM app_predictions").fetchone()[0]
    assert requests == 3 and len(rows) == 1 + 2 + 2
    assert ("text", models["full"].run_id, 0, "fine film", None, "1", True, True) in rows
    assert ("reviews.csv", models["full"].run_id, 0, "good, fine", "1", "1", True, True) in rows
    assert {r[0] for r in rows} == {"text", "compare", "reviews.csv"}


def test_a_store_from_before_m009_is_served_and_upgraded_once(tmp_path):
    from test_migrate import _old_store

    from specrun.app.service import Evaluation
    from specrun.store import Store

    path = tmp_path / "old.duckdb"
    _old_store(path, "m008_transfers")
    evaluation = Evaluation(Store(path), out_dir=tmp_path / "downloads")
    assert evaluation.models() == [] and evaluation.experiments() == []  # the first read applied m009
    with Store(path).read() as db:
        assert db.execute("SELECT count(*) FROM app_predictions").fetchone()[0] == 0
        assert "m009_app_predictions" in {r[0] for r in db.execute("SELECT name FROM _migrations").fetchall()}


def test_record_refuses_a_store_it_cannot_write_before_serving(store, monkeypatch):
    import contextlib

    from specrun import app
    from specrun.errors import StoreError
    from specrun.store import Store

    @contextlib.contextmanager
    def unwritable(self, timeout=None):
        raise StoreError(f"cannot write store {self.path}: Permission denied")
        yield

    monkeypatch.setattr(Store, "write", unwritable)
    with pytest.raises(StoreError, match="cannot write store"):
        app.start(store, record=True, port=1)  # refused before Gradio binds any port


# --- the page ---------------------------------------------------------------------------------------


def test_the_page_builds_over_the_store(evaluation):
    import gradio as gr

    from specrun.app.ui import MODEL_COLUMNS, build, models_frame

    page = build(evaluation, "duo")
    assert isinstance(page, gr.Blocks)
    ids = {getattr(block, "elem_id", None) for block in page.blocks.values()}
    assert {"picker", "single-go", "compare-go", "batch-file", "batch-go", "efficiency-plot", "models-table"} <= ids
    frame = models_frame(evaluation.models())
    assert list(frame.columns) == MODEL_COLUMNS and len(frame) == 2
    assert set(frame["method"]) == {"lora", "full"}


def test_an_empty_store_gets_a_page_that_says_what_to_do(tmp_path):
    from specrun.app.service import Evaluation
    from specrun.app.ui import build
    from specrun.errors import UsageError
    from specrun.store import Store

    store = Store(tmp_path / "empty.duckdb")
    with store.write():
        pass
    evaluation = Evaluation(store, out_dir=tmp_path / "downloads")
    page = build(evaluation)
    intro = next(b for b in page.blocks.values() if getattr(b, "elem_id", None) == "intro")
    assert (
        "0 trained models" in intro.value
        and "no completed runs with saved weights yet: run `specrun apply SPEC`" in intro.value
    )
    with pytest.raises(UsageError, match="no experiment in the store has trained models yet"):
        evaluation.efficiency(None)
    with pytest.raises(UsageError, match="pick a model first"):
        evaluation.classify(None, "fine")


def test_handlers_turn_mistakes_into_the_status_line(monkeypatch):
    from specrun.app.ui import guarded
    from specrun.errors import DataError

    @guarded(3, lambda: ["cleared", None])
    def mistaken(_):
        raise DataError("reviews.csv: the file is empty")

    @guarded(2)
    def broken(_):
        raise ZeroDivisionError("division by zero")

    status, *rest = mistaken("x")
    assert "reviews.csv: the file is empty" in status and rest == ["cleared", None]
    logged = []
    monkeypatch.setattr("specrun.app.ui.log.error", lambda message, *args: logged.append(message % args))
    status, _ = broken("x")
    assert "internal error (ZeroDivisionError: division by zero); this is a bug in specrun" in status
    assert "broken failed (a bug):\nTraceback (most recent call last):" in logged[0]  # the terminal gets the traceback
    assert logged[0].endswith("ZeroDivisionError: division by zero")


# --- the command ------------------------------------------------------------------------------------


def test_app_without_gradio_says_how_to_install_it(cli, store, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now raises ImportError
    code, _, err = cli("app", "--store", str(store.path))
    assert code == 2 and "pip install 'specrun[app]'" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("--experiment", "dou"),
            "no experiment 'dou' with trained models in {store} (did you mean 'duo'?); experiments with trained models: duo",
        ),
        (("--store", "{tmp}/none.duckdb"), "no store at {tmp}/none.duckdb"),
    ],
)
def test_app_refuses_what_it_cannot_serve(cli, store, tmp_path, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    code, _, err = cli("app", *(["--store", str(store.path)] if "--store" not in args else []), *args)
    assert code == 2 and message.format(store=store.path, tmp=tmp_path) in err and "Traceback" not in err


def test_a_port_in_use_is_one_message(store):
    from specrun.app import start
    from specrun.errors import UsageError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=rf"cannot serve on 127.0.0.1:{port}: .*pass --port with a free port"):
            start(store, port=port)


def test_share_and_other_hosts_are_served_only_with_a_warning(cli, store, monkeypatch):
    from specrun import app

    started = []

    class Page:
        def close(self):
            started.append("closed")

    def fake_start(store, experiment, host, port, share, record):
        started.append((host, port, share, record))
        return Page(), f"http://{host}:{port}/"

    def stop(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(app, "start", fake_start)
    monkeypatch.setattr(app.time, "sleep", stop)  # Ctrl-C at once
    code, _, err = cli("app", "--store", str(store.path))
    assert (
        code == 0 and "warning" not in err and "serving" in err and "http://127.0.0.1:7860/" in err and "stopped" in err
    )
    assert started == [("127.0.0.1", 7860, False, False), "closed"]
    code, _, err = cli("app", "--store", str(store.path), "--host", "0.0.0.0", "--port", "8000", "--share", "--record")
    assert code == 0 and started[-2:] == [("0.0.0.0", 8000, True, True), "closed"]
    assert "warning: --share: the app gets a public gradio.live link" in err
    assert "warning: --host 0.0.0.0: the app is served to every machine that can reach this one on port 8000" in err
    assert (
        app.is_local("127.0.0.1") and app.is_local("localhost") and app.is_local("::1") and not app.is_local("0.0.0.0")
    )
