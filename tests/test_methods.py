"""The shared contract every fine-tuning method passes, on the tiny random BERT and the toy task.

Each registered method runs through the runner's own build, training, saving and reloading code:
training lowers the loss, only the parameters the method means to train change, and a saved run
reloads to the same predictions. A method gets the whole contract by being registered; a row in
``CASES`` only picks its options, learning rate and the parameters it is meant to train.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from conftest import toy_rows

from specrun.plugins.registry import build_registry, make_plugin_manager


def _lora(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def _head(name: str) -> bool:
    """The classifier head, plain or as peft's trained copy (``modules_to_save``)."""
    return name.startswith("classifier.") or ".classifier.modules_to_save." in name


@dataclass
class Case:
    """One row of the contract: a method, its options, and what it is meant to train."""

    method: str
    options: dict[str, Any] = field(default_factory=dict)
    #: Accepts the parameter names the method is meant to train (and only those).
    trains: Callable[[str], bool] = lambda name: True
    learning_rate: float = 1e-2
    precision: str = "fp32"
    id: str = ""

    def __post_init__(self):
        self.id = self.id or self.method

    def method_table(self) -> dict[str, Any]:
        return {"name": self.method, **self.options}


QUERY_FFN_BIAS = re.compile(r".*\.(attention\.self\.query|intermediate\.dense)\.bias$")
IA3_VECTOR = re.compile(r".*\.layer\.\d\.(attention\.self\.(key|value)|output\.dense)\.ia3_l\.default$")

#: Per-method rows; a registered method without a row runs once with its default options and must
#: then train everything (add a row saying what it trains).
CASES: dict[str, list[Case]] = {
    "full": [
        Case("full"),
        Case("full", precision="bf16", id="full-bf16"),
    ],
    "lora": [
        Case("lora", {"rank": 4}, lambda n: _lora(n) or _head(n)),
        Case("lora", {"rank": 4, "quantize": "8bit"}, lambda n: _lora(n) or _head(n), precision="bf16", id="lora-8bit-bf16"),
    ],
    "qlora": [
        Case("qlora", {"rank": 4}, lambda n: _lora(n) or _head(n)),
        Case("qlora", {"rank": 4, "compute_dtype": "fp32", "double_quant": False}, lambda n: _lora(n) or _head(n),
             precision="bf16", id="qlora-fp32-compute-bf16"),
    ],
    "bitfit": [
        Case("bitfit", {}, lambda n: n.endswith(".bias") or _head(n)),
        Case("bitfit", {"subset": "query-ffn"}, lambda n: bool(QUERY_FFN_BIAS.match(n)) or _head(n), id="bitfit-query-ffn"),
    ],
    "prompt_tuning": [
        Case("prompt_tuning", {"num_virtual_tokens": 4}, lambda n: n.startswith("prompt_encoder.") or _head(n), learning_rate=3e-2),
        Case("prompt_tuning", {"num_virtual_tokens": 6, "init": "text", "init_text": "is this review positive or negative"},
             lambda n: n.startswith("prompt_encoder.") or _head(n), precision="bf16", id="prompt_tuning-text-bf16"),
    ],
    "ia3": [
        Case("ia3", {}, lambda n: bool(IA3_VECTOR.match(n)) or _head(n)),
    ],
    "freeze": [
        Case("freeze", {"layers": 1}, lambda n: not n.startswith(("bert.embeddings.", "bert.encoder.layer.0."))),
        Case("freeze", {"fraction": 1.0}, lambda n: n.startswith(("bert.pooler.", "classifier.")), id="freeze-all-layers"),
    ],
    "head_only": [
        Case("head_only", {}, _head),
        Case("head_only", {"train_pooler": True}, lambda n: n.startswith(("bert.pooler.", "classifier.")), id="head_only-pooler"),
    ],
}


def registered_methods() -> list[str]:
    pm, errors = make_plugin_manager(entry_points=False)
    return build_registry(pm, errors).names("method")


def all_cases() -> list[Case]:
    return [case for name in registered_methods() for case in CASES.get(name, [Case(name)])]


def first_cases() -> list[Case]:
    """One case per registered method (for the slower end-to-end tests)."""
    return [CASES.get(name, [Case(name)])[0] for name in registered_methods()]


