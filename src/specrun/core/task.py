"""The run boundary: what one run is given (``RunTask``) and what it gives back (``RunRecord``).

A task is self-contained: the run's typed config, where its data comes from, the paths of the weights it
starts from and of the teachers it is scored by (with the scores the store already holds). A record is
everything the run produced. Both pickle, so an executor may run the task in this process, in a worker
process or on another machine (``specrun.executors``); only the driver (``specrun.driver``) reads and
writes the store, before a task and after its record.

This module imports neither torch nor the store: a driver builds tasks without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from specrun.spec.schema import RunSettings


@dataclass
class MetricRow:
    """One value of the ``metrics`` table: ``final`` marks the run's end results (one per split and
    name); the others are its learning curve."""

    step: int
    epoch: float | None
    split: str
    name: str
    value: float
    final: bool = False


@dataclass
class ArtifactFile:
    """A file a run wrote (a row of the ``artifacts`` table): ``path`` where it lies on the driver's side
    once recorded."""

    kind: str
    path: str
    sha256: str
    bytes: int


@dataclass
class TeacherSource:
    """A teacher run a transform scores examples with (``teacher = ...``): its config and weights, and
    the per-example losses the store already holds ({(example_id, text_hash): loss})."""

    run_id: str
    config: dict[str, Any]
    weights: str
    known: dict[tuple[str, str], float] = field(default_factory=dict, repr=False)


@dataclass
class ScoreRow:
    """A teacher's loss on one example, computed by a run and stored by the driver (``example_scores``)."""

    teacher_run_id: str
    example_id: str
    text_hash: str
    label: int
    loss: float


@dataclass
class EvalSetDefinition:
    """A named evaluation set's definition and fingerprint, recorded with its results."""

    definition: dict[str, Any]
    fingerprint: str


@dataclass
class RunTask:
    """Everything one run needs. ``kind`` 'train': train and evaluate (resuming from the run's
    checkpoint in ``artifacts_dir`` when ``resume``). 'evaluate': a completed run's stored ``weights``
    evaluated on the named evaluation sets ``evaluate_sets`` it lacks, without training."""

    run_id: str
    experiment: str
    label: str
    settings: RunSettings
    #: The run's config as planned (a plain tree): saved beside its weights in ``run.json``.
    config: dict[str, Any]
    spec_dir: str | None
    primary_eval: str
    eval_sets: dict[str, EvalSetDefinition]
    artifacts_dir: str
    kind: Literal["train", "evaluate"] = "train"
    resume: bool = True
    #: Weights file of the run ``model.init_from`` names (resolved by the driver).
    init_weights: str | None = None
    teachers: dict[str, TeacherSource] = field(default_factory=dict, repr=False)
    #: The data folder (``SPECRUN_DATA_DIR``) as the driver sees it; a worker may have its own.
    data_dir: str | None = None
    #: Return artifact files' bytes in the record (a worker that does not share the driver's disk).
    return_artifacts: bool = False
    #: Torch threads for this run (None: leave the process's setting).
    threads: int | None = None
    #: For kind 'evaluate': the stored weights, the names of the sets to add, the step they were saved at.
    weights: str | None = None
    evaluate_sets: list[str] = field(default_factory=list)
    step: int = 0
    #: Live tracking: report the training loss every this many optimizer steps, and each evaluation, as
    #: the run goes (0: neither; the driver sets it when a plugin or tracker listens). Not part of the identity.
    track_every: int = 0


RecordStatus = Literal["completed", "evaluated", "failed", "interrupted", "pruned"]


class StopRun(Exception):
    """Raised by a run's live callback (``on_metrics``) after an evaluation to stop training there: the
    run's record is 'pruned' (a search's pruner), with the learning curve so far. The training loop fills
    in ``rows``, ``step`` and ``train_seconds`` as it lets the exception through."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
        self.rows: list[MetricRow] = []
        self.step = 0
        self.train_seconds = 0.0


@dataclass
class RunRecord:
    """Everything one run produced; the driver writes it to the store in one transaction."""

    run_id: str
    status: RecordStatus = "completed"
    #: For a failed or interrupted run: the error as stored (with a traceback for a bug), and in one line.
    error: str | None = None
    message: str | None = None
    metrics: list[MetricRow] = field(default_factory=list)
    #: Columns of the run's prediction table (``prediction_table``, as the run's task says): ``predictions``
    #: (split, example_id, label, prediction, confidence, loss) or ``qa_predictions`` (split, question_id,
    #: prediction_text, score, exact_match, f1, answers).
    predictions: dict[str, list] = field(default_factory=dict, repr=False)
    prediction_table: str = "predictions"
    artifacts: list[ArtifactFile] = field(default_factory=list)
    #: The training examples in training order: (ids, labels); a label is None for tasks without labels.
    train_examples: tuple[list[str], list[int | None]] = ((), ())
    train_seconds: float | None = None
    evaluations: list[tuple[str, EvalSetDefinition]] = field(default_factory=list)
    #: What ``model.init_from`` loaded (a ``runner.artifacts.Transfer``), for runs that start from another.
    transfer: Any = None
    #: The step training resumed from (a checkpoint of an interrupted attempt); None: trained from the start.
    resumed_from: int | None = None
    #: Optimizer steps skipped for inf/NaN gradients (fp16's gradient scaler); None when not counted.
    skipped_steps: int | None = None
    teacher_scores: list[ScoreRow] = field(default_factory=list, repr=False)
    #: Where and how it ran: host, process, threads, library versions (merged into ``runs.environment``).
    environment: dict[str, Any] = field(default_factory=dict)
    #: What its ``peak_memory_mb`` measures (``runner.costs.MEMORY_KINDS``; ``runs.memory_kind``).
    memory_kind: str | None = None
    #: The files of the run's artifact folder by name, when the task asked for them back
    #: (``return_artifacts``): the driver writes them into its own artifact folder.
    files: dict[str, bytes] = field(default_factory=dict, repr=False)
    #: For a 'pruned' run: the step its training stopped at (its metrics are the learning curve so far).
    pruned_step: int | None = None

    def final(self) -> dict[tuple[str, str], float]:
        """{(split, name): value} of the final metrics."""
        return {(m.split, m.name): m.value for m in self.metrics if m.final}
