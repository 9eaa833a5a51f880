"""The spec's pydantic models. Every section forbids unknown keys; plugin sections are checked against
the plugin's own ``Options`` model in ``specrun.spec.load``."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

#: Seeds feed numpy's legacy seeding (32-bit unsigned integers) and the store's runs.seed (a signed
#: 32-bit INTEGER): the smaller range of the two.
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]

#: The metrics evaluations produce (``runner.evaluate``; each task its own: classification accuracy, f1,
#: f1_macro, loss; extractive_qa f1, exact_match, loss): what early stopping can watch.
EVAL_METRICS = ("accuracy", "f1", "f1_macro", "loss", "exact_match")


#: Long runs save a checkpoint this often unless ``train.checkpoint_every`` says otherwise; a run
#: shorter than this never writes one.
DEFAULT_CHECKPOINT_EVERY = "10m"
#: What an experiment's name (and an analysis entry's id) may be: letters, digits, _ . -, not starting with a mark.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h)")


def duration_seconds(text: str) -> float | None:
    """Seconds in a duration such as ``"90s"``, ``"10m"`` or ``"1.5h"``; None if ``text`` is not one (or is 0)."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        return None
    seconds = float(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]
    return seconds or None


class Section(BaseModel):
    # TOML has inf and nan literals; a spec value never means them (an infinite learning rate trains to NaN)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PluginRef(BaseModel):
    """``{name = "...", <the plugin's own options>}``: options are validated by the plugin's model."""

    model_config = ConfigDict(extra="allow")
    name: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Experiment(Section):
    name: str = Field(pattern=NAME_PATTERN, description="experiment name (letters, digits, _ . -)")
    description: str = ""
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)


class ModelSpec(Section):
    name: str = Field(DEFAULT_MODEL, min_length=1)
    max_length: int = Field(128, ge=8, le=4096)
    init_from: str | None = Field(
        None,
        description='start from another run\'s trained weights (head excluded): a run id, or a spec path (.toml, relative to this spec) whose single run is trained first; "" = the pretrained model',
    )

    init_partial: bool = Field(
        False,
        description="allow an init_from source of which fewer than half the trained tensors (head excluded) find a place in this model",
    )

    @field_validator("init_from")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None  # lets a sweep compare a transfer with training from the pretrained model

    @model_serializer(mode="wrap")
    def _omit_default_partial(self, handler):
        # Specs without the key resolve to the same config, and so the same run ids, as before it existed.
        data = handler(self)
        if not self.init_partial:
            data.pop("init_partial", None)
        return data


class EvalSet(Section):
    """A named evaluation set: a split of the dataset with optional eval-time transforms."""

    split: str | None = None
    transforms: list[PluginRef] = Field(default_factory=list)
    max_examples: int | None = Field(None, ge=1)


class DataSpec(Section):
    dataset: str
    options: dict[str, Any] = Field(default_factory=dict)
    train_split: str = "train"
    eval_split: str | None = Field(None, description="default: the dataset's evaluation split")
    max_train_examples: int | None = Field(None, ge=1, description="a seeded random subsample of the training split")
    max_eval_examples: int | None = Field(None, ge=1, description="the first N examples of the evaluation split")
    transforms: list[PluginRef] = Field(default_factory=list)
    eval_sets: dict[str, EvalSet] = Field(default_factory=dict, description="extra named evaluation sets")


class EarlyStopping(Section):
    metric: Literal[EVAL_METRICS] = "accuracy"
    patience: int = Field(2, ge=1)
    mode: Literal["max", "min"] = "max"