# --- helpers -------------------------------------------------------------------------------------


@contextmanager
def single_thread():
    """The tiny model's ops are too small to gain from intra-op threads, and on a busy machine extra
    threads cost several times the work (this alone makes these tests 5x faster on a shared box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():
        yield



@pytest.fixture(scope="session")
def tuned_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny random BERT after a short full fine-tuning on other toy sentences, saved without its head.

    It stands in for a pretrained backbone: the random one's [CLS] features barely differ between
    sentences, so methods that train little on top of it (a head, biases, a soft prompt) cannot lower
    the loss in a few steps, and the contract could not tell a method that trains from one that does not."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path_factory.mktemp("tuned-bert")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rows = toy_rows(320, seed=7)  # not the toy_data fixture's rows (seeds 1 and 2)
    with single_thread():
        for start in range(0, len(rows) * 2, 16):
            batch = [rows[i % len(rows)] for i in range(start, start + 16)]
            inputs = tokenizer([text for text, _ in batch], return_tensors="pt", padding=True)
            loss = model(**inputs, labels=torch.tensor([label for _, label in batch])).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    assert loss.item() < 0.4, f"the stand-in backbone did not learn the toy task (last loss {loss.item():.3f})"
    model.base_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def toy_config(write_spec, registry, tuned_model_dir):
    """A resolved run config of the toy task on the tuned tiny model (method and train filled in per test)."""
    from specrun.spec.load import load_spec

    path = write_spec(train="max_steps = 15")
    config = load_spec(path, registry=registry).runs[0].config
    config["model"] = {**config["model"], "name": str(tuned_model_dir)}
    return config, str(path.parent)


def config_for(base: dict, case: Case, registry) -> dict:
    config = {**base, "train": {**base["train"], "learning_rate": case.learning_rate, "precision": case.precision}}
    options = registry.get("method", case.method).Options.model_validate(case.options)
    config["method"] = {"name": case.method, **options.model_dump(mode="json")}
    return config


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by name (quantized weights as their stored integers)."""
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    state.update({f"buffer:{n}": b.detach().clone() for n, b in model.named_buffers()})
    return state


def same_values(before: torch.Tensor, after: torch.Tensor) -> bool:
    """Equal, or ``after`` is ``before`` cast to another dtype: bitsandbytes stores a quantized layer's
    frozen bias in the dtype of its input on each forward, which is not training (the k-bit methods
    round 8-bit biases to the autocast dtype at build, so these casts are exact)."""
    return torch.equal(before.to(after.dtype), after)


# --- the contract --------------------------------------------------------------------------------


def test_every_registered_method_has_a_case(registry):
    assert {c.method for c in all_cases()} == set(registry.names("method"))
    assert set(CASES) <= set(registry.names("method")), "a row names a method that is not registered"


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_method_contract(case, toy_config, registry, tmp_path):
    from specrun.runner.artifacts import WEIGHTS, load_weights, save_run
    from specrun.runner.data import Encoded, TokenCache, prepare_run_data
    from specrun.runner.evaluate import evaluate
    from specrun.runner.execute import build_model
    from specrun.runner.modeling import load_tokenizer
    from specrun.runner.train import train_model

    base, spec_dir = toy_config
    config = config_for(base, case, registry)
    device = torch.device("cpu")
    data = prepare_run_data(config, registry, spec_dir)
    labels = data.dataset.label_names
    model, ctx = build_model(config, registry, 2, labels, device)
    cache = TokenCache(load_tokenizer(ctx.model_path), config["model"]["max_length"])
    train, dev = Encoded.build(data.train, cache), Encoded.build(data.eval_sets[data.primary_eval], cache)

    names = [n for n, _ in model.named_parameters()]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    intended = {n for n in names if case.trains(n)}
    assert trainable == intended, f"trainable but not intended: {sorted(trainable - intended)[:5]}; intended but frozen: {sorted(intended - trainable)[:5]}"
    assert 0 < len(trainable)

    before = snapshot(model)
    loss_before = evaluate(model, train, 2, 256, case.precision, device).metrics["loss"]
    train_model(model, train, dev, "validation", 2, config["train"], config["seed"], device)
    loss_after = evaluate(model, train, 2, 256, case.precision, device).metrics["loss"]
    assert loss_after < 0.9 * loss_before, f"training loss {loss_before:.4f} -> {loss_after:.4f}"

    after = snapshot(model)
    changed = {n for n in before if not same_values(before[n], after[n])}
    assert changed <= trainable, f"frozen tensors changed: {sorted(changed - trainable)[:5]}"
    head = {n for n in trainable if _head(n)}
    assert head and head <= changed, "the classifier head did not train"
    assert len(changed) >= 0.5 * len(trainable), f"only {len(changed)} of {len(trainable)} trainable tensors changed"

    expected = evaluate(model, dev, 2, 64, case.precision, device)
    folder = tmp_path / "run"
    save_run(model, folder, {"run_id": "x", "config": config, "label_names": labels})
    reloaded, _ = build_model(config, registry, 2, labels, device)
    load_weights(reloaded, folder / WEIGHTS)
    got = evaluate(reloaded, dev, 2, 64, case.precision, device)
    assert (got.prediction == expected.prediction).all()
    assert got.confidence == pytest.approx(expected.confidence, abs=1e-6), "the reloaded run predicts differently"


