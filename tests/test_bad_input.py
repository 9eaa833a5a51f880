"""The adversarial suite: every bad input gets one clean, located message and a non-zero exit code, never
a traceback, and the store is never harmed.

One case per row of a table: what the user runs, the exit code, what stderr must say (``{spec}:LINE: KEY``
where there is one) and what becomes of the store: ``none`` (there was none, and none is created) or
``template`` (a copy of a store holding one completed run, whose bytes must not change). Most rows run
the CLI in-process; the rows that need another process (locks, a read-only folder, a file size limit,
signals, concurrent applies) are at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest
from conftest import run_cli, toy_rows

BASE = """\
[experiment]
name = "bad"
seeds = [0]

[model]
name = "{model}"
max_length = 32

[data]
dataset = "local"
eval_split = "validation"
[data.options]
files = { train = "{train}", validation = "{dev}" }

[method]
name = "lora"
rank = 4

[train]
batch_size = 16
precision = "fp32"
max_steps = 2
"""
# lines of BASE that cases point at
L_SEEDS, L_MODEL, L_MAXLEN, L_EVAL_SPLIT, L_FILES, L_METHOD, L_RANK, L_PRECISION = 3, 6, 7, 11, 13, 16, 17, 21
L_APPEND = 23  # the first line of text a case appends (inside [train] unless it opens a table)

ROWS = toy_rows(40, 1)


def tsv(rows=ROWS, header: str = "text\tlabel") -> str:
    return "\n".join([header] + [f"{t}\t{y}" for t, y in rows]) + "\n"


def csv_text(rows=ROWS) -> str:
    return "\n".join(["text,label"] + [f"{t},{y}" for t, y in rows]) + "\n"


def jsonl(rows=ROWS, **changes) -> str:
    """One JSON object per row; ``changes`` maps a row index to the object written instead."""
    lines = [json.dumps(changes.get(f"r{i}", {"text": t, "label": y})) for i, (t, y) in enumerate(rows)]
    return "\n".join(lines) + "\n"


@dataclass
class Case:
    id: str
    args: tuple[str, ...]
    needles: tuple[str, ...] = ()
    #: replacements applied to BASE (old -> new) and text appended to it
    edit: dict[str, str] = field(default_factory=dict)
    append: str = ""
    #: data files written under the test's folder: name -> text or bytes
    files: dict[str, str | bytes] = field(default_factory=dict)
    #: "none", "template", or a function making the store file from the template's bytes
    store: str | Callable[[bytes], bytes] = "none"
    code: int = 2
    out: tuple[str, ...] = ()
    setup: Callable[[], None] | None = None


def spec_case(id: str, needles, *, cmd: str = "apply", **kw) -> Case:
    return Case(id, (cmd, "{spec}"), tuple(needles), **kw)


def data_case(id: str, name: str, content, needles, **kw) -> Case:
    """The training split read from ``name`` (written with ``content``)."""
    edit = {"{train}": f"{{tmp}}/{name}", **kw.pop("edit", {})}
    return Case(id, ("apply", "{spec}"), tuple(needles), edit=edit, files={name: content}, **kw)


# --- the spec: schema, plugin names and options, sweeps, --set ----------------------------------------

SPEC_CASES = [
    Case("toml-syntax", ("apply", "{spec}"), ("{spec}:9: TOML syntax error",), edit={"[data]": "[data"}),
    spec_case("no-experiment", ["{spec}:1: experiment.name: required key is missing"], edit={'name = "bad"': ""}),
    spec_case(
        "experiment-name-pattern",
        ["{spec}:2: experiment.name: 'my exp' is not a name: use letters, digits"],
        edit={'name = "bad"': 'name = "my exp"'},
    ),
    spec_case(
        "no-seeds", ["{spec}:3: experiment.seeds: List should have at least 1 item"], edit={"seeds = [0]": "seeds = []"}
    ),
    spec_case(
        "negative-seed",
        ["{spec}:3: experiment.seeds.1: Input should be greater than or equal to 0"],
        edit={"seeds = [0]": "seeds = [0, -1]"},
    ),
    spec_case(
        "seed-beyond-32-bits",
        ["{spec}:3: experiment.seeds.0: Input should be less than or equal to 2147483647"],
        edit={"seeds = [0]": "seeds = [2147483648]"},
    ),
    spec_case(
        "seed-not-int",
        ["{spec}:3: experiment.seeds.0: Input should be a valid integer"],
        edit={"seeds = [0]": 'seeds = ["zero"]'},
    ),
    spec_case(
        "unknown-section",
        ["{spec}:23: trian: unknown key 'trian' (did you mean 'train'?)"],
        append="[trian]\nepochs = 1\n",
    ),
    spec_case(
        "unknown-train-key",
        ["{spec}:23: train.epoch: unknown key 'epoch' (did you mean 'epochs'?)"],
        append="epoch = 1\n",
    ),
    spec_case("epochs-zero", ["{spec}:23: train.epochs: Input should be greater than 0"], append="epochs = 0\n"),
    spec_case("epochs-inf", ["{spec}:23: train.epochs: Input should be a finite number"], append="epochs = inf\n"),
    spec_case(
        "epochs-huge",
        ["{spec}:23: train.epochs: Input should be less than or equal to 1000000"],
        append="epochs = 1e308\n",
    ),
    spec_case("epochs-nan", ["{spec}:23: train.epochs: Input should be a finite number"], append="epochs = nan\n"),
    spec_case(
        "learning-rate-inf",
        ["{spec}:23: train.learning_rate: Input should be a finite number"],
        append="learning_rate = inf\n",
    ),
    spec_case(
        "learning-rate-negative",
        ["{spec}:23: train.learning_rate: Input should be greater than 0"],
        append="learning_rate = -1e-3\n",
    ),
    spec_case(
        "batch-size-zero",
        ["{spec}:20: train.batch_size: Input should be greater than or equal to 1"],
        edit={"batch_size = 16": "batch_size = 0"},
    ),
    spec_case(
        "eval-every-zero",
        ['{spec}:23: train.eval_every: must be "epoch" or a number of steps (1 or more), not 0'],
        append="eval_every = 0\n",
    ),
    spec_case(
        "eval-every-word",
        ["{spec}:23: train.eval_every: must be \"epoch\" or a number of steps (1 or more), not 'epok'"],
        append='eval_every = "epok"\n',
    ),
    spec_case(
        "early-stopping-metric",
        [
            "{spec}:23: train.early_stopping.metric: Input should be 'accuracy', 'f1', 'f1_macro', 'loss' or 'exact_match'"
        ],
        append='early_stopping = { metric = "precision" }\n',
    ),
    spec_case(
        "early-stopping-mode",
        ["{spec}:23: train.early_stopping.mode: the loss is minimised: early stopping on 'loss' needs mode = \"min\""],
        append='early_stopping = { metric = "loss" }\n',
    ),
    spec_case(
        "precision-typo",
        ["{spec}:21: train.precision: Input should be 'fp32', 'bf16' or 'fp16' (did you mean 'fp16'?)"],
        edit={'precision = "fp32"': 'precision = "fp61"'},
    ),
    spec_case(
        "scheduler-typo",
        [
            "{spec}:23: train.scheduler: Input should be 'linear', 'constant', 'cosine' or 'polynomial' (did you mean 'cosine'?)"
        ],
        append='scheduler = "cosin"\n',
    ),
    # issue 22: settings that lose to others silently are errors
    spec_case(
        "min-steps-over-max-steps",
        ["{spec}:23: train.min_steps: min_steps = 5 is more than max_steps = 2: a run cannot do both"],
        append="min_steps = 5\n",
    ),
    spec_case(
        "power-without-polynomial",
        ["{spec}:23: train.power: only the polynomial schedule takes a power; scheduler = 'linear' would ignore it"],
        append="power = 2.0\n",
    ),
    spec_case(
        "select-on-reported-split",
        [
            "{spec}:24: train.select_on: early stopping would select on 'validation[:10]', examples of split 'validation' whose numbers the run reports (data.eval_split = 'validation')",
            "set train.allow_selection_on_reported = true",
        ],
        append='early_stopping = { metric = "accuracy" }\nselect_on = "validation[:10]"\n',
    ),
    spec_case(
        "select-on-without-early-stopping",
        ["{spec}:23: train.select_on: only early stopping selects weights by evaluating"],
        append='select_on = "train"\n',
    ),
    spec_case(
        "warmup-ratio", ["{spec}:23: train.warmup_ratio: Input should be less than 1"], append="warmup_ratio = 1.5\n"
    ),
    spec_case(
        "max-grad-norm-inf",
        ["{spec}:23: train.max_grad_norm: Input should be a finite number"],
        append="max_grad_norm = inf\n",
    ),
    spec_case(
        "device-typo",
        [
            "{spec}:23: train.device: Input should be 'auto', 'cpu', 'cuda' or 'cuda:N' (N: a GPU's number, e.g. 'cuda:1'), not 'gpu'"
        ],
        append='device = "gpu"\n',
    ),
    spec_case(
        "max-length-small",
        ["{spec}:7: model.max_length: Input should be greater than or equal to 8"],
        edit={"max_length = 32": "max_length = 4"},
    ),
    spec_case(
        "model-name-empty",
        ["{spec}:6: model.name: String should have at least 1 character"],
        edit={'name = "{model}"': 'name = ""'},
    ),
    spec_case(
        "method-typo",
        ["{spec}:16: method.name: unknown method 'loar' (did you mean 'lora'?)"],
        edit={'name = "lora"': 'name = "loar"'},
    ),
    spec_case(
        "method-option-typo",
        ["{spec}:17: method.rnak: unknown key 'rnak' (did you mean 'rank'?)"],
        edit={"rank = 4": "rnak = 4"},
    ),
    spec_case(
        "method-option-range",
        ["{spec}:17: method.rank: Input should be greater than or equal to 1"],
        edit={"rank = 4": "rank = 0"},
    ),
    spec_case(
        "method-option-inf",
        ["{spec}:17: method.alpha: Input should be a finite number"],
        edit={"rank = 4": "alpha = inf"},
    ),
    spec_case("method-without-name", ["{spec}:15: method.name: required key is missing"], edit={'name = "lora"\n': ""}),
    spec_case(
        "unknown-transform",
        ["{spec}:26: data.transforms.1.name: unknown transform 'nosie' (did you mean 'noise'?)"],
        append='[[data.transforms]]\nname = "clean"\n[[data.transforms]]\nname = "nosie"\n',
    ),
    spec_case(
        "unknown-eval-set-transform",
        ["{spec}:24: data.eval_sets.noisy.transforms.0.name: unknown transform 'shout'"],
        append='[data.eval_sets.noisy]\ntransforms = [{ name = "shout" }]\n',
    ),
    spec_case(
        "transform-option-typo",
        ["{spec}:25: data.transforms.0.char_rat: unknown key 'char_rat' (did you mean 'char_rate'?)"],
        append='[[data.transforms]]\nname = "noise"\nchar_rat = 0.1\n',
    ),
    spec_case(
        "transform-on",
        ["{spec}:25: data.transforms.0.on: must be 'train', 'eval' or 'both', not 'test'"],
        append='[[data.transforms]]\nname = "clean"\non = "test"\n',
    ),
    # results are stored by evaluation set name: a set named like the primary split replaced its evaluation
    spec_case(
        "eval-set-named-like-primary",
        ["{spec}:23: data.eval_sets.validation: 'validation' is the primary evaluation split"],
        append='[data.eval_sets.validation]\ntransforms = [{ name = "noise", char_rate = 0.2 }]\n',
    ),
    Case(
        "eval-set-named-like-default-primary",
        ("validate", "{tmp}/glue.toml"),
        ("{tmp}/glue.toml:5: data.eval_sets.validation: 'validation' is the primary",),
        files={
            "glue.toml": '[experiment]\nname = "g"\n[data]\ndataset = "glue/sst2"\n[data.eval_sets.validation]\nmax_examples = 10\n[method]\nname = "full"\n'
        },
    ),
    spec_case(
        "eval-set-named-train",
        [
            "{spec}:23: data.eval_sets.train: 'train' is reserved: the store keeps the training metrics under split 'train'"
        ],
        append='[data.eval_sets.train]\nsplit = "train"\n',
    ),
    spec_case(
        "unknown-analysis",
        ["{spec}:24: analyses.0.name: unknown analysis 'bootstrap'"],
        append='[[analyses]]\nname = "bootstrap"\n',
    ),
    spec_case(
        "unknown-dataset",
        ["{spec}:10: data.dataset: unknown dataset 'lokal' (did you mean 'local'?)"],
        edit={'dataset = "local"': 'dataset = "lokal"'},
    ),
    spec_case(
        "dataset-option-typo",
        ["{spec}:13: data.options.filez: unknown key 'filez' (did you mean 'files'?)"],
        edit={"files = {": "filez = {"},
    ),
    spec_case(
        "duplicate-label-names",
        ["{spec}:13: data.options.label_names: label names must be distinct; repeated: 0"],
        edit={"files = {": 'label_names = ["0", "1", "0"]\nfiles = {'},
    ),
    spec_case(
        "one-label-name",
        ["{spec}:13: data.options.label_names: List should have at least 2 items"],
        edit={"files = {": 'label_names = ["0"]\nfiles = {'},
    ),
    spec_case(
        "init-from-stage",
        ["{spec}:8: model.init_from: no stage 'a'; the spec's stages: none (declare [stages.a])"],
        edit={"max_length = 32": 'max_length = 32\ninit_from = "stage:a"'},
    ),
    spec_case(
        "sweep-empty-key",
        ['{spec}:24: sweep.: a sweep key names a dotted spec key, e.g. "method.rank"; this one is empty'],
        append='[sweep]\n"" = [1, 2]\n',
    ),
    spec_case(
        "sweep-outside-run",
        ["{spec}:24: sweep.experiment.seeds: can only sweep keys under model, data, method, train"],
        append='[sweep]\n"experiment.seeds" = [[0], [1]]\n',
    ),
    spec_case(
        "sweep-bad-value",
        ["{spec}:24: sweep.method.rank: value 0: method.rank: Input should be greater than or equal to 1"],
        append='[sweep]\n"method.rank" = [4, 0]\n',
    ),
    spec_case(
        "sweep-no-values",
        ["{spec}:24: sweep.method.rank: List should have at least 1 item"],
        append='[sweep]\n"method.rank" = []\n',
    ),
    spec_case(
        "sweep-zip-arity",
        ["{spec}:24: sweep.method.rank, train.learning_rate: each value must be a list of 2 items"],
        append='[sweep]\n"method.rank, train.learning_rate" = [4, 8]\n',
    ),
    spec_case(
        "sweep-index-out-of-range",
        ["{spec}:24: sweep.data.transforms.3.p: data.transforms is not set, so it has no item 3"],
        append='[sweep]\n"data.transforms.3.p" = [0.1]\n',
    ),
    # five mistakes in five places: all reported in one run, in file order
    spec_case(
        "five-at-once",
        [
            "{spec}:3: experiment.seeds.0: Input should be greater than or equal to 0",
            "{spec}:17: method.rnak: unknown key 'rnak'",
            "{spec}:23: train.learning_rate: Input should be a finite number",
            "{spec}:26: data.transforms.0.name: unknown transform 'nosie'",
            "{spec}:28: analyses.0.name: unknown analysis 'bootstrap'",
        ],
        edit={"seeds = [0]": "seeds = [-1]", "rank = 4": "rnak = 4"},
        append='learning_rate = inf\n\n[[data.transforms]]\nname = "nosie"\n[[analyses]]\nname = "bootstrap"\n',
    ),
    Case(
        "set-without-value", ("apply", "{spec}", "--set", "train.epochs"), ("{spec}: train.epochs: expected KEY=VALUE",)
    ),
    Case("set-dot", ("apply", "{spec}", "--set", ".=1"), ("{spec}: .: --set: '.' names no key",)),
    Case("set-empty-key", ("apply", "{spec}", "--set", "=1"), ("{spec}: =1: empty key",)),
    # an empty part between dots was dropped: train..epochs set train.epochs, train.=1 replaced the whole [train] table
    Case(
        "set-empty-part",
        ("apply", "{spec}", "--set", "train..epochs=1"),
        ("{spec}: train..epochs: --set: 'train..epochs' has an empty part between dots",),
    ),
    Case(
        "set-trailing-dot",
        ("apply", "{spec}", "--set", "train.=1"),
        ("{spec}: train.: --set: 'train.' has an empty part between dots",),
    ),
    Case(
        "set-leading-dot",
        ("apply", "{spec}", "--set", ".train.epochs=1"),
        ("{spec}: .train.epochs: --set: '.train.epochs' has an empty part",),
    ),
    spec_case(
        "sweep-key-empty-part",
        ["{spec}:24: sweep.train..epochs: 'train..epochs' has an empty part between dots"],
        append='[sweep]\n"train..epochs" = [1, 2]\n',
    ),
    # a misspelt section that only --set made is blamed on --set, not on the spec file
    Case(
        "set-misspelt-section",
        ("apply", "{spec}", "--set", "trian.epochs=1"),
        ("{spec}: trian: (from --set trian.epochs=1) unknown key 'trian' (did you mean 'train'?)",),
    ),
    Case(
        "set-misspelt-option-table",
        ("apply", "{spec}", "--set", "data.options.filez.train=x.tsv"),
        (
            "{spec}: data.options.filez: (from --set data.options.filez.train=x.tsv) unknown key 'filez' (did you mean 'files'?)",
        ),
    ),
    Case(
        "set-into-value",
        ("apply", "{spec}", "--set", "experiment.seeds.0.x=1"),
        ("experiment.seeds.0.x: --set: experiment.seeds.0 is a value (0), not a table or list",),
    ),
    Case(
        "set-inf",
        ("apply", "{spec}", "--set", "train.learning_rate=inf"),
        ("train.learning_rate: (from --set train.learning_rate=inf) Input should be a finite number",),
    ),
    Case(
        "set-index",
        ("apply", "{spec}", "--set", "data.transforms.3.k=8"),
        ("{spec}: data.transforms.3.k: --set: data.transforms is not set, so it has no item 3",),
    ),
    Case("spec-missing", ("apply", "{tmp}/nope.toml"), ("{tmp}/nope.toml: spec file not found",)),
    Case("spec-is-a-folder", ("validate", "{tmp}"), ("cannot read spec",)),
    Case(
        "spec-not-utf8",
        ("validate", "{tmp}/latin1.toml"),
        ("{tmp}/latin1.toml: cannot read spec", "utf-8"),
        files={"latin1.toml": b'[experiment]\nname = "caf\xe9"\n'},
    ),
]


def _broken_plugin_registry() -> None:
    from specrun.plugins import set_registry
    from specrun.plugins.registry import build_registry, make_plugin_manager

    pm, _ = make_plugin_manager(entry_points=False)
    set_registry(
        build_registry(
            pm,
            [
                "plugin 'specrun_adapters' from specrun-adapters 0.2 failed to load: ImportError: no module named 'adapters'"
            ],
        )
    )


PLUGIN_CASES = [
    spec_case(
        "method-from-a-plugin-that-failed-to-load",
        [
            "{spec}:16: method.name: unknown method 'adapter'",
            "plugin 'specrun_adapters' from specrun-adapters 0.2 failed to load: ImportError: no module named 'adapters'",
        ],
        edit={'name = "lora"': 'name = "adapter"', "rank = 4": ""},
        setup=_broken_plugin_registry,
    ),
    spec_case(
        "transform-from-a-plugin-that-failed-to-load",
        [
            "{spec}:24: data.transforms.0.name: unknown transform 'backtranslate'",
            "failed to load: ImportError",
        ],
        append='[[data.transforms]]\nname = "backtranslate"\n',
        setup=_broken_plugin_registry,
    ),
]

# --- data: splits, files, rows ---------------------------------------------------------------------

DATA_CASES = [
    spec_case(
        "train-split-typo",
        ["{spec}:12: data.train_split: dataset 'local' has no split 'trian' (did you mean 'train'?)"],
        edit={'eval_split = "validation"': 'eval_split = "validation"\ntrain_split = "trian"'},
    ),
    spec_case(
        "eval-split-typo",
        ["{spec}:11: data.eval_split: dataset 'local' has no split 'valdation' (did you mean 'validation'?)"],
        edit={'eval_split = "validation"': 'eval_split = "valdation"'},
    ),
    spec_case(
        "eval-set-split-typo",
        ["{spec}:24: data.eval_sets.extra.split: dataset 'local' has no split 'tset'"],
        append='[data.eval_sets.extra]\nsplit = "tset"\n',
    ),
    spec_case(
        "bad-slice",
        ["{spec}:12: data.train_split: cannot read the slice in 'train[a:b]'"],
        edit={'eval_split = "validation"': 'eval_split = "validation"\ntrain_split = "train[a:b]"'},
    ),
    spec_case(
        "empty-slice",
        ["{spec}:12: data.train_split: 'train[50:10]' selects no examples"],
        edit={'eval_split = "validation"': 'eval_split = "validation"\ntrain_split = "train[50:10]"'},
    ),
    spec_case("data-file-missing", ["data file not found: {tmp}/missing.tsv"], edit={"{train}": "{tmp}/missing.tsv"}),
    spec_case(
        "data-file-is-a-folder",
        ["data file {tmp} is a folder; give the path of a file in it"],
        edit={"{train}": "{tmp}"},
    ),
    data_case(
        "jsonl-null-text",
        "nulls.jsonl",
        jsonl(r3={"text": None, "label": 1}),
        ["{tmp}/nulls.jsonl:4: 'text' is null (or missing)"],
    ),
    data_case(
        "jsonl-missing-text", "gap.jsonl", jsonl(r5={"label": 1}), ["{tmp}/gap.jsonl:6: 'text' is null (or missing)"]
    ),
    data_case(
        "jsonl-bad-json",
        "broken.jsonl",
        jsonl().replace('"label": 0}', '"label": 0', 1),
        ["{tmp}/broken.jsonl:", "not valid JSON"],
    ),
    data_case(
        "jsonl-not-object",
        "list.jsonl",
        jsonl() + "[1, 2]\n",
        [f"{{tmp}}/list.jsonl:{len(ROWS) + 1}: expected one JSON object per line, found list"],
    ),
    # str() made "['a', 'b']" a text and "[1]" a class of its own
    data_case(
        "jsonl-list-text",
        "listtext.jsonl",
        jsonl(r2={"text": ["a", "fine", "film"], "label": 1}),
        ["{tmp}/listtext.jsonl:3: 'text' is a JSON list, not a text"],
    ),
    data_case(
        "jsonl-boolean-text",
        "booltext.jsonl",
        jsonl(r4={"text": True, "label": 0}),
        ["{tmp}/booltext.jsonl:5: 'text' is the JSON true, not a text"],
    ),
    data_case(
        "jsonl-object-label",
        "objlabel.jsonl",
        jsonl(r6={"text": "a fine film", "label": {"id": 1}}),
        ["{tmp}/objlabel.jsonl:7: the label in column 'label' is a JSON object; a label is a name or an integer id"],
    ),
    Case(
        "predict-file-list-text",
        ("predict", "{run}", "--file", "{tmp}/texts.jsonl"),
        ("{tmp}/texts.jsonl:2: the text is a JSON list, not a string",),
        files={"texts.jsonl": '{"text": "fine"}\n{"text": ["a", "b"]}\n'},
        store="template",
    ),
    data_case(
        "jsonl-null-label",
        "nolabel.jsonl",
        jsonl(r2={"text": "a fine film", "label": None}),
        ["{tmp}/nolabel.jsonl:3: no label in column 'label'"],
    ),
    data_case(
        "tsv-empty-text", "empty.tsv", tsv([*ROWS[:4], ("", 1), *ROWS[4:]]), ["{tmp}/empty.tsv:6: 'text' is empty"]
    ),
    data_case(
        "tsv-blank-text", "blank.tsv", tsv([*ROWS[:2], ("   ", 0), *ROWS[2:]]), ["{tmp}/blank.tsv:4: 'text' is empty"]
    ),
    data_case(
        "label-outside-names",
        "labels.tsv",
        tsv([*ROWS[:7], ("a fine film", "maybe"), *ROWS[7:]]),
        ["{tmp}/labels.tsv:9: label 'maybe' in column 'label', not one of ['neg', 'pos']"],
        edit={"files = {": 'label_names = ["neg", "pos"]\nfiles = {'},
    ),
    data_case(
        "ragged-tsv-short",
        "short.tsv",
        tsv().replace(f"{ROWS[5][0]}\t{ROWS[5][1]}", ROWS[5][0]),
        ["{tmp}/short.tsv:7: 1 field(s), but the header has 2 (text, label)"],
    ),
    data_case(
        "ragged-tsv-tab-in-text",
        "tab.tsv",
        tsv().replace(ROWS[9][0], ROWS[9][0].replace(" ", "\t", 1)),
        ["{tmp}/tab.tsv:11: 3 field(s), but the header has 2 (text, label); a text holding a tab breaks a TSV row"],
    ),
    data_case(
        "csv-unquoted-comma",
        "comma.csv",
        csv_text().replace(ROWS[3][0], ROWS[3][0].replace(" ", ", ", 1)),
        [
            "{tmp}/comma.csv:5: 3 field(s), but the header has 2 (text, label); a text holding a comma must be in double quotes"
        ],
    ),
    data_case(
        "csv-unterminated-quote",
        "quote.csv",
        csv_text().replace(ROWS[6][0], '"' + ROWS[6][0]),
        ["{tmp}/quote.csv:8: a quoted field opens in the row starting here and never closes"],
    ),
    data_case(
        "undecodable-bytes",
        "latin1.tsv",
        tsv().encode().replace(b"movie", b"movi\xe9", 1),
        ["{tmp}/latin1.tsv:", "not UTF-8 text (byte 0xe9"],
    ),
    data_case("empty-file", "void.tsv", "", ["{tmp}/void.tsv: the file is empty"]),
    data_case("header-only", "header.tsv", "text\tlabel\n", ["{tmp}/header.tsv: no rows"]),
    data_case(
        "duplicate-header",
        "twice.tsv",
        tsv(header="text\ttext"),
        ["{tmp}/twice.tsv:1: the header names column 'text' twice"],
    ),
    data_case(
        "no-text-column",
        "cols.tsv",
        tsv(header="sentence\tlabel"),
        ["{tmp}/cols.tsv: no column 'text'; columns are ['sentence', 'label']"],
    ),
    data_case(
        "one-class-training-split",
        "pos.tsv",
        tsv([(t, 1) for t, _ in ROWS]),
        [
            "{spec}:9: data.train_split: split 'train' holds only the class '1' (40 examples); a classifier needs examples of two classes or more"
        ],
    ),
    data_case(
        "one-class-subsample",
        "skew.tsv",
        tsv([(ROWS[0][0], 0)] + [(t, 1) for t, _ in ROWS[1:]]),
        ["{spec}:12: data.max_train_examples: the subsample of 1 (seed 0) holds only the class"],
        edit={'eval_split = "validation"': 'eval_split = "validation"\nmax_train_examples = 1'},
    ),
    Case(
        "one-label-in-every-file",
        ("apply", "{spec}"),
        ("column 'label' holds only the label '1'; a classifier needs two classes or more",),
        edit={"{train}": "{tmp}/pos.tsv", "{dev}": "{tmp}/pos2.tsv"},
        files={"pos.tsv": tsv([(t, 1) for t, _ in ROWS]), "pos2.tsv": tsv([(t, 1) for t, _ in ROWS])},
    ),
    Case(
        "few-shot-k-too-large",
        ("apply", "{spec}"),
        ("{spec}:23: data.transforms.0: transform 'few_shot' on split 'train': k=500 but class '0' has only",),
        append='[[data.transforms]]\nname = "few_shot"\nk = 500\n',
    ),
    Case(
        "glue-without-local-copy",
        ("plan", "{tmp}/glue.toml"),
        ("glue/rte: folder not found", "nowhere"),
        files={"glue.toml": '[experiment]\nname = "g"\n[data]\ndataset = "glue/rte"\n[method]\nname = "full"\n'},
        setup=lambda: os.environ.__setitem__("SPECRUN_DATA_DIR", "/nowhere"),
    ),
    # a byte-order mark at the start of a JSONL file is fine (it used to be "could not read as jsonl")
    # a text longer than the csv module's default field limit (128 KiB) is a valid text: the tokenizer truncates it
    Case(
        "tsv-long-text",
        ("plan", "{spec}"),
        (),
        edit={"{train}": "{tmp}/long.tsv"},
        files={"long.tsv": tsv([*ROWS, ("word " * 40000, 1)])},
        code=0,
        out=("new",),
    ),
    Case(
        "jsonl-with-bom",
        ("plan", "{spec}"),
        (),
        edit={"{train}": "{tmp}/bom.jsonl"},
        files={"bom.jsonl": b"\xef\xbb\xbf" + jsonl().encode()},
        code=0,
        out=("new",),
    ),
]

# --- the model and the method against it: known before training --------------------------------------

TINY_BERT_CONFIG = json.dumps(
    {
        "model_type": "bert",
        "vocab_size": 30522,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
    }
)

MODEL_CASES = [
    spec_case(
        "model-path-missing",
        ["{spec}:6: model.name: no model at '{tmp}/no-model' (no such folder)"],
        edit={"{model}": "{tmp}/no-model"},
    ),
    spec_case(
        "model-folder-without-config",
        ["{spec}:6: model.name: no model at '{tmp}' (the folder has no config.json)"],
        edit={"{model}": "{tmp}"},
    ),
    spec_case(
        "model-path-is-a-file",
        ["{spec}:6: model.name: no model at '{tmp}/model.bin' (it is a file, not a folder)"],
        edit={"{model}": "{tmp}/model.bin"},
        files={"model.bin": b"\0" * 64},
    ),
    spec_case(
        "model-config-not-json",
        ["{spec}:6: model.name: no model at '{tmp}' (its config.json cannot be read:"],
        edit={"{model}": "{tmp}"},
        files={"config.json": "{not json"},
    ),
    # a folder with a config but no weights failed at run time; one without a tokenizer trained on [UNK] only and completed
    spec_case(
        "model-folder-without-weights",
        ["{spec}:6: model.name: no model weights in '{tmp}' (no model.safetensors or pytorch_model.bin)"],
        edit={"{model}": "{tmp}"},
        files={"config.json": TINY_BERT_CONFIG, "vocab.txt": "[PAD]\n[UNK]\n"},
    ),
    spec_case(
        "model-folder-without-tokenizer",
        ["{spec}:6: model.name: no tokenizer in '{tmp}'", "every word would become [UNK]"],
        edit={"{model}": "{tmp}"},
        files={"config.json": TINY_BERT_CONFIG, "model.safetensors": b"\0" * 64},
    ),
    spec_case(
        "hub-model-offline",
        [
            "{spec}:6: model.name: 'nobody/no-such-model' is not a local folder nor in the Hugging Face cache, and HF_HUB_OFFLINE is set"
        ],
        edit={"{model}": "nobody/no-such-model"},
    ),
    spec_case(
        "max-length-beyond-positions",
        ["{spec}:7: model.max_length: 4000 tokens, but", "has 128 positions"],
        edit={"max_length = 32": "max_length = 4000"},
    ),
    spec_case(
        "freeze-too-many-layers",
        ["{spec}:17: method.layers: 10 layers to freeze, but", "has 2 encoder layers"],
        edit={'name = "lora"': 'name = "freeze"', "rank = 4": "layers = 10"},
    ),
    spec_case(
        "lora-targets-missing",
        ["{spec}:17: method.target_modules: target_modules ['q_lin', 'v_lin'] matches no module of"],
        edit={"rank = 4": 'target_modules = ["q_lin", "v_lin"]'},
    ),
    spec_case(
        "prompt-longer-than-positions",
        [
            "{spec}:17: method.num_virtual_tokens: 100 virtual tokens + model.max_length 32 exceed the model's 128 positions"
        ],
        edit={'name = "lora"': 'name = "prompt_tuning"', "rank = 4": "num_virtual_tokens = 100"},
    ),
    spec_case(
        "fp16-on-cpu-device",
        ["{spec}:21: train.precision: 'fp16' needs a CUDA device, and train.device = 'cpu'"],
        edit={'precision = "fp32"': 'precision = "fp16"'},
        append='device = "cpu"\n',
    ),
    spec_case(
        "plan-marks-failing-runs",
        ["{spec}:17: method.layers: 10 layers to freeze"],
        cmd="plan",
        edit={'name = "lora"': 'name = "freeze"', "rank = 4": "layers = 10"},
        out=("will fail: method.layers: 10 layers to freeze",),
    ),
]

# --- the command line -------------------------------------------------------------------------------

CLI_CASES = [
    Case(
        "runs-status-bogus",
        ("runs", "--status", "bogus"),
        ("Invalid value for '--status'", "'running', 'completed', 'failed', 'interrupted'"),
        store="template",
    ),
    Case(
        "runs-experiment-nosuch",
        ("runs", "--experiment", "nosuch"),
        ("no experiment 'nosuch' in {store}; experiments: toy",),
        store="template",
    ),
    Case(
        "runs-experiment-typo",
        ("runs", "--experiment", "tyo"),
        ("no experiment 'tyo' in {store} (did you mean 'toy'?)",),
        store="template",
    ),
    Case(
        "runs-history-without-experiment",
        ("runs", "--history"),
        ("--history goes with --experiment NAME",),
        store="template",
    ),
    Case(
        "runs-format-bogus",
        ("runs", "--format", "xml"),
        ("Invalid value for '--format' / '-f'", "'table', 'csv', 'json'"),
        store="template",
    ),
    Case("runs-no-store", ("runs",), ("no store at {store}",)),
    Case("plugins-kind-bogus", ("plugins", "--kind", "gadget"), ("Invalid value for '--kind'", "'model_source'")),
    Case(
        "sql-empty", ("sql", ""), ('give a SQL query, e.g. specrun sql "SELECT * FROM run_summary"',), store="template"
    ),
    Case("sql-blank", ("sql", "  \n "), ("give a SQL query",), store="template"),
    Case("sql-only-semicolon", ("sql", ";"), ("no SQL statement in ';'",), store="template"),
    Case(
        "sql-only-comment",
        ("sql", "/* nothing here */"),
        ("no SQL statement in '/* nothing here */'",),
        store="template",
    ),
    Case(
        "sql-syntax",
        ("sql", "SELEC 1"),
        ('SQL error: Parser Error: syntax error at or near "SELEC"',),
        store="template",
    ),
    Case("sql-unknown-table", ("sql", "SELECT * FROM runz"), ("SQL error: Catalog Error", "runz"), store="template"),
    Case("sql-delete", ("sql", "DELETE FROM runs"), ("SQL error:", "read-only mode"), store="template"),
    Case("sql-drop", ("sql", "DROP TABLE metrics"), ("SQL error:", "read-only mode"), store="template"),
    Case(
        "sql-copy-to-file",
        ("sql", "COPY runs TO '{tmp}/leak.csv'"),
        ('Cannot access file "{tmp}/leak.csv"', "pass --allow-files"),
        store="template",
    ),
    Case(
        "sql-read-csv",
        ("sql", "SELECT * FROM read_csv('/etc/hostname')"),
        ('Cannot access file "/etc/hostname"', "pass --allow-files"),
        store="template",
    ),
    Case(
        "sql-attach",
        ("sql", "ATTACH '{tmp}/other.duckdb' AS other"),
        ("Cannot access file", "pass --allow-files"),
        store="template",
    ),
    Case(
        "sql-reenable-files",
        ("sql", "SET enable_external_access = true"),
        ("SQL error:", "Cannot enable external access while database is running"),
        store="template",
    ),
    Case("unknown-command", ("frobnicate",), ("No such command 'frobnicate'",)),
    Case("apply-without-spec", ("apply",), ("Missing argument 'spec'",)),
    Case("verbose-and-quiet", ("-v", "-q", "runs"), ("give -v/--verbose or -q/--quiet, not both",), store="template"),
    Case(
        "help-short",
        ("runs", "-h"),
        (),
        code=0,
        out=("--status", "<running|completed|failed", "|interrupted|skipped|prun"),
    ),
    Case("version", ("--version",), (), code=0, out=("specrun 0.",)),
    Case("predict-nothing", ("predict", "{run}"), ("give texts to classify, or --file",), store="template"),
    # a run id prefix is matched with LIKE: an empty one, % or _ matched any run
    Case(
        "predict-empty-run-id",
        ("predict", "", "hi"),
        ("'' is not a run id: run ids are hexadecimal",),
        store="template",
    ),
    Case("predict-wildcard-run-id", ("predict", "%", "hi"), ("'%' is not a run id",), store="template"),
    Case("predict-underscore-run-id", ("predict", "____", "hi"), ("'____' is not a run id",), store="template"),
    Case(
        "predict-uppercase-run-id",
        ("predict", "{RUN}", "a fine film", "-f", "csv"),
        (),
        store="template",
        code=0,
        out=("a fine film,",),
    ),
    Case(
        "predict-empty-text",
        ("predict", "{run}", "fine", "  "),
        ("text 2 is empty; give a text to classify",),
        store="template",
    ),
    Case(
        "predict-file-header-only",
        ("predict", "{run}", "--file", "{tmp}/header.csv"),
        ("{tmp}/header.csv: no rows",),
        files={"header.csv": "text,label\n"},
        store="template",
    ),
    Case(
        "predict-unknown-run",
        ("predict", "deadbeef0000", "hi"),
        ("no run 'deadbeef0000' in {store}",),
        store="template",
    ),
    Case(
        "predict-file-missing",
        ("predict", "{run}", "--file", "{tmp}/none.csv"),
        ("data file not found: {tmp}/none.csv",),
        store="template",
    ),
    Case(
        "predict-file-is-a-folder",
        ("predict", "{run}", "--file", "{tmp}"),
        ("data file {tmp} is a folder",),
        store="template",
    ),
    Case(
        "predict-file-no-text",
        ("predict", "{run}", "--file", "{tmp}/cols.csv"),
        ("{tmp}/cols.csv: needs a 'text' column; columns are ['review']",),
        files={"cols.csv": "review\nfine\n"},
        store="template",
    ),
    Case(
        "predict-file-empty",
        ("predict", "{run}", "--file", "{tmp}/empty.csv"),
        ("{tmp}/empty.csv: the file is empty",),
        files={"empty.csv": ""},
        store="template",
    ),
    Case(
        "predict-file-undecodable",
        ("predict", "{run}", "--file", "{tmp}/bytes.csv"),
        ("{tmp}/bytes.csv:2: not UTF-8 text (byte 0xff",),
        files={"bytes.csv": b"text\n\xff\xfe fine\n"},
        store="template",
    ),
    Case(
        "predict-file-unquoted-comma",
        ("predict", "{run}", "--file", "{tmp}/reviews.csv"),
        (
            "{tmp}/reviews.csv:2: 2 field(s), but the header has 1 (text); a text holding a comma must be in double quotes",
        ),
        files={"reviews.csv": "text\nan utterly gorgeous, heartfelt film\n"},
        store="template",
    ),
    Case(
        "predict-file-unknown-label",
        ("predict", "{run}", "--file", "{tmp}/labels.tsv"),
        ("{tmp}/labels.tsv:3: label 'great' is not one of the run's labels ['0', '1']",),
        files={"labels.tsv": "text\tlabel\nfine film\t1\ngood film\tgreat\n"},
        store="template",
    ),
    Case(
        "predict-file-empty-text",
        ("predict", "{run}", "--file", "{tmp}/gap.csv"),
        ("{tmp}/gap.csv:3: the text is empty",),
        files={"gap.csv": 'text\nfine\n""\n'},
        store="template",
    ),
    # quoting done right: the whole text reaches the model, and labels give accuracy and F1
    Case(
        "predict-file-quoted-with-labels",
        ("predict", "{run}", "--file", "{tmp}/ok.csv", "-f", "csv"),
        ("{tmp}/ok.csv: 2 labelled texts: accuracy",),
        files={"ok.csv": 'text,label\n"an utterly gorgeous, heartfelt film",1\n"a dreadful, awful mess",0\n'},
        store="template",
        code=0,
        out=('"an utterly gorgeous, heartfelt film",', '"a dreadful, awful mess",'),
    ),
    # weights go to the artifacts folder: one that is a file failed every run after training, and its cleanup crashed with a traceback
    Case(
        "artifacts-folder-is-a-file",
        ("apply", "{spec}"),
        ("the artifacts folder /dev/null is a file; set SPECRUN_ARTIFACTS to a writable folder",),
        setup=lambda: os.environ.__setitem__("SPECRUN_ARTIFACTS", "/dev/null"),
    ),
    Case(
        "artifacts-folder-cannot-be-made",
        ("apply", "{spec}"),
        ("cannot make the artifacts folder /dev/null/artifacts: Not a directory",),
        setup=lambda: os.environ.__setitem__("SPECRUN_ARTIFACTS", "/dev/null/artifacts"),
    ),
    Case(
        "snapshot-onto-existing-file",
        ("snapshot", "{tmp}/taken.duckdb"),
        ("{tmp}/taken.duckdb exists; give a new path",),
        files={"taken.duckdb": "precious"},
        store="template",
    ),
    Case("snapshot-onto-the-store", ("snapshot", "{store}"), ("exists; give a new path",), store="template"),
]

# --- the store file itself --------------------------------------------------------------------------


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _corrupt_block(data: bytes) -> bytes:
    return data[:20000] + b"\xab" * 40000 + data[60000:]


STORE_CASES = []
for name, make, needle in [
    ("empty", lambda data: b"", "not a valid DuckDB database file"),
    ("truncated", _truncated, "but its tables use blocks up to byte"),
    ("truncated-header", lambda data: data[:5000], "Could not read enough bytes"),
    ("garbage", lambda data: bytes(range(256)) * 80, "not a valid DuckDB database file"),
    ("corrupt-block", _corrupt_block, "Corrupt database file"),
    ("text-file", lambda data: b"run_id,status\n", "not a valid DuckDB database file"),
]:
    for command in (
        ("runs",),
        ("sql", "SELECT count(*) FROM predictions"),
        ("apply", "{spec}"),
        ("predict", "{run}", "hi"),
    ):
        STORE_CASES.append(
            Case(
                f"{name}-store-{command[0]}",
                command,
                (
                    "store {store} cannot be read: it is damaged, truncated or not a DuckDB file (",
                    needle,
                    "specrun has not modified it",
                    "Restore it from a backup or snapshot, or pass --store",
                ),
                store=make,
            )
        )
STORE_CASES += [
    Case(
        "store-of-another-program",
        ("runs",),
        ("{store} is a DuckDB database but not a specrun store",),
        store="foreign",
    ),
    Case("store-is-a-folder", ("runs",), ("store {store} is not a file",), store="folder"),
    Case("store-is-a-folder-apply", ("apply", "{spec}"), ("store {store} is not a file",), store="folder"),
]

CASES = SPEC_CASES + PLUGIN_CASES + DATA_CASES + MODEL_CASES + CLI_CASES + STORE_CASES


# --- running a case ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def template(tmp_path_factory, tiny_model_dir):
    """A store holding one completed run of BASE (trained once per session), its run id, and BASE's paths."""
    folder = tmp_path_factory.mktemp("template")
    (folder / "train.tsv").write_text(tsv())
    (folder / "dev.tsv").write_text(tsv(toy_rows(30, 2)))
    paths = {"{model}": str(tiny_model_dir), "{train}": str(folder / "train.tsv"), "{dev}": str(folder / "dev.tsv")}
    spec = folder / "toy.toml"
    spec.write_text(_fill(BASE.replace('name = "bad"', 'name = "toy"'), paths))
    store = folder / "store.duckdb"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPECRUN_ARTIFACTS", str(folder / "artifacts"))
        mp.setenv("SPECRUN_DISABLE_PLUGIN_AUTOLOAD", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        from specrun.plugins import set_registry

        set_registry(None)
        code, _, err = run_cli("apply", str(spec), "--store", str(store))
        set_registry(None)
    assert code == 0, err
    run_id = duckdb.connect(str(store), read_only=True).execute("SELECT run_id FROM runs").fetchone()[0]
    return {"store": store, "run": run_id, "paths": paths, "spec": spec}


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def fingerprint(path: Path) -> str | None:
    """The store's bytes (and its write-ahead log's), or None when there is no store file."""
    if not path.exists():
        return None
    if path.is_dir():
        return "folder"
    wal = Path(f"{path}.wal")
    return hashlib.sha256(path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")).hexdigest()


def prepare(case: Case, tmp_path: Path, template: dict) -> tuple[dict[str, str], Path]:
    """Write the case's files, spec and store; returns the placeholder values and the store path."""
    store = Path(os.environ["SPECRUN_STORE"])
    values = {"{tmp}": str(tmp_path), "{store}": str(store), "{run}": template["run"], "{RUN}": template["run"].upper()}
    for name, content in case.files.items():
        target = tmp_path / name
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    text = BASE
    for old, new in case.edit.items():
        assert old in text, f"case {case.id}: {old!r} is not in BASE"
        text = text.replace(old, new)
    spec = tmp_path / "bad.toml"
    spec.write_text(_fill(_fill(text + case.append, values), template["paths"]))
    values["{spec}"] = str(spec)
    if (
        case.store == "template"
    ):  # the store and its artifacts beside it (the store records their paths relative to its folder)
        shutil.copyfile(template["store"], store)
        shutil.copytree(template["store"].parent / "artifacts", store.parent / "artifacts", dirs_exist_ok=True)
    elif case.store == "foreign":
        db = duckdb.connect(str(store))
        db.execute("CREATE TABLE notes (body VARCHAR)")
        db.close()
    elif case.store == "folder":
        store.mkdir()
    elif callable(case.store):
        store.write_bytes(case.store(template["store"].read_bytes()))
    return values, store


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path, cli, template, monkeypatch):
    values, store = prepare(case, tmp_path, template)
    if case.setup:
        case.setup()
    before = fingerprint(store)
    code, out, err = cli(*(_fill(a, values) for a in case.args))
    assert code == case.code, f"exit {code}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in err + out
    for needle in case.needles:
        assert _fill(needle, values) in err, f"{_fill(needle, values)!r} not in stderr:\n{err}"
    for needle in case.out:
        assert _fill(needle, values) in out, f"{_fill(needle, values)!r} not in stdout:\n{out}"
    assert fingerprint(store) == before, "the store changed"


def test_every_case_has_a_unique_id():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) + len(PROCESS_CASES) >= 100


