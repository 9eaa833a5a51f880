"""The contracts every method, transform and dataset source passes: the very checks specrun's built-in
plugins are tested with, as functions a plugin author calls from a test.

Each raises ``AssertionError`` naming what broke, and returns what it measured."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from specrun.examples import Dataset, Examples
from specrun.plugins.api import DataContext, TransformContext
from specrun.plugins.registry import Registry

# --- methods -------------------------------------------------------------------------------------


#: The modules transformers' sequence classifiers put on the backbone: ``classifier`` (and DistilBERT's
#: ``pre_classifier``) on encoders, ``score`` on decoders.
HEADS = ("classifier", "pre_classifier", "score")


def is_head(name: str) -> bool:
    """Whether a parameter belongs to the classifier head, plain or as peft's trained copy (``modules_to_save``)."""
    return name.startswith(tuple(f"{h}." for h in HEADS)) or any(f".{h}.modules_to_save." in name for h in HEADS)


@dataclass
class MethodReport:
    """What ``check_method`` measured."""

    loss_before: float
    loss_after: float
    #: Parameter names that require grad after ``build``, and those whose values training changed.
    trainable: set[str]
    changed: set[str]
    #: (trainable, total) parameters, counted as the runner records them (``runs.trainable_params``).
    counts: tuple[int, int]


#: How far a saved run loaded with plain peft/transformers may stray from the trained model (as specrun's own reload).
PLAIN_TOLERANCE = 1e-6


def check_method(
    registry: Registry,
    name: str,
    options: dict[str, Any] | None = None,
    *,
    model_dir: Path,
    workdir: Path,
    trains: Callable[[str], bool] | None = None,
    learning_rate: float = 1e-2,
    precision: str = "fp32",
    steps: int = 15,
) -> MethodReport:
    """Train method ``name`` with ``options`` on the toy task through the runner's own code and check:

    - exactly the parameters ``trains(name)`` accepts require grad (``None``: every parameter), and
      some do; the parameter counts the runner records agree with them;
    - a method that says ``train.cache_frozen`` can serve these options (``frozen_prefix_problem``
      answers None for this model) trains nothing inside the backbone;
    - ``steps`` steps at ``learning_rate`` lower the training loss by 10% or more;
    - only trainable tensors change (frozen weights and buffers stay), the classifier head trains, and
      at least half of the trainable tensors change;
    - the run saved as the runner saves it and rebuilt with ``build`` predicts the same; and its folder,
      loaded with plain peft or transformers (``specrun.runner.export.load_plain``: for a method whose
      model is a ``PeftModel`` or a ``PreTrainedModel`` over a base that is not quantized), predicts the
      same too (confidences within ``PLAIN_TOLERANCE``).

    ``model_dir`` is the backbone (the ``tuned_model_dir`` fixture: a tiny BERT that learned features,
    so methods that train little on top of it can still lower the loss); ``workdir`` an empty folder."""
    import torch

    from specrun.runner.artifacts import load_weights, quantized_bits, save_run
    from specrun.runner.batching import Encoded, TokenCache
    from specrun.runner.build import build_model
    from specrun.runner.data import prepare_run_data
    from specrun.runner.evaluate import evaluate
    from specrun.runner.export import load_plain
    from specrun.runner.modeling import count_parameters, load_tokenizer
    from specrun.runner.train import train_model
    from specrun.testing.toy import single_thread

    config, spec_dir = _toy_config(registry, workdir, model_dir, f"max_steps = {steps}")
    method = registry.get("method", name)
    validated = method.Options.model_validate(options or {})
    config["method"] = {"name": name, **validated.model_dump(mode="json")}
    config["train"] = {**config["train"], "learning_rate": learning_rate, "precision": precision}
    device = torch.device("cpu")
    with single_thread():
        data = prepare_run_data(config, registry, spec_dir)
        labels = data.dataset.label_names
        model, ctx = build_model(config, registry, len(labels), labels, device)
        cache = TokenCache(load_tokenizer(ctx.model_path), config["model"]["max_length"])
        train, dev = Encoded.build(data.train, cache), Encoded.build(data.eval_sets[data.primary_eval], cache)

        names = [n for n, _ in model.named_parameters()]
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        intended = {n for n in names if trains is None or trains(n)}
        assert trainable == intended, (
            f"{name}: trainable but not intended: {sorted(trainable - intended)[:5]}; "
            f"intended but frozen: {sorted(intended - trainable)[:5]}"
        )
        assert trainable, f"{name}: no parameter requires grad"
        counts = count_parameters(model)
        numel = dict(model.named_parameters())
        held = sum(numel[n].numel() for n in trainable)
        assert counts[0] == held, (
            f"{name}: the runner counts {counts[0]} trainable parameters, the trainable tensors hold {held}"
        )
        assert 0 < counts[0] <= counts[1], f"{name}: parameter counts (trainable, total) = {counts}"
        _check_frozen_prefix(registry, method, validated, config, model)

        before = _snapshot(model)
        loss_before = evaluate(model, train, len(labels), 256, precision, device).metrics["loss"]
        train_model(model, train, dev, "validation", len(labels), config["train"], config["seed"], device)
        loss_after = evaluate(model, train, len(labels), 256, precision, device).metrics["loss"]
        assert loss_after < 0.9 * loss_before, (
            f"{name}: training loss {loss_before:.4f} -> {loss_after:.4f} (expected 10% lower)"
        )

        after = _snapshot(model)
        changed = {n for n in before if not _same_values(before[n], after[n])}
        assert changed <= trainable, f"{name}: frozen tensors changed: {sorted(changed - trainable)[:5]}"
        head = {n for n in trainable if is_head(n)}
        assert head and head <= changed, f"{name}: the classifier head did not train"
        assert len(changed) >= 0.5 * len(trainable), (
            f"{name}: only {len(changed)} of {len(trainable)} trainable tensors changed"
        )

        expected = evaluate(model, dev, len(labels), 64, precision, device)
        folder = workdir / "saved-run"
        save_run(
            model,
            folder,
            {"run_id": "contract", "config": config, "label_names": labels},
            tokenizer=cache.tokenizer,
            max_length=config["model"]["max_length"],
        )
        reloaded, _ = build_model(config, registry, len(labels), labels, device)
        load_weights(reloaded, folder)
        got = evaluate(reloaded, dev, len(labels), 64, precision, device)
        # a quantized base loaded plainly runs bitsandbytes' inference kernels, not the trained path: not compared
        plain = load_plain(folder, registry=registry) if not quantized_bits(model) else None
        plain_got = evaluate(plain, dev, len(labels), 64, precision, device) if plain is not None else None
    assert (got.prediction == expected.prediction).all(), f"{name}: the saved and rebuilt model predicts other labels"
    assert max(abs(a - b) for a, b in zip(got.confidence, expected.confidence)) <= 1e-6, (
        f"{name}: the saved and rebuilt model predicts other confidences"
    )
    if plain_got is not None:
        assert (plain_got.prediction == expected.prediction).all(), (
            f"{name}: the saved folder, loaded with plain peft/transformers, predicts other labels"
        )
        assert max(abs(a - b) for a, b in zip(plain_got.confidence, expected.confidence)) <= PLAIN_TOLERANCE, (
            f"{name}: the saved folder, loaded with plain peft/transformers, predicts other confidences"
        )
    return MethodReport(loss_before, loss_after, trainable, changed, counts)


