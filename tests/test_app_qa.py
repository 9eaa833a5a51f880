"""The app's question-answering view: a question and its context answered by an extractive-QA run (the
answer marked in the context, its score and latency, as `specrun predict --question` gives them), a file
of questions scored with SQuAD v1.1 EM and F1, runs of the wrong task refused with a sentence, --record;
and the view used in a real headless Chromium."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from app_support import add_classification_run, build_qa_run, header_lines, page_text, serving
from test_report_browser import ARTIFACTS, BROWSER_ARGS, chromium  # noqa: F401 - the chromium fixture

pytest.importorskip("gradio")

CONTEXT = "the car is red . the boat is blue . the hat is green ."


@pytest.fixture(scope="module")
def qa_store(tmp_path_factory, tiny_model_dir) -> Path:
    """A store with the toy QA run and a two-step classification run (for the refusals)."""
    store = build_qa_run(tmp_path_factory.mktemp("app-qa"), tiny_model_dir)
    return add_classification_run(store, tiny_model_dir)


@pytest.fixture
def evaluation(qa_store, tmp_path):
    from specrun.app.service import Evaluation
    from specrun.store import Store

    return Evaluation(Store(qa_store), out_dir=tmp_path / "downloads")


def _runs(evaluation) -> tuple[str, str]:
    """(the QA run's id, the classification run's id)."""
    from specrun.core.tasks import task_name

    by_task = {task_name(m.config): m.run_id for m in evaluation.models()}
    return by_task["extractive_qa"], by_task["classification"]


def test_the_model_table_shows_each_runs_task_and_the_metrics_its_task_reports(evaluation, qa_store):
    """A store of both tasks: each row names its task and shows its task's metrics, the headlines first
    (accuracy, F1 for classification; F1, exact match for QA), blank under another task's metric; a table
    of one task has no column for the other's metrics; the filters and the newest-100 limit still apply."""
    import dataclasses

    from specrun.app.ui import TABLE_ROWS, model_widths, models_frame
    from specrun.store import Store

    qa, cls = _runs(evaluation)
    with Store(qa_store).read() as db:
        final = {
            (run, name): value
            for run, name, value in db.execute(
                "SELECT run_id, name, value FROM metrics WHERE final AND split = 'validation'"
            ).fetchall()
        }
    both = models_frame(evaluation.models())
    metrics = list(both.columns[list(both.columns).index("seed") + 1 : list(both.columns).index("trainable")])
    assert metrics == ["accuracy", "F1", "exact match"]  # the headlines (accuracy; F1), then exact match
    rows = {row["run"]: row for row in both.to_dict("records")}
    q, c = rows[qa[:12]], rows[cls[:12]]
    assert (q["task"], c["task"]) == ("extractive_qa", "classification")
    assert q["accuracy"] == "" and q["F1"] == f"{final[(qa, 'f1')]:.4g}"
    assert q["exact match"] == f"{final[(qa, 'exact_match')]:.4g}"
    assert c["accuracy"] == f"{final[(cls, 'accuracy')]:.4g}" and c["F1"] == f"{final[(cls, 'f1')]:.4g}"
    assert c["exact match"] == ""
    assert "—" not in {q["F1"], q["exact match"], c["accuracy"], c["F1"]}

    only_qa = models_frame(evaluation.models("toyqa"))
    assert "accuracy" not in only_qa.columns and list(only_qa["task"]) == ["extractive_qa"]
    assert list(only_qa.columns).index("F1") < list(only_qa.columns).index("exact match")  # the headline first
    only_cls = models_frame(evaluation.models("cls"))
    assert "exact match" not in only_cls.columns and list(only_cls["task"]) == ["classification"]
    assert len(model_widths(list(both.columns))) == len(both.columns) == 15

    model = evaluation.model(qa, task=None)
    many = [dataclasses.replace(model, run_id=f"{i:012x}") for i in range(TABLE_ROWS + 5)]
    frame = models_frame(many)
    assert len(frame) == TABLE_ROWS and "accuracy" not in frame.columns and set(frame["task"]) == {"extractive_qa"}