def test_kind_choices_match_the_registry():
    """The CLI's --kind choices are written out (the registry is not imported to show --help): keep them equal."""
    import typing

    from specrun.cli import Kind
    from specrun.plugins.registry import HOOK_FOR_KIND

    assert list(typing.get_args(Kind)) == list(HOOK_FOR_KIND)


# --- faults that need another process -----------------------------------------------------------------

SPECRUN = [sys.executable, "-m", "specrun"]


def _hold(store: Path, read_only: bool) -> subprocess.Popen:
    """Another process (a notebook, say) holding the store open."""
    code = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == '1'); print('ready', flush=True); time.sleep(120)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(store), "1" if read_only else "0"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


@dataclass
class ProcessCase:
    id: str
    run: Callable


def lock_case(id: str, read_only_holder: bool, args: tuple[str, ...], code: int, needles: tuple[str, ...]):
    def run(tmp_path, cli, template, monkeypatch):
        values, store = prepare(Case(id, args, store="template"), tmp_path, template)
        monkeypatch.setenv("SPECRUN_STORE_READ_TIMEOUT", "1")
        monkeypatch.setenv("SPECRUN_STORE_TIMEOUT", "1")
        holder = _hold(store, read_only_holder)
        try:
            before = fingerprint(store)
            start = time.monotonic()
            code_, _out, err = cli(*(_fill(a, values) for a in args))
            elapsed = time.monotonic() - start
        finally:
            _release(holder)
        assert code_ == code, err
        assert "Traceback" not in err
        for needle in needles:
            assert _fill(needle, {**values, "{pid}": str(holder.pid)}) in err, err
        assert elapsed < 30  # a bounded wait, not 300 s
        assert fingerprint(store) == before

    return ProcessCase(id, run)


