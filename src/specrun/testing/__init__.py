"""specrun's test kit for plugin authors, and the one specrun's own tests use.

Installed with specrun as a pytest plugin (entry point ``pytest11``), so these fixtures need no import:

- ``tiny_model_dir`` (session): a tiny random BERT folder; ``tuned_model_dir`` (session): the same
  after a short fine-tuning, for method contracts; ``toy_data``: ``train.tsv`` and ``dev.tsv`` of a
  learnable two-class task;
- ``specrun_registry``: the built-in plugins plus the modules named by the ``specrun_plugins`` ini
  option and ``@pytest.mark.specrun_plugins(module, ...)``, installed as the process registry; a
  malformed or colliding plugin fails the test instead of being skipped;
- ``run_spec(toml_text, *args)``: ``specrun apply`` on a spec, in-process, in seconds; returns a
  ``SpecResult`` with the experiment's ``run_summary`` rows (``.runs``) and ``.sql(query)``;
- ``method_contract(name, options, trains=...)``: ``check_method`` on the tuned tiny model;
- ``specrun_cli(*args)``: any ``specrun`` command in-process: (exit code, stdout, stderr);
- ``specrun_env``: what each of them uses: its own store and artifacts under ``tmp_path``, no
  installed plugins leaking in, offline.

The contracts themselves are functions: ``check_method``, ``check_transform``, ``check_dataset``,
``check_analysis``. An analysis is tested on a small store made by hand, without training:
``analysis_store(path, [HandRun(...), ...])``, and ``analysis_context(store)`` for calling ``run`` directly.
A task passes ``check_task`` (``specrun.testing.tasks``; ``specrun.testing.qa`` writes a toy SQuAD-format task).
"""

from specrun.testing.analysis import HandRun, analysis_context, analysis_store, check_analysis, spec_facts
from specrun.testing.contracts import (
    MethodReport,
    check_dataset,
    check_method,
    check_transform,
    is_head,
    sample_examples,
    transform_context,
)
from specrun.testing.registry import registry_with
from specrun.testing.tasks import TaskReport, check_task
from specrun.testing.toy import (
    SpecResult,
    make_tiny_model,
    make_tuned_model,
    run_cli,
    run_spec,
    single_thread,
    toy_rows,
    toy_spec,
    write_toy_data,
)

__all__ = [
    "HandRun",
    "MethodReport",
    "SpecResult",
    "TaskReport",
    "analysis_context",
    "analysis_store",
    "check_analysis",
    "check_dataset",
    "check_method",
    "check_task",
    "check_transform",
    "is_head",
    "make_tiny_model",
    "make_tuned_model",
    "registry_with",
    "run_cli",
    "run_spec",
    "sample_examples",
    "single_thread",
    "spec_facts",
    "toy_rows",
    "toy_spec",
    "transform_context",
    "write_toy_data",
]
