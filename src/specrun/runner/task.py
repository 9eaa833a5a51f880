"""The run boundary's types, kept importable here: they live in ``specrun.core.task`` (below the runner,
the executors, the driver and the store, which all use them). Plugins' ``before_run``/``after_run`` hooks
get these objects."""

from specrun.core.task import (  # noqa: F401  (re-exported: the documented path of RunTask and RunRecord)
    ArtifactFile,
    EvalSetDefinition,
    MetricRow,
    RecordStatus,
    RunRecord,
    RunTask,
    ScoreRow,
    TeacherSource,
)
