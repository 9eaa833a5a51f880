"""The plugin objects that hooks register. Subclass one, set ``name`` and ``Options``, implement its methods.

``Options`` is a pydantic model with ``extra="forbid"`` (subclass ``PluginOptions``): the spec's
section for the plugin is validated against it, so a typo fails before anything trains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch

    from specrun.examples import Dataset, Examples


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

    def load_backbone(self, **kwargs: Any) -> torch.nn.Module:
        """Load the pretrained model with a fresh classification head (``from_pretrained`` kwargs pass through)."""
        from specrun.runner.modeling import load_classifier

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

    def module_names(self) -> list[str]:
        """The names of the classifier's modules (``bert.encoder.layer.0.attention.self.query``, ...),
        from a copy built on the meta device: no weights are loaded."""
        from specrun.runner.modeling import module_names

        return module_names(self.path)


class MethodPlugin(Plugin):
    """A fine-tuning method: builds the trainable model from a pretrained backbone.

    The runner saves a run's trained weights as the parameters that require grad after ``build``,
    and reloads a run by calling ``build`` again with the same options and loading them back: so
    ``build`` must produce the same module structure every time.
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

    def prefers_frozen_bf16(self, options: PluginOptions) -> bool:
        """Whether frozen weights may be stored in bf16 under bf16 precision (saves re-casting each step)."""
        return True


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


class ModelSource(Plugin):
    """Resolves a model name into a path or hub id that ``from_pretrained`` can load."""

    #: Sources are asked in ascending priority; the first non-None answer wins.
    priority: ClassVar[int] = 100

    def resolve(self, model_name: str) -> str | None:
        raise NotImplementedError


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


@dataclass
class AnalysisContext:
    """What an analysis gets: a read-only connection to the store and the experiment's run ids."""

    connection: Any
    experiment: str
    run_ids: list[str]


class AnalysisPlugin(Plugin):
    """An analysis over finished runs, e.g. bootstrap confidence intervals or paired tests."""

    def run(self, options: PluginOptions, ctx: AnalysisContext) -> dict[str, Any]:
        raise NotImplementedError


KIND_BASES: dict[str, type[Plugin]] = {
    "method": MethodPlugin,
    "dataset": DatasetSource,
    "model_source": ModelSource,
    "transform": TransformPlugin,
    "analysis": AnalysisPlugin,
}
