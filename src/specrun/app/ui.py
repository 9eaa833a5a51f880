"""The app's page (Gradio): a model picker over the store, then tabs to classify one text, compare models
on one text, classify a file, answer questions with an extractive-QA run (one question and its context, or
a file of them), and see an experiment's runs on a metric (their task's headline, or another they
recorded) against a cost.

Each handler's first output is a status line: a user's mistake shows there as one sentence, never
as a traceback.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable
from typing import Any

import gradio as gr

from specrun.app.batch import MAX_ROWS, SHOWN_ROWS
from specrun.app.models import SHOWN_METRICS, card, choice_label, human_count, hyperparameters, number, task_metrics
from specrun.app.service import COMPARE_MAX, COSTS, Answer, Efficiency, Evaluation, Prediction
from specrun.core.tasks import DEFAULT_TASK, task_name
from specrun.errors import SpecrunError
from specrun.store.catalog import StoredModel

log = logging.getLogger("specrun.app")

ALL = "(all)"
CSS = """
#single-result p, #batch-result p, #compare-result p, #qa-result p, #qa-file-result p { font-size: 1.05rem; }
.specrun-error { color: #b91c1c; }
/* table headers and cells break between words, never inside one ("accura|cy", "0.604|7"); Gradio 6 draws
   a table's rows as .body-cell (not td), whose text it wraps with word-break: break-word */
#models-table th, #models-table th *, #models-table .body-cell, #models-table .body-cell *,
#efficiency-table th, #efficiency-table th *, #efficiency-table .body-cell, #efficiency-table .body-cell *,
#compare-table th, #compare-table th *, #compare-table .body-cell, #compare-table .body-cell * {
  word-break: keep-all !important; overflow-wrap: normal !important; hyphens: none !important;
}
/* the models table holds up to 15 columns: the page's (proportional) font fits them in view
   (its rows are drawn as .body-cell, not td) */
#models-table th, #models-table th *, #models-table .body-cell, #models-table .body-cell * { font-family: var(--font) !important; }
#models-table th, #models-table th * { font-size: var(--text-sm) !important; }
"""
FILE_TYPES = [".csv", ".tsv", ".txt", ".jsonl", ".json", ".ndjson", ".parquet"]


def error(message: str) -> str:
    return f'<span class="specrun-error">⚠ {message}</span>'


def guarded(outputs: int, cleared: Callable[[], list] | None = None) -> Callable:
    """Turn a handler's SpecrunError into the status line (its first output), with the other outputs
    from ``cleared`` (results of an earlier call that no longer apply) or left as they were; an
    unexpected error is logged with its traceback and reported as a bug."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args: Any) -> Any:
            try:
                return fn(*args)
            except SpecrunError as exc:
                message = error(str(exc))
            except Exception as exc:
                # specrun's console handler prints messages only: the traceback goes into the message
                log.error("specrun app: %s failed (a bug):\n%s", fn.__name__, traceback.format_exc().rstrip())
                message = error(
                    f"internal error ({type(exc).__name__}: {exc}); this is a bug in specrun, details are in the terminal"
                )
            if outputs == 1:
                return message
            rest = cleared() if cleared else [gr.update() for _ in range(outputs - 1)]
            return (message, *rest)

        return run

    return wrap


def _any(value: str | None) -> str | None:
    return None if value in (None, "", ALL) else value


#: The model table shows at most this many models (the newest): a store of thousands of runs would
#: otherwise send every row with the page. The picker still lists every model; filters narrow the table.
TABLE_ROWS = 100


def table_note(models: list[StoredModel]) -> str:
    """The status line under the filters: empty, or that the table shows only the newest ``TABLE_ROWS``."""
    if len(models) <= TABLE_ROWS:
        return ""
    return (
        f"The table shows the newest {TABLE_ROWS} of {len(models):,} models; the model picker lists them all. "
        "Filter by experiment, method or dataset to see others."
    )


def model_metrics(models: list[StoredModel]) -> list[str]:
    """The model table's metric columns for ``models``: the metrics their tasks report (``task_metrics``),
    each task's headline first, then the others; classification's first, then other tasks' by name. A
    metric no shown run's task reports gets no column."""
    by_task: dict[str, tuple[str, ...]] = {}
    for m in models:
        by_task.setdefault(task_name(m.config), task_metrics(m))
    tasks = sorted(by_task, key=lambda t: (t != DEFAULT_TASK, t))
    headlines = [by_task[t][0] for t in tasks if by_task[t]]
    return list(dict.fromkeys([*headlines, *(n for t in tasks for n in by_task[t])]))