def test_a_question_is_answered_as_predict_answers_it_with_the_answer_marked(evaluation, qa_store):
    from specrun.driver.models import load_predictor
    from specrun.store import Store

    qa, _ = _runs(evaluation)
    found = evaluation.answer(qa, "  what color is the boat ?  ", CONTEXT)
    (expected,) = load_predictor(Store(qa_store), qa).answer([("what color is the boat ?", CONTEXT)])
    assert (found.answer, found.start) == (expected.answer, expected.start)
    assert found.score == pytest.approx(expected.score, abs=1e-6)
    assert found.answer and CONTEXT[found.start : found.start + len(found.answer)] == found.answer
    assert 0.0 < found.score <= 1.0 and found.latency_ms > 0 and found.load_seconds > 0
    pieces = found.highlighted()
    assert "".join(text for text, _ in pieces) == CONTEXT
    assert [text for text, label in pieces if label == "answer"] == [found.answer]
    again = evaluation.answer(qa, "what color is the boat ?", CONTEXT)
    assert again.load_seconds == 0.0  # cached


def test_a_qa_models_card_shows_its_exact_match_and_f1(evaluation, qa_store):
    import dataclasses

    from specrun.app.models import card, choice_label
    from specrun.store import Store

    qa, cls = _runs(evaluation)
    with Store(qa_store).read() as db:
        em, f1 = db.execute(
            "SELECT max(value) FILTER (WHERE name = 'exact_match'), max(value) FILTER (WHERE name = 'f1') "
            "FROM metrics WHERE run_id = ? AND final AND split = 'validation'",
            [qa],
        ).fetchone()
    model = evaluation.model(qa, task=None)
    assert model.accuracy is None and model.exact_match == pytest.approx(em) and model.f1 == pytest.approx(f1)
    text = card(model)  # its task, and its task's metrics: the headline (F1) first
    assert "| task | extractive_qa |" in text
    assert f"| F1 · exact match (validation, SQuAD v1.1) | {f1:.4g} · {em:.4g} |" in text
    assert f"F1 {f1:.3f} EM {em:.3f}" in choice_label(model)
    classifier = evaluation.model(cls)
    assert classifier.exact_match is None and "| accuracy · F1 (validation) |" in card(classifier)
    assert "| task | classification |" in card(classifier)
    # the task decides, not which numbers happen to be there: a QA run that recorded no exact match
    assert "| F1 · exact match (validation, SQuAD v1.1) |" in card(dataclasses.replace(model, exact_match=None))


def test_a_file_of_questions_is_scored_with_squad_em_and_f1(evaluation, tmp_path):
    from specrun.core.squad import question_scores

    qa, _ = _runs(evaluation)
    upload = tmp_path / "server-copy.csv"
    rows = [
        ("what color is the car ?", CONTEXT, '["red", "Red"]'),
        ("what color is the boat ?", CONTEXT, "blue"),
        ("what color is the hat ?", "the hat, it is said, is green .", '["green"]'),
    ]
    with upload.open("w", newline="") as f:
        csv.writer(f).writerows([("question", "context", "answers"), *rows])
    result, _ = evaluation.answer_file(qa, upload, "questions.csv")
    assert result.columns == [
        "line",
        "question",
        "context",
        "answers",
        "answer",
        "start",
        "score",
        "exact_match",
        "f1",
        "latency_ms",
    ]
    assert [r[0] for r in result.rows] == [2, 3, 4] and len(result.rows) == 3
    refs = [["red", "Red"], ["blue"], ["green"]]
    expected = [question_scores(r[4], ref) for r, ref in zip(result.rows, refs)]
    assert result.scores["exact_match"] == pytest.approx(sum(e for e, _ in expected) / 3)
    assert result.scores["f1"] == pytest.approx(sum(f for _, f in expected) / 3)
    assert re.match(
        r"questions\.csv: 3 questions with answers: exact match \d\.\d{4}, F1 \d\.\d{4}; mean latency", result.summary()
    )
    with result.csv_path.open() as f:
        written = list(csv.reader(f))
    assert written[0] == result.columns and len(written) == 4 and written[3][2] == "the hat, it is said, is green ."

    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"question": "what color is the car ?", "context": CONTEXT}) + "\n")
    result, _ = evaluation.answer_file(qa, plain, "plain.jsonl")
    assert result.scores is None and "no 'answers' column: no EM or F1" in result.summary()
    assert "exact_match" not in result.columns


