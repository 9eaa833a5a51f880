"""The plugin objects that hooks register. Subclass one, set ``name`` and ``Options``, implement its methods.

``Options`` is a pydantic model with ``extra="forbid"`` (subclass ``PluginOptions``): the spec's
section for the plugin is validated against it, so a typo fails before anything trains.

This module is the plugin API, versioned as ``PLUGIN_API_VERSION``: the names in ``__all__`` (and
the hooks of ``specrun.hookspecs``) are public. What may change in a minor release, and how long a
deprecated form keeps working: docs/plugins.md, "The plugin API and its versions".
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from specrun.core.results import ResultTable, RunInfo, config_value
from specrun.errors import AnalysisError, SpecrunDeprecationWarning
from specrun.metrics import MetricRef

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from specrun.examples import Dataset, Examples


#: The plugin API's version (``MAJOR.MINOR``). A minor release may add to the API, and may deprecate a
#: form; a deprecated form keeps working, with a ``SpecrunDeprecationWarning`` that says what to write
#: instead, for two minor releases after the one that deprecates it.
PLUGIN_API_VERSION = "0.2"
#: The oldest plugin API whose forms still work here (each with a ``SpecrunDeprecationWarning``).
OLDEST_SUPPORTED_API = "0.1"
#: Where the migration notes are.
CHANGES_DOC = "docs/plugins.md#changes-for-plugin-authors"

__all__ = [
    "KIND_BASES",
    "OLDEST_SUPPORTED_API",
    "PLUGIN_API_VERSION",
    "RESERVED_TABLES",
    "AnalysisContext",
    "AnalysisPlugin",
    "BuildContext",
    "DataContext",
    "DatasetSource",
    "Figure",
    "MethodPlugin",
    "ModelInfo",
    "ModelSource",
    "NoOptions",
    "Plugin",
    "PluginOptions",
    "ResultTable",
    "RunInfo",
    "SpecFacts",
    "SpecrunDeprecationWarning",
    "TaskContext",
    "TaskEvaluation",
    "TaskPlugin",
    "TransformContext",
    "TransformPlugin",
    "config_value",
    "table_prefix",
]


class PluginOptions(BaseModel):
    """Base of every plugin's options model: unknown keys are errors, and so are inf and nan."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class NoOptions(PluginOptions):
    """For plugins that take no options."""


class Plugin:
    """What every plugin object has: a unique ``name``, an ``Options`` model, a one-line description."""

    name: ClassVar[str]
    Options: ClassVar[type[PluginOptions]] = NoOptions
    description: ClassVar[str] = ""
    #: Bump when a change alters results: it is part of every run id that uses the plugin.
    version: ClassVar[str] = "1"


# --- methods -------------------------------------------------------------------------------------


@dataclass
class BuildContext:
    """What a method gets to build its model."""

    model_path: str
    num_labels: int
    device: torch.device
    precision: Literal["fp32", "bf16", "fp16"]
    seed: int
    label_names: tuple[str, ...] = ()
    #: ``model.max_length``: the longest tokenized input the model will see (0 when unknown).
    max_length: int = 0
    #: The run's task (a ``TaskPlugin``) and its validated options; None: classification.
    task: Any = None
    task_options: Any = None

    @property
    def task_name(self) -> str:
        return self.task.name if self.task is not None else "classification"

    def load_backbone(self, **kwargs: Any) -> torch.nn.Module:
        """Load the pretrained model with a fresh head for the run's task (``AutoModelForSequenceClassification``
        for classification, ``AutoModelForQuestionAnswering`` for extractive QA...); ``from_pretrained``
        kwargs pass through."""
        if self.task is not None:
            return self.task.load_model(self, **kwargs)
        from specrun.core.models import load_classifier

        return load_classifier(self.model_path, self.num_labels, self.label_names, **kwargs)