def model_columns(metrics: list[str]) -> list[str]:
    """The model table's columns with these metric columns (``SHOWN_METRICS`` names)."""
    return [*MODEL_COLUMNS[:7], *(SHOWN_METRICS[n] for n in metrics), *MODEL_COLUMNS[-5:]]


def model_widths(columns: list[str]) -> list[str]:
    """Widths that fit the table on the page: the numbers stay in view, the hyperparameters wrap, and each
    header fits its column with words whole (the CSS forbids breaking inside a word)."""
    weights = [COLUMN_WEIGHTS.get(c, METRIC_WEIGHT) for c in columns]
    return [f"{100 * w / sum(weights):.1f}%" for w in weights]


def models_frame(models: list[StoredModel]):
    """The model table's rows: the first ``TABLE_ROWS`` of ``models`` (newest first), each with its run's
    task and the metrics that task reports (blank under a metric its task does not report; "—": its run
    recorded none)."""
    import pandas as pd

    models = models[:TABLE_ROWS]
    metrics = model_metrics(models)
    rows = []
    for m in models:
        reported = task_metrics(m)
        rows.append(
            {
                "run": m.run_id[:12],
                "experiment": ", ".join(m.experiments),
                "task": task_name(m.config),
                "method": m.method,
                "hyperparameters": hyperparameters(m),
                "dataset": m.dataset,
                "seed": m.seed,
                **{SHOWN_METRICS[n]: number(getattr(m, n)) if n in reported else "" for n in metrics},
                "trainable": human_count(m.trainable_params),
                "params": human_count(m.total_params),
                "memory MB": "—" if m.model_memory_mb is None else f"{m.model_memory_mb:.1f}",
                "ms mean": number(m.latency_ms_mean, 3),
                "ms p95": number(m.latency_ms_p95, 3),
            }
        )
    return pd.DataFrame(rows, columns=model_columns(metrics))


#: The model table's columns for classification runs: the run's task, its metrics (accuracy, F1: the
#: columns between "seed" and "trainable" are the shown runs' tasks' metrics), parameters (trainable,
#: total), model memory, latency at batch size 1 (mean, p95).
MODEL_COLUMNS = [
    "run",
    "experiment",
    "task",
    "method",
    "hyperparameters",
    "dataset",
    "seed",
    "accuracy",
    "F1",
    "trainable",
    "params",
    "memory MB",
    "ms mean",
    "ms p95",
]
#: Relative widths of the model table's columns (a metric's: ``METRIC_WEIGHT``), made percentages.
COLUMN_WEIGHTS = {
    "run": 9,
    "experiment": 8.5,
    "task": 10,
    "method": 6.5,
    "hyperparameters": 12,
    "dataset": 6.5,
    "seed": 4.5,
    "trainable": 7,
    "params": 6,
    "memory MB": 6,
    "ms mean": 5.5,
    "ms p95": 6,
}
METRIC_WEIGHT = 6.5


def _choices(models: list[StoredModel]) -> list[tuple[str, str]]:
    return [(choice_label(m), m.run_id) for m in models]


def prediction_line(p: Prediction) -> str:
    store = f"; its run measured {p.model.latency_ms_mean:.2f} ms mean" if p.model.latency_ms_mean is not None else ""
    loaded = f" · model loaded in {p.load_seconds:.2f} s for this call" if p.load_seconds > 0 else ""
    return (
        f"**{p.label}** · confidence **{p.confidence:.3f}** · latency **{p.latency_ms:.2f} ms** "
        f"(batch size 1{store}){loaded}"
    )


def answer_line(a: Answer) -> str:
    """The answer, its score and latency, for the page."""
    store = f"; its run measured {a.model.latency_ms_mean:.2f} ms mean" if a.model.latency_ms_mean is not None else ""
    loaded = f" · model loaded in {a.load_seconds:.2f} s for this call" if a.load_seconds > 0 else ""
    found = f"**{a.answer}**" if a.answer else "no answer found in the context"
    return (
        f"{found} · score **{a.score:.3f}** · latency **{a.latency_ms:.2f} ms** "
        f"(every window of the context, batch size 1{store}){loaded}"
    )