def test_mistakes_and_runs_of_the_other_task_get_a_sentence(evaluation, tmp_path):
    from specrun.errors import DataError, UsageError

    qa, cls = _runs(evaluation)
    with pytest.raises(UsageError, match="the Question answering tab needs a run of task 'extractive_qa'"):
        evaluation.answer(cls, "what color is the car ?", CONTEXT)
    with pytest.raises(UsageError, match=rf"run {qa[:8]} is a run of task 'extractive_qa': it answers questions"):
        evaluation.classify(qa, "some text")
    with pytest.raises(UsageError, match="it answers questions, it does not classify texts"):
        evaluation.compare([qa, cls], "some text")
    assert evaluation.load(qa)[0].run_id == qa  # the picker loads either kind
    with pytest.raises(UsageError, match="type a question"):
        evaluation.answer(qa, "  ", CONTEXT)
    with pytest.raises(UsageError, match="paste the context"):
        evaluation.answer(qa, "what ?", "")
    with pytest.raises(UsageError, match="pick a model first"):
        evaluation.answer(None, "what ?", CONTEXT)
    bad = tmp_path / "upload.csv"
    bad.write_text("question,answers\nwhat ?,red\n")
    with pytest.raises(DataError, match=r"mine\.csv: needs 'question' and 'context' columns \(missing context\)"):
        evaluation.answer_file(qa, bad, "mine.csv")
    bad.write_text('question,context\nwhat ?,""\n')
    with pytest.raises(DataError, match=r"mine\.csv.*2.*the context is empty"):
        evaluation.answer_file(qa, bad, "mine.csv")
    with pytest.raises(DataError, match="the app reads CSV, TSV, JSONL and parquet"):
        evaluation.answer_file(qa, tmp_path / "q.xlsx", "q.xlsx")
    with pytest.raises(UsageError, match="the Question answering tab needs"):
        evaluation.answer_file(cls, bad, "mine.csv")


def test_efficiency_draws_each_experiments_headline_metric_in_a_mixed_store(evaluation, qa_store):
    """The QA experiment is drawn on its task's headline metric (f1), not on an accuracy it never records; the
    classification experiment in the same store on accuracy; any metric the runs recorded can be picked,
    against FLOPs or training time too, and the view says which split the numbers come from."""
    from specrun.app.ui import efficiency_chart, efficiency_frame, metric_choices
    from specrun.errors import UsageError
    from specrun.plugins import get_registry
    from specrun.store import Store

    qa, cls = _runs(evaluation)
    with Store(qa_store).read() as db:
        final = {
            (run, split, name): value
            for run, split, name, value in db.execute(
                "SELECT run_id, split, name, value FROM metrics WHERE final"
            ).fetchall()
        }
    view = evaluation.efficiency("toyqa", "trainable_params")
    assert view.primary == get_registry().get("task", "extractive_qa").metrics[0] == "f1" == view.metric
    assert view.metrics == ["f1", "exact_match", "loss"] and view.splits == ["validation"]
    (row,) = view.rows
    assert row["f1"] == pytest.approx(final[(qa, "validation", "f1")])
    assert row["exact_match"] == pytest.approx(final[(qa, "validation", "exact_match")])
    assert row["trainable_params"] == final[(qa, "cost", "trainable_params")] and row["on_front"]
    assert view.status().startswith(
        "toyqa: **f1** (the headline metric of task 'extractive_qa') on **validation (each run's primary "
        "evaluation set, its final evaluation)** against trainable parameters: 1 configuration(s); on the Pareto front: "
    )
    drawn = efficiency_chart(view).to_dict()["layer"][1]["encoding"]
    assert drawn["y"]["field"] == "f1" and drawn["y"]["title"] == "f1 (validation)"
    assert metric_choices(view)[0] == ("f1 (headline)", "f1")

    picked = evaluation.efficiency("toyqa", "train_flops", "exact_match")
    assert picked.metric == "exact_match" and picked.primary == "f1"
    assert picked.rows[0]["train_flops"] == final[(qa, "cost", "train_flops")] > 0
    assert "**exact_match** (picked; the headline metric of task 'extractive_qa' is f1)" in picked.status()
    assert "against training FLOPs" in picked.status()
    with pytest.raises(
        UsageError,
        match="no run of 'toyqa' recorded accuracy on its primary evaluation set; they recorded f1, exact_match, loss",
    ):
        evaluation.efficiency("toyqa", "trainable_params", "accuracy")

    classified = evaluation.efficiency("cls", "train_seconds")
    assert classified.metric == classified.primary == "accuracy" and classified.tasks == ["classification"]
    assert classified.metrics == ["accuracy", "f1", "f1_macro", "loss"]
    assert classified.rows[0]["accuracy"] == pytest.approx(final[(cls, "validation", "accuracy")])
    assert classified.rows[0]["train_seconds"] == pytest.approx(final[(cls, "cost", "train_seconds")])
    frame = efficiency_frame(classified)
    assert list(frame.columns)[2:6] == classified.metrics and "train FLOPs" in frame.columns