@dataclass
class ModelInfo:
    """What ``MethodPlugin.check_model`` gets: the model a run will load, known before anything trains."""

    #: ``model.name`` as the spec gives it, and what ``from_pretrained`` loads for it.
    name: str
    path: str
    #: The model's transformers config (``num_hidden_layers``, ``max_position_embeddings``, ...).
    config: Any
    #: ``model.max_length``.
    max_length: int
    #: ``model.init_from``: the run whose trained weights the model starts from (None: the pretrained model).
    init_from: str | None = None

    def module_names(self) -> list[str]:
        """The names of the classifier's modules (``bert.encoder.layer.0.attention.self.query``, ...),
        from a copy built on the meta device: no weights are loaded."""
        from specrun.core.models import module_names

        return module_names(self.path)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """``{module name: (in_features, out_features)}`` of the classifier's linear layers, from a copy
        built on the meta device: no weights are loaded."""
        from specrun.core.models import linear_shapes

        return dict(linear_shapes(self.path))


class MethodPlugin(Plugin):
    """A fine-tuning method: builds the trainable model from a pretrained backbone.

    The runner saves a run's trained weights — the parameters that require grad after ``build`` — as
    peft's adapter folder when ``build`` returns a ``PeftModel``, as a transformers model folder when it
    returns a plain ``PreTrainedModel``, and as ``trained.safetensors`` otherwise; it reloads a run by
    calling ``build`` again with the same options and loading them back: so ``build`` must produce the
    same module structure every time.
    """

    def check(self, options: PluginOptions, device: torch.device, precision: str) -> None:
        """Raise ``specrun.errors.MethodUnavailable`` if this method cannot run here. Default: always can."""

    def check_model(self, options: PluginOptions, model: ModelInfo) -> None:
        """Raise ``specrun.errors.ConfigError`` (``key`` = the option's spec key, e.g. ``"method.layers"``)
        if ``options`` cannot work with this model on any machine. ``plan`` and ``apply`` call it for
        every run before anything trains. Default: any model will do."""

    def build(self, options: PluginOptions, ctx: BuildContext) -> torch.nn.Module:
        """Return the model to train: a module whose forward takes tokenizer outputs and ``labels``
        and returns an object with ``.logits`` (like ``AutoModelForSequenceClassification``)."""
        raise NotImplementedError

    #: Options that change neither which parameters the model has nor which train (``lora``'s ``alpha``
    #: and ``dropout``): ``plan`` counts the trainable parameters of runs that differ only in these once.
    #: ``specrun.testing`` checks the claim (``check_method``'s parameter counts).
    count_free_options: ClassVar[frozenset[str]] = frozenset()

    def prefers_frozen_bf16(self, options: PluginOptions) -> bool:
        """Whether frozen weights may be stored in bf16 under bf16 precision (saves re-casting each step)."""
        return True

    def frozen_prefix_problem(self, options: PluginOptions, model: ModelInfo | None) -> str | None:
        """Why ``train.cache_frozen`` cannot serve this method with ``options``: some parameter it trains
        sits inside the backbone (the frozen prefix whose output the option computes once per example);
        None when everything it trains sits above it (the task head, and a pooler). ``model`` is the model
        the run loads, or None when the spec is validated without it (answer what the options alone
        tell). The runner checks the built model's trainable parameters again before it trains. Default:
        a reason (a method says so itself when it can)."""
        return (
            f"the method {self.name!r} does not declare that what it trains sits above a frozen backbone "
            "(MethodPlugin.frozen_prefix_problem)"
        )


# --- data ----------------------------------------------------------------------------------------


@dataclass
class DataContext:
    """What a dataset source gets: where local copies of public datasets live (``SPECRUN_DATA_DIR``)."""

    data_dir: str | None
    spec_dir: str | None = None


class DatasetSource(Plugin):
    """A named dataset (``data.dataset = "<name>"``) that loads labelled splits."""

    #: The split evaluated when the spec names none.
    eval_split: ClassVar[str] = "validation"

    def load(self, options: PluginOptions, ctx: DataContext) -> Dataset:
        raise NotImplementedError

    def files(self, options: PluginOptions, ctx: DataContext) -> list[Path] | None:
        """The local files ``load`` reads, when it reads nothing else (optional). With them, specrun keeps
        the parsed dataset in its cache (``specrun.cache``) and later commands skip ``load`` while
        every file keeps its contents. None (the default): ``load`` runs every time."""
        return None


