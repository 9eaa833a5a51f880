"""Expanding a loaded spec into planned runs with content-hash ids and the runs each needs first."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specrun.core.task import EvalSetDefinition as EvalSetPlan
from specrun.errors import DataError, SpecError, SpecrunError
from specrun.plugins.registry import Registry
from specrun.runner.data import eval_split_name, load_dataset, split_examples
from specrun.spec.load import LoadedSpec, Origin, RunConfig
from specrun.spec.schema import RunSettings
from specrun.spec.stages import dependency_refs, stage_name, transform_entries
from specrun.version import RESULTS_VERSION


@dataclass
class PlannedRun:
    run_id: str
    experiment: str
    config: dict[str, Any]
    seed: int
    sweep_values: dict[str, Any]
    identity: dict[str, Any] = field(repr=False)
    eval_set: str = "validation"
    spec_path: str = ""
    #: Runs that must complete first (``model.init_from`` and transforms' ``teacher`` specs).
    dependencies: list[PlannedRun] = field(default_factory=list, repr=False)
    #: Named evaluation sets (``data.eval_sets``) by name: their definition and its fingerprint. They are
    #: not part of the run's identity: a completed run is evaluated on a new one without retraining.
    eval_sets: dict[str, EvalSetPlan] = field(default_factory=dict, repr=False)
    #: Where the run's values come from (spec files, --set items), to locate problems found later.
    origin: Origin | None = field(default=None, repr=False, compare=False)
    #: The stage of the spec this run is of (``[stages.NAME]``), for locating; None for the spec's own runs.
    stage: str | None = None

    def locate(self, key: str, message: str) -> tuple:
        """A problem about dotted ``key`` of this run, as SpecError takes it: at the line its value comes from."""
        if self.origin is None:
            from specrun.spec.locate import locate

            line = None
            if self.spec_path:
                try:
                    line = locate(Path(self.spec_path).read_text(encoding="utf-8"), key.split("."))
                except OSError:
                    pass
            return (key, line, message)
        return self.origin.locate(key, message, self.sweep_values, self.stage)

    #: What else shapes the result but is not in the run id (which hashes the model's name): the model's
    #: files or hub revision, and the numerics libraries of its method (``inputs_fingerprint``). Recorded
    #: on the run; a completed run recorded with other inputs is stale and trains again.
    inputs: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def settings(self) -> RunSettings:
        """The run's config, typed (its tree stays the source of the run's identity)."""
        return RunSettings.of(self.config)

    @property
    def method(self) -> str:
        return self.config["method"]["name"]

    @property
    def dataset(self) -> str:
        return self.config["data"]["dataset"]

    @property
    def spec_dir(self) -> str | None:
        """The folder of the spec this run comes from: relative paths in its config resolve against it."""
        return str(Path(self.spec_path).resolve().parent) if self.spec_path else None

    def eval_sets_to_add(self, recorded: dict[str, str]) -> tuple[list[str], list[str]]:
        """Given the evaluation sets a completed run was evaluated on ({name: fingerprint}): the ones it
        still needs, and the ones recorded under the same name with a different definition."""
        new = [name for name in self.eval_sets if name not in recorded]
        changed = [
            name for name, plan in self.eval_sets.items() if name in recorded and recorded[name] != plan.fingerprint
        ]
        return new, changed

    def label(self) -> str:
        """A short human description: method (with swept method options), other sweep values, seed.

        ``lora(rank=8,quantize=8bit) learning_rate=0.001 seed=0`` for a sweep point that sets the whole
        method table and the learning rate together."""
        from specrun.spec.labels import describe_sweep

        return f"{describe_sweep(self.method, self.sweep_values)} seed={self.seed}"


#: Bump when the training loop or evaluation changes results for the same config and seed, so that
#: stores stop serving earlier results as cached.
RUNNER_VERSION = "2"


@functools.cache
def _version(dist: str) -> str:
    """An installed distribution's version ("absent" when it is not installed), read once per process."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def code_versions(config: dict, registry: Registry) -> dict[str, str]:
    """Versions of the code that shapes a run's result: libraries and every plugin the run uses."""
    plugins = {f"method:{config['method']['name']}": ("method", config["method"]["name"])}
    plugins[f"dataset:{config['data']['dataset']}"] = ("dataset", config["data"]["dataset"])
    for _, ref in transform_entries(config):
        plugins[f"transform:{ref['name']}"] = ("transform", ref["name"])
    if config.get("task"):  # only a run with a task other than classification names one: the others keep their ids
        plugins[f"task:{config['task']['name']}"] = ("task", config["task"]["name"])
    versions = {key: registry.code_version(*plugin) for key, plugin in sorted(plugins.items())}
    versions["specrun"] = ".".join(RESULTS_VERSION.split(".")[:2])
    versions["runner"] = RUNNER_VERSION
    for lib in ("torch", "transformers", "peft"):
        versions[lib] = _version(lib)
    return versions