def _read_only_folder(tmp_path: Path, store: Path, args: list[str]) -> tuple[int, str]:
    """Run specrun with ``tmp_path`` read-only: chmod for a normal user; for root (whom chmod does not
    stop), a read-only bind mount in a private mount namespace."""
    env = {**os.environ, "SPECRUN_STORE": str(store)}
    if os.geteuid() != 0:
        tmp_path.chmod(0o555)
        try:
            result = subprocess.run([*SPECRUN, *args], capture_output=True, text=True, env=env, timeout=300)
        finally:
            tmp_path.chmod(0o755)
        return result.returncode, result.stderr
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: cannot make a folder read-only")
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, str(tmp_path), *SPECRUN, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if "mount:" in result.stderr or "unshare:" in result.stderr:
        pytest.skip(f"cannot make a read-only mount here: {result.stderr.strip()}")
    return result.returncode, result.stderr


def read_only_case(id: str, args: tuple[str, ...], code: int, needles: tuple[str, ...], store_kind: str = "template"):
    def run(tmp_path, cli, template, monkeypatch):
        values, store = prepare(Case(id, args, store=store_kind), tmp_path, template)
        if store_kind == "none":
            store = tmp_path / "new.duckdb"
            values["{store}"] = str(store)
        before = fingerprint(store)
        code_, err = _read_only_folder(tmp_path, store, [_fill(a, values) for a in args])
        assert code_ == code, err
        assert "Traceback" not in err
        for needle in needles:
            assert _fill(needle, values) in err, err
        assert fingerprint(store) == before

    return ProcessCase(id, run)