class ModelSource(Plugin):
    """Resolves a model name into a path or hub id that ``from_pretrained`` can load."""

    #: Sources are asked in ascending priority; the first non-None answer wins.
    priority: ClassVar[int] = 100

    def resolve(self, model_name: str) -> str | None:
        raise NotImplementedError

    def portable_name(self, model_name: str) -> str | None:
        """The name another machine loads this model by, written into a saved adapter folder
        (``base_model_name_or_path`` of ``adapter_config.json``), when it is not ``model_name`` itself:
        e.g. the hub id of a model this source serves from a local copy. Asked only of the source whose
        ``resolve`` answers for ``model_name``. Default None: ``model_name`` as the spec wrote it."""
        return None


# --- transforms ----------------------------------------------------------------------------------


@dataclass
class TransformContext:
    """What a transform gets besides the examples."""

    seed: int
    split: str
    label_names: tuple[str, ...]
    #: Per-example scores from a teacher run, for transforms that need one: ``scores(teacher, examples)``
    #: returns one float per example (the teacher's loss), aligned with ``examples``. ``teacher`` is a run
    #: id or the path of a spec whose single run is the teacher. ``None`` when the runner offers no teacher.
    scores: Callable[[str, Examples], list[float]] | None = None
    #: The folder of the spec being run: relative file paths in options are relative to it.
    spec_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class TransformPlugin(Plugin):
    """A dataset transform: maps ``Examples`` to new ``Examples`` (never mutates its input).

    In ``data.transforms`` a transform applies to the splits its ``on`` key names (``"train"``,
    ``"eval"`` or ``"both"``; default: the plugin's ``applies_to``); in ``data.eval_sets.<name>.transforms``
    it applies to that evaluation set. It must be deterministic for a given ``ctx.seed`` and ``ctx.split``.
    Raise ``specrun.errors.DataError`` for a request the data cannot meet (e.g. more examples than exist).
    An empty training set is allowed: the run then evaluates the untrained model.
    """

    #: Where it applies when the spec entry sets no ``on``.
    applies_to: ClassVar[Literal["train", "eval", "both"]] = "train"
    #: The tasks whose examples it maps (``Examples`` are classification's); a spec of another task that
    #: lists it is refused at validate. None: any task.
    tasks: ClassVar[tuple[str, ...] | None] = ("classification",)

    def apply(self, examples: Examples, options: PluginOptions, ctx: TransformContext) -> Examples:
        raise NotImplementedError

    def inputs(self, options: PluginOptions, spec_dir: str | None) -> dict[str, str]:
        """Content hashes of files the options name (e.g. a synonyms list), by option name.

        They join the run's identity, so editing such a file makes the runs that read it new runs
        instead of serving the old results as cached. Raise ``DataError`` for a file that cannot be
        read: ``specrun plan`` and ``apply`` then fail before anything trains.
        """
        return {}


# --- analyses ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecFacts:
    """What an analysis can check its options against when the spec is validated, before anything runs."""

    #: The evaluation sets every run is evaluated on: the primary one first, then ``data.eval_sets``.
    eval_sets: tuple[str, ...]
    #: The swept dotted keys (keys that move together are listed one by one).
    sweep_keys: tuple[str, ...]
    #: Every run's resolved config (``model``, ``data``, ``method``, ``train``, ``seed``).
    configs: tuple[dict[str, Any], ...]

    def key_problem(self, dotted: str) -> str | None:
        """Why ``dotted`` names no config value of any run (None when some run has it)."""
        from specrun.errors import did_you_mean

        for config in self.configs:
            try:
                config_value(config, dotted)
                return None
            except KeyError:
                continue
        return f"no run's config has key {dotted!r}{did_you_mean(dotted, self.sweep_keys)}" + (
            f"; swept keys: {', '.join(self.sweep_keys)}" if self.sweep_keys else ""
        )