def test_record_writes_answers_to_app_predictions(qa_store, tmp_path):
    import shutil

    from specrun.app.service import Evaluation
    from specrun.store import Store

    mine = tmp_path / "store.duckdb"
    shutil.copy(qa_store, mine)
    (tmp_path / "artifacts").symlink_to(qa_store.parent / "artifacts", target_is_directory=True)
    evaluation = Evaluation(Store(mine), record=True, out_dir=tmp_path / "downloads")
    qa, _ = _runs(evaluation)
    found = evaluation.answer(qa, "what color is the hat ?", CONTEXT)
    upload = tmp_path / "q.csv"
    upload.write_text(f'question,context,answers\nwhat color is the car ?,{CONTEXT},"[""red""]"\n')
    evaluation.answer_file(qa, upload, "q.csv")
    with Store(mine).read() as db:
        rows = db.execute(
            "SELECT source, position, text, text_pair, label, prediction, confidence FROM app_predictions ORDER BY recorded_at, position"
        ).fetchall()
    assert rows[0] == (
        "question",
        0,
        "what color is the hat ?",
        CONTEXT,
        None,
        found.answer,
        pytest.approx(found.score),
    )
    assert rows[1][:5] == ("q.csv", 0, "what color is the car ?", CONTEXT, '["red"]') and len(rows) == 2


# --- in a browser ------------------------------------------------------------------------------------


@pytest.fixture
def served_qa(qa_store, tmp_path):
    """`specrun app` over the QA store in its own process: its url."""
    pytest.importorskip("playwright")
    with serving(qa_store, tmp_path) as (url, _):
        yield url