class TrainSpec(Section):
    #: finite is not enough: epochs × steps per epoch must be a number of steps (1e308 overflowed when the run started)
    epochs: float = Field(3, gt=0, le=1_000_000)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    min_steps: int = Field(0, ge=0, description="train at least this many steps, however small the data")
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    scheduler: Literal["linear", "constant", "cosine", "polynomial"] = "linear"
    power: float | None = Field(
        None, gt=0, description='the polynomial schedule\'s power (default 1.0); only with scheduler = "polynomial"'
    )
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    max_grad_norm: float | None = Field(1.0, gt=0)
    group_by_length: bool = True
    eval_every: Literal["epoch"] | int = Field("epoch", description="'epoch' or a number of steps")
    early_stopping: EarlyStopping | None = None
    device: str = Field("auto", description="'auto' (a GPU if there is one), 'cpu', 'cuda' or 'cuda:N' (GPU number N)")
    select_on: str | None = Field(
        None,
        description="the split (or slice) early stopping and best-weight restore evaluate; default: a selection set carved "
        "from the training split (select_fraction). Never the reported split, unless allow_selection_on_reported",
    )
    select_fraction: float = Field(
        0.1,
        gt=0,
        le=0.5,
        description="the carved selection set: this fraction of the run's training examples (stratified, at most select_max_examples)",
    )
    select_max_examples: int = Field(
        2000, ge=1, description="the carved selection set holds at most this many examples"
    )
    allow_selection_on_reported: bool = Field(
        False,
        description="let early stopping (or a search's objective) select on the reported evaluation split (optimistic numbers: the report marks them selected-on)",
    )
    evaluate_selection: bool = Field(
        False,
        description="evaluate the selection set at every evaluation although early stopping is off; a [search] sets it "
        "on its trials (its objective and pruner read split 'selection')",
    )
    cache_frozen: bool = Field(
        False,
        description="compute the frozen backbone's output once per example, in inference mode (no dropout in the "
        "frozen part), keep it in specrun's cache, and train the head on it: for runs that train only what sits "
        "above a frozen backbone (head_only, freeze of every layer, lora/qlora with train = 'head'); classification",
    )
    checkpoint_every: int | str = Field(
        DEFAULT_CHECKPOINT_EVERY,
        description="save a resumable checkpoint every N steps or every duration ('90s', '10m', '1h'); 'off' for none. "
        "Not part of a run's identity",
    )

    @field_validator("eval_every", mode="before")
    @classmethod
    def _eval_every(cls, value: Any) -> Any:
        # one message instead of one per member of the union
        if value == "epoch" or (type(value) is int and value >= 1):
            return value
        raise ValueError(f'must be "epoch" or a number of steps (1 or more), not {value!r}')

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, value: Any) -> Any:
        if value in ("auto", "cpu", "cuda") or (isinstance(value, str) and re.fullmatch(r"cuda:\d+", value)):
            return value
        raise ValueError(
            f"Input should be 'auto', 'cpu', 'cuda' or 'cuda:N' (N: a GPU's number, e.g. 'cuda:1'), not {value!r}"
        )

    @field_validator("checkpoint_every", mode="before")
    @classmethod
    def _checkpoint_every(cls, value: Any) -> Any:
        if (
            (type(value) is int and value >= 1)
            or value == "off"
            or (isinstance(value, str) and duration_seconds(value))
        ):
            return value
        raise ValueError(
            f'must be a number of steps (1 or more), a duration such as "90s", "10m" or "1h", or "off"; not {value!r}'
        )

    @model_serializer(mode="wrap")
    def _omit_new_defaults(self, handler):
        # Keys added after run ids existed stay out of the config tree (and so of run ids) where they
        # change nothing: ``power`` unless given, the selection keys unless early stopping selects. Runs
        # that early-stop get new ids: they select on other examples than before these keys existed.
        data = handler(self)
        if self.power is None:
            data.pop("power", None)
        if not self.cache_frozen:
            data.pop("cache_frozen", None)
        if not self.evaluate_selection:  # added after the other selection keys: runs that early-stop keep their ids
            data.pop("evaluate_selection", None)
        if self.early_stopping is None and all(
            getattr(self, k) == TrainSpec.model_fields[k].default for k in SELECTION_KEYS
        ):
            for key in SELECTION_KEYS:
                data.pop(key, None)
        return data

    def selects(self) -> bool:
        """Whether the run evaluates a selection set: to pick its weights (early stopping, with its
        best-weight restore), or for a search to pick configurations (``evaluate_selection``)."""
        return self.early_stopping is not None or self.evaluate_selection


#: The train keys that say which examples early stopping (or a search) selects on (see ``TrainSpec.select_on``).
SELECTION_KEYS = (
    "select_on",
    "select_fraction",
    "select_max_examples",
    "allow_selection_on_reported",
    "evaluate_selection",
)


def selection_split(train: dict, primary: str) -> str:
    """The split (``metrics.split``) a run's selection metrics are stored under, from its config's ``train``
    section: 'selection' (a set carved from training, or ``select_on``), or the primary evaluation set
    ``primary`` when the run selects on it (``allow_selection_on_reported`` without ``select_on``) or does
    not evaluate a selection set at all (no early stopping, no ``evaluate_selection``: a search's trial
    run before issue 24 gave its trials a selection set)."""
    if not (train.get("early_stopping") or train.get("evaluate_selection")):
        return primary
    if train.get("allow_selection_on_reported") and not train.get("select_on"):
        return primary
    return "selection"


class ReportSpec(Section):
    path: str | None = Field(
        None, description="write the report here at the end of every apply (relative to the current directory)"
    )
    title: str | None = Field(None, description="the report's title (default: 'specrun report: <experiment>')")
    sections: list[str] | None = Field(
        None, description="the analyses to show, by id, in this order (default: all, as listed)"
    )
    headline: str | None = Field(
        None,
        description="the analysis (by id) that answers the study's question: the report opens with its table and chart, before the runs and the other analyses",
    )
    compare: list[str] = Field(default_factory=list, description="other experiments in the store shown after this one")
    png: str | None = Field(None, description="also export every chart as PNG and SVG into this folder")