#: specrun's own tables and views: no analysis may name a result table so.
RESERVED_TABLES = frozenset(
    {
        "runs",
        "experiment_runs",
        "metrics",
        "predictions",
        "qa_predictions",
        "artifacts",
        "train_examples",
        "example_scores",
        "evaluations",
        "applies",
        "apply_runs",
        "current_runs",
        "run_summary",
        "analyses",
    }
)


def table_prefix(analysis_name: str) -> str:
    """How an analysis's name starts its result tables' names: ``/ . -`` become ``_``."""
    return re.sub(r"[/.-]", "_", analysis_name)


@dataclass
class Figure:
    """One chart or table of a report section, defined by a SQL query over the store.

    ``sql`` may use ``$experiment`` and ``$analysis``; the report substitutes them and prints the query
    under the figure, so a reader can rerun it with ``specrun sql``. ``chart`` turns the query's rows
    (a list of dicts) into an Altair chart; without one the rows are shown as a table.
    """

    title: str
    sql: str
    chart: Callable[[list[dict[str, Any]]], Any] | None = None
    caption: str = ""


class AnalysisContext:
    """What an analysis gets: a read-only connection to the store and the runs it covers.

    ``runs`` are the experiment's completed runs (plus, for analyses that ask, the runs they start
    from); ``left_out`` the ones that are not completed (failed, interrupted, running or never run).

    ``AnalysisContext(connection, experiment, run_ids=[...])`` (or run ids in place of ``runs``) is the
    0.1 form, deprecated: it still works, with a ``SpecrunDeprecationWarning``, and ``runs`` are then
    read from the store on first use.
    """

    def __init__(
        self,
        connection: Any,
        experiment: str,
        runs: list[RunInfo] = (),
        left_out: list[RunInfo] = (),
        analysis: str = "",
        *,
        run_ids: list[str] | None = None,
    ):
        self.connection = connection
        self.experiment = experiment
        self.left_out = list(left_out)
        self.analysis = analysis
        given = list(runs)
        if run_ids is not None or (given and all(isinstance(r, str) for r in given)):
            warnings.warn(
                "AnalysisContext(connection, experiment, run_ids) is the plugin API 0.1 form, deprecated since specrun 0.2 and "
                "removed in 0.4: pass runs=[RunInfo, ...] (specrun.testing.analysis_context(store, experiment) builds a "
                f"context from a store); see {CHANGES_DOC}",
                SpecrunDeprecationWarning,
                stacklevel=2,
            )
            self._run_ids: list[str] | None = [str(r) for r in (run_ids if run_ids is not None else given)]
            self._runs: list[RunInfo] | None = None
        else:
            self._run_ids, self._runs = None, given

    @property
    def runs(self) -> list[RunInfo]:
        if self._runs is None:  # the 0.1 form: run ids only; their details come from the store
            if self.connection is None:
                raise AnalysisError(
                    "this AnalysisContext was given run ids and no store connection: its runs are unknown"
                )
            from specrun.store.analyses import run_infos

            self._runs = run_infos(self.connection, self._run_ids or [])
        return self._runs

    @runs.setter
    def runs(self, value: list[RunInfo]) -> None:
        self._runs, self._run_ids = list(value), None

    @property
    def run_ids(self) -> list[str]:
        if self._runs is None and self._run_ids is not None:
            return list(self._run_ids)
        return [r.run_id for r in self.runs]

    def sql(self, query: str, params: dict[str, Any] | list | None = None):
        """Run a read-only query; returns a polars DataFrame. Parameters are DuckDB's: ``?`` placeholders
        with a list (``ctx.sql("SELECT * FROM runs WHERE run_id IN (SELECT unnest(?))", [ctx.run_ids])``), or
        ``$name`` placeholders with a dict (``ctx.sql("... WHERE experiment = $e", {"e": ctx.experiment})``)."""
        from specrun.store.analyses import query_frame

        return query_frame(self.connection, query, params)

    def final_metric(self, ref: str | MetricRef, runs: list[RunInfo] | None = None) -> dict[str, float]:
        """{run id: value} of a final metric (``accuracy``, ``noisy.f1``, ``cost.train_seconds``) for
        ``runs`` (default: all); raises ``AnalysisError`` when no run has it."""
        from specrun.store.analyses import final_metric

        return final_metric(self.connection, self.runs if runs is None else runs, ref)

    def predictions(self, split: str | None = None, runs: list[RunInfo] | None = None):
        """Per-example predictions on ``split`` (default: each run's primary evaluation set) as a polars
        DataFrame: ``run_id, split, example_id, label, prediction, confidence, loss``."""
        from specrun.store.analyses import predictions

        return predictions(self.connection, self.runs if runs is None else runs, split)

    def qa_predictions(self, split: str | None = None, runs: list[RunInfo] | None = None):
        """Per-question rows of extractive-QA runs on ``split`` (default: each run's primary evaluation set)
        as a polars DataFrame: ``run_id, split, question_id, prediction_text, score, exact_match, f1``."""
        from specrun.store.analyses import qa_predictions

        return qa_predictions(self.connection, self.runs if runs is None else runs, split)