def _check_frozen_prefix(registry: Registry, method, options, config: dict, model) -> None:
    """A method whose ``frozen_prefix_problem`` accepts these options builds a model that
    ``train.cache_frozen`` can serve: every trainable parameter in the head."""
    from specrun.errors import ConfigError
    from specrun.runner.compat import model_info
    from specrun.runner.frozen import FrozenPrefix, architecture_problem
    from specrun.spec.schema import RunSettings

    info = model_info(config["model"]["name"], registry, config["model"]["max_length"])
    if architecture_problem(info.config) or method.frozen_prefix_problem(options, info) is not None:
        return
    try:
        FrozenPrefix(model, RunSettings.of(config))
    except ConfigError as exc:
        raise AssertionError(f"{method.name}: says train.cache_frozen can serve it, but {exc}") from None


def _toy_config(registry: Registry, workdir: Path, model_dir: Path, train: str) -> tuple[dict, str]:
    """A resolved run config of the toy task on ``model_dir``, and the folder of its spec."""
    from specrun.spec.load import load_spec
    from specrun.testing.toy import toy_spec, write_toy_data

    data = write_toy_data(workdir / "toy")
    text = toy_spec(method='name = "full"', train=train, model=str(model_dir))
    spec = workdir / "contract.toml"
    spec.write_text(text.replace("{toy_train}", str(data / "train.tsv")).replace("{toy_dev}", str(data / "dev.tsv")))
    return load_spec(spec, registry=registry).runs[0].config, str(workdir)


