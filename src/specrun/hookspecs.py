"""The hooks a specrun plugin can implement. This module is the reference for plugin authors.

Every hook receives a ``register`` callback instead of returning a list: call it once per plugin
object you provide. Built-in plugins (``specrun.plugins.*``) use these same hooks, so each of them is
a working example. Third-party plugins are modules exposed through the ``specrun`` entry-point group::

    [project.entry-points.specrun]
    my_plugin = "my_package.specrun_plugin"

and implement hooks with ``@specrun.hookimpl``. Plugin objects are described in
``specrun.plugins.api`` (``MethodPlugin``, ``DatasetSource``, ``ModelSource``, ``TransformPlugin``,
``AnalysisPlugin``, ``TaskPlugin``). Names must be unique across all installed plugins: a plugin whose name is taken
(by a built-in or an earlier plugin), that is malformed, or whose hook raises is skipped with a warning
naming both origins, and the rest of specrun keeps working (``specrun plugins --check`` fails on it).
``register_commands`` adds commands to the command line rather than plugins to the registry;
``on_run_start`` and ``on_run_end`` are told of each run ``specrun apply`` executes (loggers, trackers);
``on_train_window`` and ``on_evaluation`` of its training as it goes (live tracking).
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("specrun")
hookimpl = pluggy.HookimplMarker("specrun")

#: The entry-point group third-party plugins are found in, and the variable that turns their loading off.
ENTRY_POINT_GROUP = "specrun"
AUTOLOAD_ENV = "SPECRUN_DISABLE_PLUGIN_AUTOLOAD"


def entry_point_plugins_installed() -> bool:
    """Whether any entry-point plugin would load (a scan of installed packages, no plugin imported)."""
    import importlib.metadata
    import os

    return not os.environ.get(AUTOLOAD_ENV) and bool(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


@hookspec
def register_methods(register):
    """Register fine-tuning methods: call ``register(method)`` with ``MethodPlugin`` instances.

    Called once when the plugin registry is built. A method turns a pretrained backbone into the model
    that trains (e.g. wraps it with LoRA adapters, freezes layers) and validates its own options.
    """


@hookspec
def register_datasets(register):
    """Register dataset sources: call ``register(source)`` with ``DatasetSource`` instances.

    Called once when the plugin registry is built. A source is looked up by the spec's
    ``data.dataset`` name and loads labelled splits as ``specrun.examples.Dataset``.
    """


@hookspec
def register_model_sources(register):
    """Register model sources: call ``register(source)`` with ``ModelSource`` instances.

    Called once when the plugin registry is built. Sources are asked in ascending ``priority`` to
    resolve the spec's ``model.name`` into something ``from_pretrained`` can load; the first that
    answers (not ``None``) wins.
    """


@hookspec
def register_transforms(register):
    """Register dataset transforms: call ``register(transform)`` with ``TransformPlugin`` instances.

    Called once when the plugin registry is built. Transforms listed in ``data.transforms`` are
    applied in order to the splits they declare (``applies_to``), deterministically under the run's seed.
    """


@hookspec
def register_analyses(register):
    """Register analyses: call ``register(analysis)`` with ``AnalysisPlugin`` instances.

    Called once when the plugin registry is built. Analyses listed in a spec's ``[[analyses]]`` run over
    the experiment's stored runs at the end of ``specrun apply`` and on ``specrun analyze``: each writes
    the result tables it declares (``AnalysisPlugin.tables``) and contributes a section of figures,
    each defined by SQL over those tables, to ``specrun report``.
    """


@hookspec
def register_tasks(register):
    """Register tasks: call ``register(task)`` with ``TaskPlugin`` instances.

    Called once when the plugin registry is built. A spec picks one with ``[task] name = "..."``
    (default ``classification``). The task decides how examples become model inputs, which
    ``AutoModelFor...`` head is built, how outputs become predictions, which metrics are computed and
    what a stored prediction row holds; it refuses the methods, transforms and analyses it cannot serve.
    """


@hookspec
def register_commands(app):
    """Add commands to the ``specrun`` command line: ``app`` is its ``typer.Typer``.

    Called once at start-up, before the command line is read, so keep it cheap (import heavy libraries
    inside the commands). Decorate functions with ``@app.command()``, or add a group with
    ``app.add_typer(sub, name=...)``. A command whose name specrun or an earlier plugin already uses
    is skipped with a warning; so are the commands of a hook that raises. Raise
    ``specrun.errors.SpecrunError`` subclasses (``UsageError``, ``PluginError``...) in a command for a
    mistake the user can fix: the CLI prints the message alone and exits with code 2.
    """


@hookspec
def on_run_start(task):
    """A run is about to execute: ``task`` is its ``specrun.runner.task.RunTask``.

    Called by ``specrun apply`` in its own process, once the run is claimed in the store and just before
    the task goes to the executor (whichever: local or Ray). ``task.kind`` is ``"train"`` (train and
    evaluate), or ``"evaluate"`` (a completed run evaluated on evaluation sets added to its spec);
    ``task.run_id``, ``task.experiment``, ``task.label`` (its sweep point) and ``task.config`` (the
    resolved config tree) say which run it is. Return nothing. For loggers and trackers: open a
    tracking run here. An exception is reported as a warning naming the plugin; the run goes on.
    """


@hookspec
def on_run_end(task, record):
    """A run has finished: ``record`` is the ``specrun.runner.task.RunRecord`` it produced for ``task``.

    Called by ``specrun apply`` in its own process after the record is written to the store, for every
    task ``on_run_start`` saw: ``record.status`` is ``completed``, ``evaluated`` (an ``evaluate`` task),
    ``failed`` (``record.message`` says why) or ``interrupted`` (Ctrl-C or SIGTERM: then the record
    carries nothing else). ``record.metrics`` holds ``MetricRow``s (``step``, ``epoch``, ``split``,
    ``name``, ``value``, ``final``: the learning curve, then the final metrics and costs),
    ``record.artifacts`` the saved files (absolute paths), ``record.environment`` where it ran. Return
    nothing; do not change the record. An exception is reported as a warning naming the plugin; the
    run's outcome stays what it was.
    """


@hookspec
def on_train_window(task, step, metrics):
    """A run is training: ``metrics`` are its ``MetricRow``s over the last window of optimizer steps.

    Called by ``specrun apply`` in its own process (on the Ray executor, forwarded from the worker to the
    driver), between ``on_run_start`` and ``on_run_end``, every ``tracking.every`` steps (default 10) of
    each training run: ``step`` is the optimizer step the window ends at, ``metrics`` holds
    ``train``/``loss`` (the mean training loss over the window's examples, when there were any) and
    ``train``/``learning_rate``, each with that ``step`` and ``epoch``. For live trackers; these rows are
    not stored (the evaluations' are). Return nothing; an exception is a warning naming the plugin and
    the run goes on. Only runs a plugin or tracker listens to report windows (``task.track_every``).
    """


@hookspec
def on_evaluation(task, step, metrics):
    """A run has evaluated its primary evaluation set during training: the metrics so far.

    Called by ``specrun apply`` in its own process (on Ray: forwarded from the worker), after each
    evaluation (``train.eval_every``) of a training run, with the rows the run records for it: ``train``
    ``loss``/``accuracy``/``learning_rate``/``seconds`` (the training view since the last evaluation) and
    the primary evaluation set's metrics (``accuracy``, ``f1``, ``loss``...), all at ``step``. The same
    rows reach ``on_run_end`` in ``record.metrics``. Return nothing; an exception is a warning naming the
    plugin and the run goes on.
    """