#: The columns of the one table an analysis written against plugin API 0.1 (one that declares no
#: ``tables``) has its results stored in, a row per returned item: ``key`` is the key of the dict ``run``
#: returned, ``item`` the position in its value (a list's items, a DataFrame's rows; 0 for a single
#: value), ``value`` the item as JSON. Deprecated with that form.
LEGACY_RESULT_COLUMNS = {"key": "VARCHAR", "item": "INTEGER", "value": "JSON"}


class AnalysisPlugin(Plugin):
    """An analysis over finished runs: reads the store, writes tidy result tables, draws report figures.

    An analysis that declares no ``tables`` is written against plugin API 0.1: it still runs (with a
    ``SpecrunDeprecationWarning``), and what ``run`` returns is stored as JSON in one table named after
    it, with the columns ``LEGACY_RESULT_COLUMNS``.
    """

    #: The tables ``run`` fills (see ``ResultTable``).
    tables: ClassVar[tuple[ResultTable, ...]] = ()
    #: Whether ``ctx.runs`` also holds the runs the experiment's runs start from (``model.init_from``).
    include_sources: ClassVar[bool] = False

    def check(self, options: PluginOptions, spec: SpecFacts) -> list[tuple[str, str]]:
        """Problems with ``options`` for this spec, as (option name, message); they are reported with the
        spec's file and line before anything trains. Default: none."""
        return []

    def run(self, options: PluginOptions, ctx: AnalysisContext) -> dict[str, Any]:
        """Compute the results: {table name: rows}, rows as a list of dicts or a polars DataFrame with the
        table's columns. Raise ``specrun.errors.AnalysisError`` when the runs cannot answer the question."""
        raise NotImplementedError

    def figures(self, options: PluginOptions) -> list[Figure]:
        """The report section: charts and tables, each defined by SQL over the result tables. Default:
        each result table as a table."""
        return [
            Figure(
                t.name,
                f"SELECT * EXCLUDE (experiment, analysis) FROM {t.name} WHERE experiment = $experiment AND analysis = $analysis",
            )
            for t in self.tables
        ]


# --- tasks ---------------------------------------------------------------------------------------


@dataclass
class TaskContext:
    """What a task's ``encode`` and ``evaluate`` get about the run."""

    tokenizer: Any
    max_length: int
    options: PluginOptions
    #: The dataset's label names (classification; empty for tasks without labels).
    label_names: tuple[str, ...] = ()

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


@dataclass
class TaskEvaluation:
    """One evaluation set's metrics and the prediction rows behind them.

    ``rows`` are columns of the store table the task writes (``TaskPlugin.prediction_table``), one row
    per example, without ``run_id`` and ``split`` (the runner adds those)."""

    metrics: dict[str, float]
    rows: dict[str, list]
    seconds: float = 0.0