def _snapshot(model) -> dict:
    """Every parameter and buffer by name (quantized weights as their stored integers)."""
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    state.update({f"buffer:{n}": b.detach().clone() for n, b in model.named_buffers()})
    return state


def _same_values(before, after) -> bool:
    """Equal, or ``after`` is ``before`` cast to another dtype: bitsandbytes stores a quantized layer's
    frozen bias in the dtype of its input on each forward, which is not training."""
    import torch

    return torch.equal(before.to(after.dtype), after)


# --- transforms ----------------------------------------------------------------------------------

WORDS = [
    "the",
    "movie",
    "was",
    "really",
    "quite",
    "good",
    "bad",
    "plot",
    "acting",
    "film",
    "story",
    "very",
    "fine",
    "nice",
    "awful",
    "long",
    "short",
]
LABELS = ("neg", "neu", "pos")


def sample_examples(n: int = 60, pair: bool = False, seed: int = 0, num_labels: int = 3) -> Examples:
    """``n`` examples of 4 to 12 random words (ids ``ex0``...; labels cycling through ``num_labels``)."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(n)]
    pairs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(n)] if pair else None
    return Examples.from_columns([f"ex{i}" for i in range(n)], texts, [i % num_labels for i in range(n)], pairs)


def transform_context(
    seed: int = 0, split: str = "train", scores=None, spec_dir: str | None = None
) -> TransformContext:
    """A transform's context for ``sample_examples`` (label names ``neg, neu, pos``)."""
    return TransformContext(seed=seed, split=split, label_names=LABELS, scores=scores, spec_dir=spec_dir)


TransformKind = Literal["rewrite", "select", "relabel", "map"]


def check_transform(
    registry: Registry,
    name: str,
    options: dict[str, Any] | None = None,
    *,
    kind: TransformKind | None = None,
    examples: Examples | None = None,
    context: Callable[[int], TransformContext] | None = None,
    seeded: bool = True,
) -> Examples:
    """Apply transform ``name`` with ``options`` to ``examples`` (default: 60 ``sample_examples``,
    checked once as single texts and once as text pairs) and check:

    - purity: the input is not modified, and the same seed gives the same output;
    - alignment: ids, texts, labels (and pairs) stay parallel columns, ids stay unique, the pair column
      survives, and every output example comes from an input one (its id, or ``<id>~<suffix>`` for a
      new copy) with that example's label (unless ``kind="relabel"``);
    - with ``seeded``, another seed gives another output (a transform without randomness: ``False``).

    ``kind`` adds what the transform promises: ``select`` (a strict subset of the input, as it was),
    ``relabel`` (only labels change), ``map`` (texts rewritten in place: same ids, no randomness),
    ``rewrite`` (the input first, then new copies). ``context(seed)`` builds the transform's context
    (default: split ``train``, no teacher). Returns the output for the single-text examples."""
    plugin = registry.get("transform", name)
    validated = plugin.Options.model_validate(options or {})
    make_context = context or (lambda seed: transform_context(seed=seed))
    inputs = [examples] if examples is not None else [sample_examples(), sample_examples(pair=True)]
    first = None
    for given in inputs:
        before = (given.fingerprint, given.ids, given.text, given.label, given.text_pair)
        out = plugin.apply(given, validated, make_context(0))
        assert isinstance(out, Examples), f"{name}: apply returned {type(out).__name__}, not Examples"
        assert (given.fingerprint, given.ids, given.text, given.label, given.text_pair) == before, (
            f"{name}: the input was modified"
        )
        assert Examples.fingerprint.func(given) == before[0], f"{name}: the input was modified in place"
        assert plugin.apply(given, validated, make_context(0)) == out, f"{name}: not deterministic for a seed"
        assert len(out.ids) == len(out.text) == len(out.label), f"{name}: ids, texts and labels are not parallel"
        assert (out.text_pair is None) == (given.text_pair is None), (
            f"{name}: the text_pair column was added or dropped"
        )
        assert len(set(out.ids)) == len(out.ids), f"{name}: ids must stay unique"
        source = {i: k for k, i in enumerate(given.ids)}
        unknown = [i for i in out.ids if i.split("~")[0] not in source]
        assert not unknown, (
            f"{name}: output ids {unknown[:3]} come from no input example (a copy's id is '<id>~<suffix>')"
        )
        origin = [source[i.split("~")[0]] for i in out.ids]
        if kind != "relabel":
            assert list(out.label) == [given.label[k] for k in origin], f"{name}: labels must follow their examples"
        assert all(0 <= y < len(make_context(0).label_names) for y in out.label), (
            f"{name}: a label outside the label names"
        )
        _check_kind(name, kind, given, out, origin)
        other = plugin.apply(given, validated, make_context(1))
        if seeded and kind != "map":
            assert other != out, (
                f"{name}: another seed gave the same output (pass seeded=False for a transform without randomness)"
            )
        elif kind == "map":
            assert other == out, f"{name}: a map transform changed with the seed"
        first = first or out
    return first


