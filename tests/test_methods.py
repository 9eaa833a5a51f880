"""The shared contract every fine-tuning method passes, on the tiny random BERT and the toy task.

The contract is ``specrun.testing.check_method`` — the one a plugin author's method is tested with:
each registered method runs through the runner's own build, training, saving and reloading code;
training lowers the loss, only the parameters the method means to train change, the parameter counts
agree, and a saved run reloads to the same predictions. A method gets the whole contract by being
registered; a row in ``CASES`` only picks its options, learning rate and the parameters it is meant
to train.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from specrun.testing import is_head, registry_with, single_thread


def _lora(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


_head = is_head


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
        Case(
            "lora",
            {"rank": 4, "quantize": "8bit"},
            lambda n: _lora(n) or _head(n),
            precision="bf16",
            id="lora-8bit-bf16",
        ),
    ],
    "qlora": [
        Case("qlora", {"rank": 4}, lambda n: _lora(n) or _head(n)),
        Case(
            "qlora",
            {"rank": 4, "compute_dtype": "fp32", "double_quant": False},
            lambda n: _lora(n) or _head(n),
            precision="bf16",
            id="qlora-fp32-compute-bf16",
        ),
    ],
    "bitfit": [
        Case("bitfit", {}, lambda n: n.endswith(".bias") or _head(n)),
        Case(
            "bitfit",
            {"subset": "query-ffn"},
            lambda n: bool(QUERY_FFN_BIAS.match(n)) or _head(n),
            id="bitfit-query-ffn",
        ),
    ],
    "prompt_tuning": [
        Case(
            "prompt_tuning",
            {"num_virtual_tokens": 4},
            lambda n: n.startswith("prompt_encoder.") or _head(n),
            learning_rate=3e-2,
        ),
        Case(
            "prompt_tuning",
            {"num_virtual_tokens": 6, "init": "text", "init_text": "is this review positive or negative"},
            lambda n: n.startswith("prompt_encoder.") or _head(n),
            precision="bf16",
            id="prompt_tuning-text-bf16",
        ),
    ],
    "ia3": [
        Case("ia3", {}, lambda n: bool(IA3_VECTOR.match(n)) or _head(n)),
    ],
    "freeze": [
        Case("freeze", {"layers": 1}, lambda n: not n.startswith(("bert.embeddings.", "bert.encoder.layer.0."))),
        Case(
            "freeze", {"fraction": 1.0}, lambda n: n.startswith(("bert.pooler.", "classifier.")), id="freeze-all-layers"
        ),
    ],
    "head_only": [
        Case("head_only", {}, _head),
        Case(
            "head_only",
            {"train_pooler": True},
            lambda n: n.startswith(("bert.pooler.", "classifier.")),
            id="head_only-pooler",
        ),
    ],
}


def registered_methods() -> list[str]:
    return registry_with().names("method")


def all_cases() -> list[Case]:
    return [case for name in registered_methods() for case in CASES.get(name, [Case(name)])]


def first_cases() -> list[Case]:
    """One case per registered method (for the slower end-to-end tests)."""
    return [CASES.get(name, [Case(name)])[0] for name in registered_methods()]


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():
        yield


# --- the contract --------------------------------------------------------------------------------


def test_every_registered_method_has_a_case(registry):
    assert {c.method for c in all_cases()} == set(registry.names("method"))
    assert set(CASES) <= set(registry.names("method")), "a row names a method that is not registered"


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_method_contract(case, method_contract):
    report = method_contract(
        case.method, case.options, trains=case.trains, learning_rate=case.learning_rate, precision=case.precision
    )
    assert report.loss_after < 0.9 * report.loss_before and report.changed <= report.trainable


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
        (
            {"name": "lora", **registry.get("method", "lora").Options(rank=4, quantize="8bit").model_dump(mode="json")},
            1e-3,
        ),
        (
            {
                "name": "prompt_tuning",
                **registry.get("method", "prompt_tuning").Options(num_virtual_tokens=8).model_dump(mode="json"),
            },
            3e-2,
        ),
    ]
    assert len({p.run_id for p in planned}) == 3


@pytest.mark.parametrize(
    "sweep, message",
    [
        ('"method, train.learning_rate" = [[{ name = "full" }]]', "each value must be a list of 2 items, one per key"),
        (
            '"method, train.learning_rate" = [[{ name = "lora", rnak = 4 }, 1e-3]]',
            "unknown key 'rnak' (did you mean 'rank'?)",
        ),
        (
            '"method, experiment.name" = [[{ name = "full" }, "x"]]',
            "can only sweep keys under model, data, method, train",
        ),
    ],
)
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


@pytest.mark.parametrize(
    "method", ['name = "qlora"\nrank = 4', 'name = "lora"\nrank = 4\nquantize = "8bit"'], ids=["qlora", "lora-8bit"]
)
def test_quantized_methods_train_on_after_an_evaluation(method, write_spec, cli):
    """Evaluations every 2 steps interleave eval-mode and training forwards of the quantized layers
    (bitsandbytes repacks 4-bit weights for inference on some CPUs, which the methods turn off)."""
    spec = write_spec(method=method, train="max_steps = 6\neval_every = 2")
    code, _out, err = cli("apply", str(spec))
    assert code == 0, err
    assert "1 completed" in err