# --- comparing methods in one spec ---------------------------------------------------------------

METHOD_SWEEP = """
[sweep]
"method, train.learning_rate" = [
    [{ name = "full" }, 5e-5],
    [{ name = "lora", rank = 4, quantize = "8bit" }, 1e-3],
    [{ name = "prompt_tuning", num_virtual_tokens = 8 }, 3e-2],
]
"""


def test_sweep_over_whole_method_tables_with_their_learning_rates(write_spec, registry):
    """A comparison spec sweeps whole ``[method]`` tables (each with its own options) and moves each
    method's learning rate with it: keys joined by a comma take their values together, not as a grid."""
    from specrun.runner.plan import plan_runs
    from specrun.spec.load import load_spec

    loaded = load_spec(write_spec(method='name = "full"', extra=METHOD_SWEEP), registry=registry)
    planned = plan_runs(loaded, registry)
    got = [(p.config["method"], p.config["train"]["learning_rate"]) for p in planned]
    assert got == [
        ({"name": "full"}, 5e-5),
        ({"name": "lora", **registry.get("method", "lora").Options(rank=4, quantize="8bit").model_dump(mode="json")}, 1e-3),
        ({"name": "prompt_tuning", **registry.get("method", "prompt_tuning").Options(num_virtual_tokens=8).model_dump(mode="json")}, 3e-2),
    ]
    assert len({p.run_id for p in planned}) == 3


@pytest.mark.parametrize("sweep, message", [
    ('"method, train.learning_rate" = [[{ name = "full" }]]', "each value must be a list of 2 items, one per key"),
    ('"method, train.learning_rate" = [[{ name = "lora", rnak = 4 }, 1e-3]]', "unknown key 'rnak' (did you mean 'rank'?)"),
    ('"method, experiment.name" = [[{ name = "full" }, "x"]]', "can only sweep keys under model, data, method, train"),
])
def test_bad_method_sweeps_are_located(sweep, message, write_spec, registry):
    from specrun.errors import SpecError
    from specrun.spec.load import load_spec

    spec = write_spec(method='name = "full"', extra=f"[sweep]\n{sweep}\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec, registry=registry)
    [(key, line, text)] = info.value.problems
    assert key.startswith("sweep.method, ")
    assert line == spec.read_text().splitlines().index(sweep) + 1
    assert message in text


@pytest.mark.parametrize("method", ['name = "qlora"\nrank = 4', 'name = "lora"\nrank = 4\nquantize = "8bit"'], ids=["qlora", "lora-8bit"])
def test_quantized_methods_train_on_after_an_evaluation(method, write_spec, cli):
    """Evaluations every 2 steps interleave eval-mode and training forwards of the quantized layers
    (bitsandbytes repacks 4-bit weights for inference on some CPUs, which the methods turn off)."""
    spec = write_spec(method=method, train="max_steps = 6\neval_every = 2")
    code, out, err = cli("apply", str(spec))
    assert code == 0, err
    assert "1 completed" in err