def efficiency_chart(view: Efficiency):
    """The view's metric against its cost per configuration, with the Pareto front in red: the report's
    efficiency figure."""
    from specrun.report import charts

    title, log_scale = COSTS[view.cost]
    shown = [{**r, view.metric: round(r[view.metric], 4)} for r in view.rows]
    return charts.scatter(
        shown,
        view.cost,
        view.metric,
        "label",
        title,
        f"{view.metric} ({', '.join(view.splits)})",
        x_scale="log" if log_scale else "linear",
        highlight="on_front",
        connect="on_front",
        tooltip=["config", "runs", view.cost, view.metric, "on_front"],
    )


def efficiency_frame(view: Efficiency):
    """The view's configurations as a table: every metric they recorded, then their costs."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "configuration": r["label"],
                "runs": r["runs"],
                **{metric: number(r[metric]) for metric in view.metrics},
                "latency ms (mean)": number(r["latency_ms_mean"], 3),
                "trainable params": human_count(r["trainable_params"]),
                "total params": human_count(r["total_params"]),
                "model memory MB": "—" if r["model_memory_mb"] is None else f"{r['model_memory_mb']:.1f}",
                "train seconds": number(r["train_seconds"], 3),
                "train FLOPs": "—" if r["train_flops"] is None else f"{r['train_flops']:.3g}",
                "on the front": "yes" if r["on_front"] else "",
                "run ids": r["run_ids"],
            }
            for r in view.rows
        ]
    )


def metric_choices(view: Efficiency) -> list[tuple[str, str]]:
    """The metric picker's choices: the metrics the runs recorded, the task's headline first and marked."""
    return [(f"{m} (headline)" if m == view.primary else m, m) for m in view.metrics]


def intro_text(evaluation: Evaluation, models: list[StoredModel]) -> str:
    recording = (
        "**Recording**: predictions made here are written to the store's `app_predictions` table."
        if evaluation.record
        else "Nothing you do here is written to the store."
    )
    text = (
        f"## specrun · {len(models)} trained model{'s' if len(models) != 1 else ''} in `{evaluation.store.path}`\n"
        f"Pick a model, then classify a text, compare models, score a labelled file, or answer questions with an "
        f"extractive-QA run. {recording}"
    )
    if not models:
        text += "\n\n" + error(
            "this store holds no completed runs with saved weights yet: run `specrun apply SPEC`, then reload the page"
        )
    return text


def build(evaluation: Evaluation, experiment: str | None = None) -> gr.Blocks:
    """The page over ``evaluation``'s store; ``experiment`` preselects the filter and the efficiency view."""
    experiments = evaluation.experiments()
    all_models = evaluation.models()
    shown = evaluation.models(experiment) if experiment else all_models
    first = shown[0].run_id if shown else None

    # uploads and downloads older than an hour are deleted, hourly: a long-running app does not fill the disk
    with gr.Blocks(title="specrun app", analytics_enabled=False, delete_cache=(3600, 3600)) as page:
        intro = gr.Markdown(intro_text(evaluation, all_models), elem_id="intro")
        with gr.Row(equal_height=True):
            f_experiment = gr.Dropdown(
                [ALL, *experiments], value=experiment or ALL, label="Experiment", elem_id="filter-experiment"
            )
            f_method = gr.Dropdown(
                [ALL, *sorted({m.method for m in all_models})], value=ALL, label="Method", elem_id="filter-method"
            )
            f_dataset = gr.Dropdown(
                [ALL, *sorted({m.dataset for m in all_models})], value=ALL, label="Dataset", elem_id="filter-dataset"
            )
            reload = gr.Button("Reload from the store", size="sm", scale=0)
        models_status = gr.Markdown(table_note(shown), elem_id="models-status")
        frame = models_frame(shown)
        table = gr.Dataframe(
            frame,
            label="Models: completed runs with saved weights, with what their runs recorded (metrics: those of the run's task, "
            "on its primary evaluation set, each task's headline first; blank: not its task's metric; parameters: "
            "trainable and total; latency: batch size 1)",
            interactive=False,
            wrap=True,
            elem_id="models-table",
            max_height=320,
            column_widths=model_widths(list(frame.columns)),
        )
        picker = gr.Dropdown(_choices(shown), value=first, label="Model", elem_id="picker", filterable=True)
        model_card = gr.Markdown(card(shown[0]) if shown else "", elem_id="model-card")

        with gr.Tabs():
            with gr.Tab("Single text", id="single"):
                s_text = gr.Textbox(
                    label="Text", lines=3, placeholder="an utterly gorgeous, heartfelt film", elem_id="single-text"
                )
                s_pair = gr.Textbox(
                    label="Second text (sentence-pair models only, e.g. MRPC, RTE)", lines=1, elem_id="single-pair"
                )
                s_go = gr.Button("Classify", variant="primary", elem_id="single-go")
                s_result = gr.Markdown("", elem_id="single-result")
                s_label = gr.Label(label="Confidence per class", elem_id="single-label")
            with gr.Tab("Compare", id="compare"):
                c_models = gr.Dropdown(
                    _choices(shown),
                    value=[m.run_id for m in shown[:2]] if len(shown) >= 2 else [],
                    multiselect=True,
                    max_choices=COMPARE_MAX,
                    label=f"Models to compare (2 to {COMPARE_MAX})",
                    elem_id="compare-models",
                )
                c_text = gr.Textbox(label="Text", lines=2, elem_id="compare-text")
                c_pair = gr.Textbox(label="Second text (sentence-pair models only)", lines=1, elem_id="compare-pair")
                c_go = gr.Button("Compare", variant="primary", elem_id="compare-go")
                c_result = gr.Markdown("", elem_id="compare-result")
                with gr.Row():
                    c_slots = [gr.Label(visible=False, elem_id=f"compare-slot-{i}") for i in range(COMPARE_MAX)]
                c_table = gr.Dataframe(label="Side by side", interactive=False, wrap=True, elem_id="compare-table")
            with gr.Tab("Batch file", id="batch"):
                b_file = gr.File(
                    label=f"A CSV, TSV, JSONL or parquet file with a 'text' column (and 'text_pair'; with 'label': accuracy, F1, "
                    f"confusion matrix), at most {MAX_ROWS:,} rows",
                    file_types=FILE_TYPES,
                    elem_id="batch-file",
                )
                b_go = gr.Button("Classify the file", variant="primary", elem_id="batch-go")
                b_result = gr.Markdown("", elem_id="batch-result")
                b_download = gr.DownloadButton(
                    "Download the predictions (CSV)", visible=False, elem_id="batch-download"
                )
                b_confusion = gr.Dataframe(
                    label="Confusion matrix (rows: true label; columns: predicted)",
                    interactive=False,
                    visible=False,
                    elem_id="batch-confusion",
                )
                b_rows = gr.Dataframe(
                    label=f"Predictions (the first {SHOWN_ROWS}; the download holds every row)",
                    interactive=False,
                    wrap=True,
                    elem_id="batch-rows",
                    max_height=420,
                )
            with gr.Tab("Question answering", id="qa"):
                gr.Markdown(
                    'For extractive-QA runs (`[task] name = "extractive_qa"`): the answer is a span of the context.',
                    elem_id="qa-intro",
                )
                q_question = gr.Textbox(
                    label="Question", lines=1, placeholder="what color is the car ?", elem_id="qa-question"
                )
                q_context = gr.Textbox(
                    label="Context (the text the answer is to be found in)", lines=6, elem_id="qa-context"
                )
                q_go = gr.Button("Answer", variant="primary", elem_id="qa-go")
                q_result = gr.Markdown("", elem_id="qa-result")
                q_highlight = gr.HighlightedText(
                    label="The answer in its context",
                    color_map={"answer": "#facc15"},
                    show_inline_category=False,
                    elem_id="qa-highlight",
                )
                q_file = gr.File(
                    label="A CSV, TSV, JSONL or parquet file with 'question' and 'context' columns (with 'answers', a JSON "
                    f"list of texts or one text: exact match and F1), at most {MAX_ROWS:,} rows",
                    file_types=FILE_TYPES,
                    elem_id="qa-file",
                )
                q_file_go = gr.Button("Answer the file", variant="primary", elem_id="qa-file-go")
                q_file_result = gr.Markdown("", elem_id="qa-file-result")
                q_download = gr.DownloadButton("Download the answers (CSV)", visible=False, elem_id="qa-download")
                q_rows = gr.Dataframe(
                    label=f"Answers (the first {SHOWN_ROWS}; the download holds every row)",
                    interactive=False,
                    wrap=True,
                    elem_id="qa-rows",
                    max_height=420,
                )
            with gr.Tab("Efficiency", id="efficiency"):
                e_experiment = gr.Dropdown(
                    experiments,
                    value=experiment or (experiments[0] if experiments else None),
                    label="Experiment",
                    elem_id="efficiency-experiment",
                )
                e_metric = gr.Dropdown(
                    [],
                    value=None,
                    label="Metric, on each run's primary evaluation set (the task's headline metric unless you pick another)",
                    elem_id="efficiency-metric",
                )
                e_cost = gr.Radio(
                    [(title.split(" (")[0], key) for key, (title, _) in COSTS.items()],
                    value="latency_ms_mean",
                    label="Against",
                    elem_id="efficiency-cost",
                )
                e_result = gr.Markdown("", elem_id="efficiency-result")
                e_plot = gr.Plot(
                    label="The metric against the cost, means over seeds (Pareto front in red)",
                    elem_id="efficiency-plot",
                )
                e_table = gr.Dataframe(
                    label="Configurations: means over seeds of every metric their runs recorded on the primary evaluation set, and costs",
                    interactive=False,
                    wrap=True,
                    elem_id="efficiency-table",
                )

        # --- handlers ---------------------------------------------------------------------------
        @guarded(9)
        def refilter(exp, method, dataset, current, compared):
            every = evaluation.models()
            filtered = any(_any(x) for x in (exp, method, dataset))
            models = evaluation.models(_any(exp), _any(method), _any(dataset)) if filtered else every
            ids = [m.run_id for m in models]
            value = current if current in ids else (ids[0] if ids else None)
            kept = [r for r in (compared or []) if r in ids]
            status = table_note(models) if models else error("no model matches these filters")
            experiments = evaluation.experiments()
            frame = models_frame(models)  # its metric columns: those of the shown runs' tasks
            return (
                status,
                gr.update(value=frame, column_widths=model_widths(list(frame.columns))),
                gr.update(choices=_choices(models), value=value),
                gr.update(choices=_choices(models), value=kept),
                gr.update(choices=[ALL, *experiments]),
                gr.update(choices=experiments),
                gr.update(choices=[ALL, *sorted({m.method for m in every})]),
                gr.update(choices=[ALL, *sorted({m.dataset for m in every})]),
                intro_text(evaluation, every),
            )

        @guarded(1)
        def pick(run_id):
            if not run_id:
                return ""
            model, seconds = evaluation.load(run_id)
            return card(model, seconds)

        @guarded(2, lambda: [None])
        def classify(run_id, text, pair):
            found = evaluation.classify(run_id, text, pair)
            return prediction_line(found), found.probabilities

        @guarded(2 + COMPARE_MAX, lambda: [None, *[gr.update(visible=False, value=None) for _ in range(COMPARE_MAX)]])
        def compare(run_ids, text, pair):
            import pandas as pd

            found = evaluation.compare(run_ids, text, pair)
            slots = [
                gr.update(
                    visible=True,
                    value=p.probabilities,
                    label=f"{p.model.run_id[:8]} · {p.model.method} {hyperparameters(p.model, 2)}",
                )
                for p in found
            ]
            slots += [gr.update(visible=False, value=None) for _ in range(COMPARE_MAX - len(found))]
            frame = pd.DataFrame(
                [
                    {
                        "run": p.model.run_id[:12],
                        "method": f"{p.model.method} {hyperparameters(p.model, 3)}".strip(),
                        "label": p.label,
                        "confidence": round(p.confidence, 4),
                        "latency ms": round(p.latency_ms, 2),
                        "run's accuracy": number(p.model.accuracy),
                        "run's latency ms (mean)": number(p.model.latency_ms_mean, 3),
                        "trainable params": human_count(p.model.trainable_params),
                        "loaded now (s)": round(p.load_seconds, 2),
                    }
                    for p in found
                ]
            )
            agree = len({p.label for p in found}) == 1
            status = f"{len(found)} models: " + (
                "they agree on **" + found[0].label + "**"
                if agree
                else "they disagree: " + ", ".join(f"{p.model.run_id[:8]} **{p.label}**" for p in found)
            )
            return (status, frame, *slots)

        @guarded(4, lambda: [None, gr.update(visible=False, value=None), gr.update(visible=False, value=None)])
        def classify_file(run_id, upload):
            import pandas as pd

            path = getattr(upload, "name", upload)  # gradio gives a path (type="filepath")
            result, seconds = evaluation.classify_file(run_id, path, _original_name(path))
            loaded = f" (model loaded in {seconds:.2f} s)" if seconds > 0 else ""
            frame = pd.DataFrame(result.rows[:SHOWN_ROWS], columns=result.columns)
            if result.confusion is None:
                confusion = gr.update(visible=False, value=None)
            else:
                names, counts = result.confusion
                confusion = gr.update(
                    visible=True,
                    value=pd.DataFrame(
                        [[f"true {n}", *row] for n, row in zip(names, counts)],
                        columns=["", *[f"predicted {n}" for n in names]],
                    ),
                )
            return result.summary() + loaded, frame, confusion, gr.update(visible=True, value=str(result.csv_path))

        @guarded(2, lambda: [None])
        def answer(run_id, question, context):
            found = evaluation.answer(run_id, question, context)
            return answer_line(found), found.highlighted()

        @guarded(3, lambda: [None, gr.update(visible=False, value=None)])
        def answer_file(run_id, upload):
            import pandas as pd

            path = getattr(upload, "name", upload)
            result, seconds = evaluation.answer_file(run_id, path, _original_name(path))
            loaded = f" (model loaded in {seconds:.2f} s)" if seconds > 0 else ""
            frame = pd.DataFrame(result.rows[:SHOWN_ROWS], columns=result.columns)
            return result.summary() + loaded, frame, gr.update(visible=True, value=str(result.csv_path))

        @guarded(4, lambda: [None, None, gr.update()])
        def efficiency(exp, cost, metric=None):
            view = evaluation.efficiency(exp, cost, _any(metric))
            picker = gr.update(choices=metric_choices(view), value=view.metric)
            return view.status(), efficiency_chart(view), efficiency_frame(view), picker

        def experiment_efficiency(exp, cost):
            """Another experiment: its task's headline metric (the one picked may be one it did not record)."""
            return efficiency(exp, cost, None)

        filters = [f_experiment, f_method, f_dataset, picker, c_models]
        listed = [models_status, table, picker, c_models, f_experiment, e_experiment, f_method, f_dataset, intro]
        # on change, not input: a pick fires a dropdown's input twice, and the second call, sent with the
        # picker's value before the first narrowed its choices, was refused by Gradio ("not in the choices")
        for control in (f_experiment, f_method, f_dataset):
            control.change(refilter, filters, listed)
        reload.click(refilter, filters, listed)
        page.load(refilter, filters, listed)  # each visit sees the store as it is now
        picker.change(pick, [picker], [model_card])
        s_go.click(classify, [picker, s_text, s_pair], [s_result, s_label])
        s_text.submit(classify, [picker, s_text, s_pair], [s_result, s_label])
        c_go.click(compare, [c_models, c_text, c_pair], [c_result, c_table, *c_slots])
        b_go.click(classify_file, [picker, b_file], [b_result, b_rows, b_confusion, b_download])
        q_go.click(answer, [picker, q_question, q_context], [q_result, q_highlight])
        q_question.submit(answer, [picker, q_question, q_context], [q_result, q_highlight])
        q_file_go.click(answer_file, [picker, q_file], [q_file_result, q_rows, q_download])
        drawn = [e_result, e_plot, e_table, e_metric]
        e_experiment.change(experiment_efficiency, [e_experiment, e_cost], drawn)
        e_metric.input(efficiency, [e_experiment, e_cost, e_metric], drawn)  # a person's pick, not the update
        e_cost.change(efficiency, [e_experiment, e_cost, e_metric], drawn)
        page.load(experiment_efficiency, [e_experiment, e_cost], drawn)
    return page


def _original_name(path: str | None) -> str | None:
    """Gradio keeps an upload's name as the last part of the server-side path."""
    from pathlib import Path

    return Path(path).name if path else None