def file_size_limit_case(tmp_path, cli, template, monkeypatch):
    """A full disk, simulated with a file size limit the store cannot even start under: no half-made store."""
    values, _ = prepare(Case("file-size-limit", ()), tmp_path, template)
    store = tmp_path / "full.duckdb"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    result = subprocess.run(
        [*SPECRUN, "apply", values["{spec}"], "--store", str(store)],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot write store {store}: " in result.stderr and "File too large" in result.stderr
    assert not store.exists() and not Path(f"{store}.wal").exists()


def unreadable_data_file(tmp_path, cli, template, monkeypatch):
    """A data file the user may not read: one message, not a PermissionError traceback. (Root, whom chmod
    does not stop, runs specrun without the capabilities that override file permissions.)"""
    values, _ = prepare(
        Case("unreadable", (), edit={"{train}": "{tmp}/secret.tsv"}, files={"secret.tsv": tsv()}), tmp_path, template
    )
    (tmp_path / "secret.tsv").chmod(0)
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
    store = tmp_path / "new.duckdb"
    result = subprocess.run(
        [*prefix, *SPECRUN, "plan", values["{spec}"], "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.stderr.startswith("setpriv:"):
        pytest.skip(f"cannot drop capabilities here: {result.stderr.strip()}")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot read data file {tmp_path}/secret.tsv: Permission denied" in result.stderr
    assert not store.exists()


def plugin_exits_on_import(tmp_path, cli, template, monkeypatch):
    """An installed plugin whose module calls sys.exit when imported (say, a missing dependency it checks
    for) is reported like any plugin that fails to load; specrun goes on with the others."""
    values, _ = prepare(
        Case("plugin-exits", (), edit={'name = "lora"': 'name = "adapter"', "rank = 4": ""}), tmp_path, template
    )
    site = tmp_path / "site"
    (site / "specrun_quitter-0.1.dist-info").mkdir(parents=True)
    (site / "specrun_quitter-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: specrun-quitter\nVersion: 0.1\n"
    )
    (site / "specrun_quitter-0.1.dist-info" / "entry_points.txt").write_text("[specrun]\nquitter = specrun_quitter\n")
    (site / "specrun_quitter.py").write_text("import sys\nsys.exit('specrun-quitter needs the adapters package')\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "SPECRUN_DISABLE_PLUGIN_AUTOLOAD": "",
    }
    failed = (
        "plugin 'quitter' from specrun-quitter",
        "failed to load: SystemExit: specrun-quitter needs the adapters package",
    )
    result = subprocess.run(
        [*SPECRUN, "validate", values["{spec}"]], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{values['{spec}']}:16: method.name: unknown method 'adapter'" in result.stderr, result.stderr
    assert all(needle in result.stderr for needle in failed), result.stderr
    result = subprocess.run(
        [*SPECRUN, "plugins", "--kind", "method", "-f", "csv"], capture_output=True, text=True, env=env, timeout=300
    )
    assert (
        result.returncode == 0 and "warning: " in result.stderr and all(needle in result.stderr for needle in failed)
    ), result.stderr
    assert "lora" in result.stdout


def _spawn(args, store: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*SPECRUN, *args],
        env={**os.environ, "SPECRUN_STORE": str(store)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_until_running(store: Path, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            with duckdb.connect(str(store), read_only=True) as db:
                if db.execute("SELECT status FROM runs").fetchall() == [("running",)]:
                    return
        except duckdb.Error:
            continue
    raise AssertionError("the run never started")


def signal_case(sig: signal.Signals):
    def run(tmp_path, cli, template, monkeypatch):
        values, _ = prepare(
            Case(f"signal-{sig.name}", (), edit={"max_steps = 2": "max_steps = 100000"}), tmp_path, template
        )
        store = tmp_path / "signalled.duckdb"
        proc = _spawn(["apply", values["{spec}"]], store)
        _wait_until_running(store)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err
        if sig == signal.SIGTERM:
            assert proc.returncode == 130, err
            assert "interrupted" in err
        # the store is readable, and the run shows as interrupted (SIGKILL: its process is gone)
        code, out, err = cli("runs", "--store", str(store), "-f", "json")
        assert code == 0, err
        assert [r["status"] for r in json.loads(out)] == ["interrupted"]
        code, out, err = cli("sql", "SELECT count(*) AS n FROM metrics", "--store", str(store), "-f", "json")
        assert code == 0 and json.loads(out) == [{"n": 0}]  # nothing half-written

    return ProcessCase(f"{sig.name.lower()}-mid-apply", run)


def concurrent_applies(tmp_path, cli, template, monkeypatch):
    """Three applies of one spec at once: one trains, the others wait, find it done or running; its
    results are stored once."""
    values, _ = prepare(Case("concurrent", ()), tmp_path, template)
    store = tmp_path / "shared.duckdb"
    procs = [_spawn(["apply", values["{spec}"]], store) for _ in range(3)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(err for _, err in results)
    assert all("Traceback" not in err for _, err in results)
    code, out, _err = cli(
        "sql",
        "SELECT status, (SELECT count(*) FROM metrics WHERE final AND name = 'accuracy') AS n FROM runs",
        "--store",
        str(store),
        "-f",
        "json",
    )
    assert code == 0 and json.loads(out) == [{"status": "completed", "n": 1}], out


PROCESS_CASES = [
    lock_case(
        "writer-holds-store-runs",
        False,
        ("runs",),
        2,
        ("store {store} is locked by PID {pid}", "SPECRUN_STORE_READ_TIMEOUT, now 1s"),
    ),
    lock_case("writer-holds-store-sql", False, ("sql", "SELECT 1"), 2, ("store {store} is locked by PID {pid}",)),
    lock_case("writer-holds-store-plan", False, ("plan", "{spec}"), 2, ("store {store} is locked by PID {pid}",)),
    lock_case("notebook-reads-runs", True, ("runs",), 0, ()),
    lock_case("notebook-reads-sql", True, ("sql", "SELECT count(*) FROM runs"), 0, ()),
    lock_case(
        "notebook-reads-apply",
        True,
        ("apply", "{spec}", "--force"),
        2,
        ("store {store} is locked by PID {pid}", "close that connection", "specrun snapshot"),
    ),
    read_only_case(
        "read-only-folder-apply",
        ("apply", "{spec}", "--force"),
        2,
        ("cannot write store {store}: ", "pass --store with a path in a writable folder"),
    ),
    read_only_case("read-only-folder-runs", ("runs", "-f", "csv"), 0, ()),
    read_only_case(
        "read-only-folder-new-store", ("apply", "{spec}"), 2, ("cannot write store {store}: ",), store_kind="none"
    ),
    ProcessCase("file-size-limit", file_size_limit_case),
    ProcessCase("data-file-unreadable", unreadable_data_file),
    ProcessCase("plugin-exits-on-import", plugin_exits_on_import),
    signal_case(signal.SIGTERM),
    signal_case(signal.SIGKILL),
    ProcessCase("three-concurrent-applies", concurrent_applies),
]


@pytest.mark.parametrize("case", PROCESS_CASES, ids=lambda c: c.id)
def test_bad_input_across_processes(case: ProcessCase, tmp_path, cli, template, monkeypatch):
    case.run(tmp_path, cli, template, monkeypatch)