#: Files of a model folder that do not change what ``from_pretrained`` loads.
_NOT_MODEL_FILES = ("README.md", "README", "LICENSE", "LICENSE.txt")


def model_folder_digest(folder: str | Path) -> str:
    """A content hash of a local model folder: the names, sizes and SHA-256 of its files (weights, config,
    tokenizer; not dot-files or its README). Hashing reads every byte, so the result is kept in
    ``specrun.cache`` under the files' names, sizes and modification times: a folder left alone costs
    a ``stat`` per file after its first hash; a re-saved one is hashed again."""
    from specrun import cache

    folder = Path(folder)
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name not in _NOT_MODEL_FILES
    )
    stats = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    key = {"folder": str(folder.resolve()), "files": stats}
    found = cache.get("model-digests", key)
    if isinstance(found, str):
        return found
    signature = cache.file_signature(files) or []
    digest = hashlib.sha256(
        json.dumps([[Path(path).name, size, sha] for path, size, sha in signature]).encode()
    ).hexdigest()[:16]
    cache.put("model-digests", key, digest)
    return digest


def hub_revision(repo_id: str) -> str | None:
    """The commit of the hub model ``repo_id`` that loading it offline gets: the snapshot folder its
    config.json is cached in (None when it is not cached)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except (ValueError, OSError):  # not a valid repo id (HFValidationError), an unreadable cache
        return None
    return Path(found).parent.name if isinstance(found, str) else None


def _quantized(config: dict) -> bool:
    method = config["method"]
    return method["name"] == "qlora" or bool(method.get("quantize"))


def inputs_fingerprint(config: dict, registry: Registry) -> dict[str, Any]:
    """What changes a run's result besides its config, data and code versions (``PlannedRun.inputs``):
    the content hash of a local model folder (``model_files``) or the hub commit a hub model resolves to
    here (``model_revision``, when it is in the HF cache), and for quantized runs the bitsandbytes
    version (its kernels compute the result). Empty when none of them can be known."""
    from specrun.runner.modeling import resolve_model

    found: dict[str, Any] = {}
    try:
        path = resolve_model(config["model"]["name"], registry)
    except SpecrunError:
        path = None
    if path is not None:
        folder = Path(path).expanduser()
        if folder.is_dir():
            try:
                found["model_files"] = model_folder_digest(folder)
            except OSError:
                pass
        else:
            revision = hub_revision(path)
            if revision:
                found["model_revision"] = revision
    if _quantized(config):
        found["bitsandbytes"] = _version("bitsandbytes")
    return found


def _named_splits(config: dict, registry: Registry) -> dict[str, str]:
    """{spec key under data: split name} for every split a run reads."""
    data = config["data"]
    named = {"train_split": data["train_split"], "eval_split": eval_split_name(data, registry)}
    if config["train"].get("select_on"):  # the split early stopping selects on
        named["train.select_on"] = config["train"]["select_on"]
    return named | {f"eval_sets.{n}.split": es["split"] for n, es in data["eval_sets"].items() if es.get("split")}


def split_problems(config: dict, registry: Registry, spec_dir: str | None) -> list[DataError]:
    """Every split a run names that its dataset lacks or cannot slice (all of them, not the first)."""
    from specrun.core.tasks import task_of

    dataset = load_dataset(config["data"], registry, spec_dir)
    task, _ = task_of(config, registry)
    problems = []
    for key, name in sorted(_named_splits(config, registry).items()):
        try:
            examples = split_examples(dataset, name, key)
        except DataError as exc:
            problems.append(exc)
            continue
        wrong = task.examples_problem(examples)
        if wrong:
            problems.append(DataError(f"dataset {config['data']['dataset']!r}: {wrong}", key="data.dataset"))
            break
    return problems


def data_fingerprint(config: dict, registry: Registry, spec_dir: str | None) -> dict[str, str]:
    """Content hashes of the splits a run reads (before transforms: those are in the config)."""
    dataset = load_dataset(config["data"], registry, spec_dir)
    return {
        name: split_examples(dataset, name, key).fingerprint
        for key, name in sorted(_named_splits(config, registry).items())
    }


#: Train keys that change how a run is carried out, never what it computes: not part of its identity.
NOT_IDENTITY_TRAIN_KEYS = ("checkpoint_every",)


def training_view(config: dict) -> dict:
    """``config`` without its named evaluation sets and the train keys that do not change results
    (``checkpoint_every``): what determines the trained weights (the primary evaluation split stays: it
    picked the best checkpoint under early stopping before ``train.select_on`` existed, and removing it
    now would change every run's id)."""
    train = {k: v for k, v in config["train"].items() if k not in NOT_IDENTITY_TRAIN_KEYS}
    return {**config, "data": {**config["data"], "eval_sets": {}}, "train": train}


def eval_set_plans(config: dict, registry: Registry, spec_dir: str | None) -> dict[str, EvalSetPlan]:
    """Each named evaluation set's definition (its config entry, the content hash of its split, the
    versions of its transforms, the files they read) and a fingerprint of that definition."""
    plans = {}
    data = config["data"]
    for name, entry in data["eval_sets"].items():
        single = {**config, "data": {**data, "transforms": [], "eval_sets": {name: entry}}}
        versions = code_versions(single, registry)
        split = entry.get("split") or eval_split_name(data, registry)
        definition = {
            "eval_set": entry,
            "split": split_examples(
                load_dataset(data, registry, spec_dir), split, f"eval_sets.{name}.split"
            ).fingerprint,
            "code": {k: v for k, v in versions.items() if k.startswith("transform:")},
            "inputs": transform_inputs(single, registry, spec_dir),
        }
        plans[name] = EvalSetPlan(definition, run_id_for(definition))
    return plans


def transform_inputs(config: dict, registry: Registry, spec_dir: str | None) -> dict[str, dict[str, str]]:
    """Content hashes of the files that transforms read (see ``TransformPlugin.inputs``), by location."""
    found = {}
    for where, entry in transform_entries(config):
        plugin = registry.get("transform", entry["name"])
        options = plugin.Options.model_validate({k: v for k, v in entry.items() if k not in ("name", "on")})
        try:
            hashes = plugin.inputs(options, spec_dir)
        except DataError as exc:
            raise DataError(exc.message, key=exc.key or where) from None
        if hashes:
            found[where] = dict(hashes)
    return found


def run_id_for(identity: dict) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


MAX_DEPTH = 4


def _plan_single(
    ref: str, spec_dir: str, registry: Registry, depth: int, what: str, chain: tuple[Path, ...] = ()
) -> PlannedRun:
    """Plan the spec at ``ref`` (relative to ``spec_dir``), which must expand to exactly one run;
    ``chain``: the specs that led here (a spec met again is a cycle, reported by the caller)."""
    from specrun.spec.load import load_spec

    if depth >= MAX_DEPTH:
        raise SpecError(ref, [("", None, f"{what} specs nest deeper than {MAX_DEPTH} levels")])
    path = Path(ref) if Path(ref).is_absolute() else Path(spec_dir) / ref
    runs = plan_runs(load_spec(path, registry=registry), registry, depth + 1, chain)
    if len(runs) != 1:
        raise SpecError(str(path), [("", None, f"a {what} spec must expand to exactly one run, not {len(runs)}")])
    return runs[0]


def resolve_dependencies(
    run: RunConfig, loaded: LoadedSpec, registry: Registry, depth: int, chain: tuple[Path, ...] = ()
) -> list[PlannedRun]:
    """Runs this run needs first: the stage (``stage:NAME``) or spec (``.toml``) named by
    ``model.init_from`` (transfer) and by any transform's ``teacher`` option. Each reference is replaced
    in the run's config by its run's id, so the dependency's identity is part of this run's; a value that
    is already a run id is left as it is."""
    spec_dir = str(Path(loaded.path).resolve().parent)
    chain = chain if chain and chain[-1] == Path(loaded.path).resolve() else (*chain, Path(loaded.path).resolve())
    needed = []
    for holder, key, what, dotted in dependency_refs(run.config):
        ref = holder.get(key)
        stage = stage_name(ref)
        if stage is not None:
            dependency = plan_one(run.stages[stage], loaded, registry, depth + 1, chain)
        elif isinstance(ref, str) and ref.endswith(".toml"):
            path = Path(ref) if Path(ref).is_absolute() else Path(spec_dir) / ref
            if not path.is_file():
                raise DataError(
                    f"no spec file {ref!r} (looked for {path.resolve()}; relative paths are relative to this spec's folder)",
                    key=dotted,
                )
            if path.resolve() in chain:
                cycle = " → ".join(p.name for p in (*chain[chain.index(path.resolve()) :], path.resolve()))
                raise SpecError(
                    str(loaded.path),
                    [
                        loaded.locate(
                            dotted, f"{what} specs refer to each other in a cycle: {cycle}", run.sweep_values, run.stage
                        )
                    ],
                )
            dependency = _plan_single(ref, spec_dir, registry, depth, what, chain)
        else:
            continue
        holder[key] = dependency.run_id
        needed.append(dependency)
    return needed


def plan_one(
    run: RunConfig, loaded: LoadedSpec, registry: Registry, depth: int = 0, chain: tuple[Path, ...] = ()
) -> PlannedRun:
    """One run of ``loaded`` (or of one of its stages) with its content-hash id and the runs it needs first."""
    if depth >= MAX_DEPTH:
        raise SpecError(
            str(loaded.path), [("stages", None, f"stages and source specs nest deeper than {MAX_DEPTH} levels")]
        )
    spec_dir = str(Path(loaded.path).resolve().parent)
    try:
        problems = split_problems(run.config, registry, spec_dir)
    except DataError as exc:
        problems = [exc]
    if problems:
        raise SpecError(
            str(loaded.path),
            [
                loaded.locate(e.key, e.message, run.sweep_values, run.stage) if e.key else ("", None, e.message)
                for e in problems
            ],
        )
    try:
        dependencies = resolve_dependencies(
            run, loaded, registry, depth, chain
        )  # before training_view: it rewrites references to run ids
        trained = training_view(run.config)
        inputs = transform_inputs(trained, registry, spec_dir)
        eval_sets = eval_set_plans(run.config, registry, spec_dir)
        fingerprint = data_fingerprint(trained, registry, spec_dir)
    except DataError as exc:  # name the spec's file and line too
        if exc.key is None:
            raise
        raise SpecError(str(loaded.path), [loaded.locate(exc.key, exc.message, run.sweep_values, run.stage)]) from None
    identity = {
        "config": trained,
        "data": fingerprint,
        "code": code_versions(trained, registry),
    }
    if inputs:  # only when present, so that other runs keep their ids
        identity["inputs"] = inputs
    train = trained["train"]
    if train.get("scheduler") == "constant" and train.get("warmup_ratio"):
        # a constant schedule has warmed up since this key: such runs no longer compute what they did
        identity["schedule"] = "constant_with_warmup"
    return PlannedRun(
        run_id=run_id_for(identity),
        experiment=run.experiment or loaded.experiment,
        config=run.config,
        seed=run.seed,
        sweep_values=run.sweep_values,
        identity=identity,
        eval_set=eval_split_name(run.config["data"], registry),
        spec_path=str(loaded.path),
        dependencies=dependencies,
        eval_sets=eval_sets,
        origin=loaded.origin(),
        stage=run.stage,
        inputs=inputs_fingerprint(trained, registry),
    )


def plan_runs(loaded: LoadedSpec, registry: Registry, depth: int = 0, chain: tuple[Path, ...] = ()) -> list[PlannedRun]:
    planned = [plan_one(run, loaded, registry, depth, chain) for run in loaded.runs]
    seen: dict[str, PlannedRun] = {}
    unique = []
    for p in planned:  # identical sweep points (e.g. a swept key a method ignores) train once
        if p.run_id not in seen:
            seen[p.run_id] = p
            unique.append(p)
            continue
        first = seen[p.run_id]  # a swept eval set: the one training is evaluated on each
        for name, plan in p.eval_sets.items():
            if name in first.eval_sets and first.eval_sets[name].fingerprint != plan.fingerprint:
                raise SpecError(
                    str(loaded.path),
                    [
                        loaded.locate(
                            f"data.eval_sets.{name}",
                            f"sweep points that train the same run define evaluation set {name!r} differently; give them different names",
                        )
                    ],
                )
            first.eval_sets[name] = plan
            first.config["data"]["eval_sets"][name] = p.config["data"]["eval_sets"][name]
    return unique