class TaskPlugin(Plugin):
    """A task: how examples become model inputs, which ``AutoModelFor...`` head is built, how outputs
    become predictions, which metrics are computed and what a stored prediction row holds.

    ``encode`` returns *features*: an object with ``__len__``, ``lengths`` (a numpy array of token
    counts, one per feature) and ``collate(index, device) -> dict`` of model inputs; the training loop
    batches them, and hands them back to ``loss`` and ``evaluate``. A feature may be an example
    (classification) or a window of one (extractive QA's overflowing windows).
    """

    #: The evaluation metrics, the first one the headline (``core.tasks.headline_metric``: it picks the best
    #: evaluation when training has no early stopping, and the app's efficiency view draws it by default);
    #: ``loss`` and ``n_examples`` should be among them.
    metrics: ClassVar[tuple[str, ...]] = ()
    #: The running training metric recorded next to the training loss (split ``train``).
    train_metric: ClassVar[str] = "accuracy"
    #: The store table its prediction rows go to: ``predictions`` (classification-shaped) or ``qa_predictions``.
    prediction_table: ClassVar[str] = "predictions"
    #: The ``transformers`` auto class of its head, for messages and docs.
    auto_model: ClassVar[str] = ""
    #: Built-in plugins it cannot serve, by kind then name, with the reason (refused at validate/plan).
    refused: ClassVar[dict[str, dict[str, str]]] = {}

    def refuse(self, kind: str, plugin: Plugin, options: PluginOptions) -> str | None:
        """Why this task cannot use ``plugin`` (a method, transform or analysis), or None when it can.
        Default: ``refused``, then the plugin's own ``tasks`` (the task names it serves, if it says)."""
        reason = self.refused.get(kind, {}).get(plugin.name)
        if reason:
            return reason
        serves = getattr(plugin, "tasks", None)
        if serves is not None and self.name not in serves:
            return f"it serves the tasks {', '.join(serves)} only"
        return None

    def examples_problem(self, examples: Any) -> str | None:
        """Why a dataset's split (``Examples``, ``QAExamples``...) is not this task's kind of example, or None."""
        return None

    def check_examples(self, examples: Any, label_names: tuple[str, ...], what: str, key: str) -> None:
        """Raise ``specrun.errors.DataError`` (with ``key``) when the training examples cannot train this
        task (e.g. a single class). ``what`` describes them for the message. Default: anything goes."""

    def load_model(self, ctx: BuildContext, **kwargs: Any) -> torch.nn.Module:
        """The pretrained model at ``ctx.model_path`` with a fresh head for this task."""
        raise NotImplementedError

    def encode(self, examples: Any, ctx: TaskContext, training: bool) -> Any:
        """Tokenized features of ``examples`` (see the class docstring). ``training``: features for the
        training loop (a task may drop or count what cannot train, never silently: see ``skipped``)."""
        raise NotImplementedError

    def skipped(self, features: Any) -> dict[str, int]:
        """{reason: count} of the examples ``encode`` left out of ``features`` (recorded on the run)."""
        return {}

    def loss(
        self,
        model: torch.nn.Module,
        features: Any,
        index: Any,
        batch: dict,
        ctx: TaskContext,
        precision: str,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss, number right as a tensor, for the running ``train_metric``) of one training batch:
        ``batch`` is ``features.collate(index, device)``, ``ctx.options`` the task's options; run the forward pass under
        ``specrun.runner.modeling.autocast(precision, device)``."""
        raise NotImplementedError

    def evaluate(
        self,
        model: torch.nn.Module,
        features: Any,
        ctx: TaskContext,
        batch_size: int,
        precision: str,
        device: torch.device,
    ) -> TaskEvaluation:
        """Metrics (``metrics``) and prediction rows of one evaluation set."""
        raise NotImplementedError


KIND_BASES: dict[str, type[Plugin]] = {
    "method": MethodPlugin,
    "dataset": DatasetSource,
    "model_source": ModelSource,
    "transform": TransformPlugin,
    "analysis": AnalysisPlugin,
    "task": TaskPlugin,
}