def _check_kind(name: str, kind: TransformKind | None, given: Examples, out: Examples, origin: list[int]) -> None:
    if kind == "select":
        assert out == given.select(origin), f"{name}: selected examples must be the input's, unchanged"
        assert len(out) < len(given), f"{name}: a selection kept every example"
    if kind in ("relabel", "map"):
        assert out.ids == given.ids, f"{name}: a {kind} transform must keep the ids in order"
    if kind == "relabel":
        assert out.text == given.text and out.text_pair == given.text_pair, f"{name}: a relabel transform changed texts"
    if kind == "rewrite":
        n = len(given)
        assert out.ids[:n] == given.ids and out.text[:n] == given.text, (
            f"{name}: the input examples must come first, unchanged"
        )
        assert len(out) > n, f"{name}: a rewrite transform added no copies"
        assert out.text[n:] != given.text * ((len(out) - n) // n), f"{name}: the copies are unchanged"


# --- datasets ------------------------------------------------------------------------------------


def check_dataset(
    registry: Registry,
    name: str,
    options: dict[str, Any] | None = None,
    *,
    data_dir: str | Path | None = None,
    spec_dir: str | Path | None = None,
) -> Dataset:
    """Load dataset ``name`` with ``options`` twice and check:

    - stable ids: the second load gives the same ids, texts and labels (the same fingerprints);
    - every split has unique ids, parallel columns, and text (and, if present, text_pair) strings;
    - labels are in the label names (``0 <= label < len(label_names)``), and the names are distinct;
    - the default evaluation split (``eval_split``) exists.

    ``data_dir`` and ``spec_dir`` are the ``DataContext`` it gets. Returns the dataset."""
    source = registry.get("dataset", name)
    validated = source.Options.model_validate(options or {})
    ctx = DataContext(
        data_dir=str(data_dir) if data_dir is not None else None,
        spec_dir=str(spec_dir) if spec_dir is not None else None,
    )
    first = source.load(validated, ctx)
    assert isinstance(first, Dataset), f"{name}: load returned {type(first).__name__}, not a Dataset"
    assert first.splits, f"{name}: no splits"
    labels = tuple(first.label_names)
    assert len(labels) >= 2 and len(set(labels)) == len(labels), (
        f"{name}: label names must be 2 or more, distinct: {labels}"
    )
    assert source.eval_split in first.splits, (
        f"{name}: eval_split {source.eval_split!r} is not a split ({', '.join(first.splits)})"
    )
    for split, ex in first.splits.items():
        where = f"{name}: split {split!r}"
        assert isinstance(ex, Examples), f"{where} is {type(ex).__name__}, not Examples"
        assert len(ex.ids) == len(ex.text) == len(ex.label), f"{where}: ids, texts and labels are not parallel"
        assert len(set(ex.ids)) == len(ex.ids), f"{where}: ids are not unique"
        bad = [y for y in ex.label if not (isinstance(y, int) and 0 <= y < len(labels))]
        assert not bad, f"{where}: labels {sorted(set(bad))[:5]} are not indices into the label names {labels}"
        assert all(isinstance(t, str) for t in ex.text), f"{where}: a text that is not a string"
        if ex.text_pair is not None:
            assert len(ex.text_pair) == len(ex), f"{where}: text_pair is not parallel"
            assert all(isinstance(t, str) for t in ex.text_pair), f"{where}: a text_pair that is not a string"
    second = source.load(validated, ctx)
    assert tuple(second.label_names) == labels, f"{name}: label names differ between two loads"
    assert set(second.splits) == set(first.splits), f"{name}: splits differ between two loads"
    for split, ex in first.splits.items():
        assert second.splits[split].ids == ex.ids, (
            f"{name}: split {split!r}: ids differ between two loads (they must be stable)"
        )
        assert second.splits[split].fingerprint == ex.fingerprint, (
            f"{name}: split {split!r}: examples differ between two loads"
        )
    return first