def test_the_qa_view_in_chromium(served_qa, qa_store, chromium, tmp_path):  # noqa: F811 - chromium is a fixture
    from playwright.sync_api import sync_playwright

    url = served_qa
    origin = url.rstrip("/")
    errors = []
    questions = tmp_path / "squad-questions.csv"
    with questions.open("w", newline="") as f:
        csv.writer(f).writerows(
            [
                ("question", "context", "answers"),
                ("what color is the car ?", CONTEXT, '["red"]'),
                ("what color is the hat ?", CONTEXT, '["green"]'),
            ]
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=BROWSER_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        context.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith((origin, "data:", "blob:", "about:"))
                else route.abort()
            ),
        )
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(url)
            page_text(page, "#intro", "2 trained models")
            # the models table of both tasks: each row's task, each task's metrics (headlines first), headers whole
            page_text(page, "#models-table", r"extractive_qa[\s\S]*classification|classification[\s\S]*extractive_qa")
            headers = [text for text, _ in header_lines(page)]
            assert [h for h in headers if h in ("task", "accuracy", "F1", "exact match")] == [
                "task",
                "accuracy",
                "F1",
                "exact match",
            ], headers
            assert all(n <= len(text.split()) for text, n in header_lines(page) if text), header_lines(page)
            page.wait_for_timeout(1500)  # the page's load events start, then finish
            page.wait_for_function("() => !document.body.innerText.includes('processing |')", timeout=60_000)
            page.locator("#models-table").scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "app-qa-models.png"))
            # filtered to the QA experiment: no accuracy column left empty
            page.locator("#filter-experiment input").click()
            page.get_by_role("option", name="toyqa").click()
            page.wait_for_function(
                "() => ![...document.querySelectorAll('#models-table th')].some(th => th.innerText.trim() === 'accuracy')",
                timeout=30_000,
            )
            headers = [text for text, _ in header_lines(page)]
            assert "exact match" in headers and "F1" in headers and "accuracy" not in headers, headers
            assert "classification" not in page.locator("#models-table").inner_text()
            page.locator("#filter-experiment input").click()
            page.get_by_role("option", name="(all)").click()
            page_text(page, "#models-table", r"classification")
            page.locator("#picker input").click()
            page.get_by_role("option", name=re.compile(r"toyqa")).click()
            page_text(page, "#model-card", r"experiment\s+toyqa", timeout=180_000)  # loaded (slow on a busy machine)

            page.get_by_role("tab", name="Question answering").click()
            page.locator("#qa-question textarea").fill("what color is the boat ?")
            page.locator("#qa-context textarea").fill(CONTEXT)
            page.locator("#qa-go").click()
            line = page_text(page, "#qa-result", r"latency")
            found = re.search(r"^(.+?) · score (\d\.\d+) · latency (\d+\.\d+) ms", line)
            assert found, line
            answer, score, latency = found.group(1), float(found.group(2)), float(found.group(3))
            assert answer in CONTEXT and 0.0 < score <= 1.0 and latency > 0
            # the context, whole, with the answer as the one highlighted span
            marked = page.locator("#qa-highlight .token.highlighted .text")
            marked.first.wait_for(timeout=30_000)
            assert [t.strip() for t in marked.all_inner_texts()] == [answer]
            assert (
                re.sub(r"\s+", " ", page_text(page, "#qa-highlight", re.escape(answer))).count("the boat is blue") == 1
            )
            page.screenshot(path=str(ARTIFACTS / "app-qa.png"), full_page=True)

            page.locator("#qa-file input[type=file]").set_input_files(str(questions))
            page.wait_for_function(
                "() => document.querySelector('#qa-file').innerText.includes('squad-questions.csv')", timeout=30_000
            )
            page.locator("#qa-file-go").click()
            summary = page_text(page, "#qa-file-result", r"exact match")
            assert re.search(
                r"squad-questions\.csv: 2 questions with answers: exact match (\d\.\d{4}), F1 (\d\.\d{4}); mean latency",
                summary,
            ), summary
            page_text(page, "#qa-rows", r"what color is the hat \?")
            page.locator("#qa-download").wait_for(state="visible", timeout=30_000)

            # a classification run on this tab: one sentence, not a traceback
            page.locator("#picker input").click()
            page.get_by_role("option", name=re.compile(r" cls ")).click()
            page.locator("#qa-go").click()
            assert "the Question answering tab needs a run of task 'extractive_qa'" in page_text(
                page, "#qa-result", "needs a run of task"
            )
            page.screenshot(path=str(ARTIFACTS / "app-qa-file.png"), full_page=True)

            # the efficiency view of a mixed store: each experiment on its task's headline metric, any other it
            # recorded on request, against training FLOPs too, and always which split the numbers come from
            page.get_by_role("tab", name="Efficiency").click()
            split = r"on validation \(each run's primary evaluation set, its final evaluation\)"
            page_text(
                page, "#efficiency-result", rf"cls: accuracy \(the headline metric of task 'classification'\) {split}"
            )
            page.locator("#efficiency-experiment input").click()
            page.get_by_role("option", name="toyqa").click()
            page_text(page, "#efficiency-result", rf"toyqa: f1 \(the headline metric of task 'extractive_qa'\) {split}")
            page.locator("#efficiency-metric input").click()
            page.get_by_role("option", name="exact_match").click()
            page.get_by_label("training FLOPs").check()
            page_text(
                page,
                "#efficiency-result",
                rf"toyqa: exact_match \(picked; the headline metric of task 'extractive_qa' is f1\) {split} against "
                r"training FLOPs: 1 configuration\(s\); on the Pareto front: full",
            )
            page.wait_for_function(
                "() => document.querySelector('#efficiency-plot svg, #efficiency-plot canvas')", timeout=30_000
            )
            page_text(page, "#efficiency-table", r"exact_match[\s\S]*train FLOPs")
            page.screenshot(path=str(ARTIFACTS / "app-qa-efficiency.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "app-qa-failure.png"), full_page=True)
            raise
        browser.close()
    assert errors == [], errors