class Constraints(Section):
    """Limits every run must respect, checked by ``plan`` and ``apply`` before anything trains."""

    max_trainable_params: int | None = Field(
        None, ge=1, description="at most this many trainable parameters per run (the model is built to count them)"
    )
    on_violation: Literal["error", "skip"] = Field(
        "error", description="'error': refuse the spec; 'skip': leave the runs over budget out"
    )


class SearchParam(Section):
    """One key of a search space: a float (uniform, or log-uniform with ``log``), an int (with ``step``,
    or ``log``) or a categorical (``choices``)."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical needs choices = [...] (one or more values)")
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError("a categorical takes choices only (no low, high, log or step)")
            return self
        if self.choices is not None:
            raise ValueError(f'choices go with type = "categorical", not {self.type!r}')
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} needs low and high")
        if self.low > self.high or (self.low == self.high and self.type == "float"):
            raise ValueError(f"empty range: low {self.low:g} is not below high {self.high:g}")
        if self.type == "int" and (
            self.low != int(self.low)
            or self.high != int(self.high)
            or (self.step is not None and self.step != int(self.step))
        ):
            raise ValueError("an int's low, high and step must be whole numbers")
        if self.log and self.low <= 0:
            raise ValueError(f"log = true needs low above 0 (the log of {self.low:g} is undefined)")
        if self.log and self.step is not None:
            raise ValueError("give step or log = true, not both")
        return self


class SearchSpec(Section):
    """An adaptive search (Optuna) over a space of keys: each trial a configuration, run over the seeds."""

    space: dict[str, SearchParam] = Field(min_length=1, description="dotted key -> distribution")
    metric: Literal[EVAL_METRICS] = Field(
        "accuracy",
        description="the objective: this metric on the selection set (split 'selection': carved from the training split, "
        "or train.select_on), mean over the seeds",
    )
    direction: Literal["maximize", "minimize"] = "maximize"
    n_trials: int = Field(ge=1, le=100_000)
    sampler: Literal["random", "tpe", "qmc", "cmaes"] = "tpe"
    seed: int = Field(0, ge=0, description="the sampler's seed: the same seed, the same suggestions")
    pruner: Literal["none", "median", "successive_halving", "hyperband"] = "none"
    parallel: int = Field(
        1,
        ge=1,
        le=1000,
        description="trials in flight at once: asked together, trained together (--executor ray runs them side by "
        "side), told in trial order once all have finished. The suggestions depend on it, never on the executor "
        "or on which trial finished first",
    )


#: The built-in trackers ``[tracking] trackers`` and ``apply --track`` may name (``specrun.tracking``).
TRACKERS = ("mlflow", "tensorboard")


class TrackingSpec(Section):
    """Live experiment tracking: never part of a run's identity."""

    trackers: list[Literal[TRACKERS]] = Field(
        default_factory=list, description="built-in trackers to log every run to (each an extra)"
    )
    every: int = Field(10, ge=1, description="report the training loss to trackers and plugins every N optimizer steps")
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<store folder>/mlflow.db)"
    )
    tensorboard_dir: str | None = Field(
        None, description="TensorBoard event folder (default: <store folder>/tensorboard)"
    )


class Spec(Section):
    experiment: Experiment
    task: PluginRef | None = Field(
        None, description='the task: [task] name = "extractive_qa" (default: classification)'
    )
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec
    method: PluginRef
    train: TrainSpec = Field(default_factory=TrainSpec)
    sweep: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(
        default_factory=dict, description="dotted key -> values (grid)"
    )
    analyses: list[PluginRef] = Field(default_factory=list)
    stages: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='runs this spec\'s runs start from (model.init_from = "stage:NAME"): tables merged over this spec',
    )
    constraints: Constraints | None = None
    report: ReportSpec | None = None
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    search: SearchSpec | None = None


#: The sections that make up one run's identity (the rest describes the experiment as a whole).
RUN_SECTIONS = ("model", "data", "method", "train")


class RunSettings(BaseModel):
    """One run's resolved config, typed: what the runner reads (``config.train.learning_rate``, not
    ``config["train"]["learning_rate"]``). Built from the planned run's config tree, which stays the
    source of its identity (run ids hash that tree)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: ModelSpec
    data: DataSpec
    method: PluginRef
    train: TrainSpec
    seed: Seed
    #: Absent for classification (the default), so that configs written before tasks keep their ids.
    task: PluginRef | None = None

    @classmethod
    def of(cls, config: dict[str, Any]) -> RunSettings:
        return cls.model_validate(config)

    def method_options(self) -> dict[str, Any]:
        """The method's options as written (its plugin's ``Options`` validates them)."""
        return self.method.options()
