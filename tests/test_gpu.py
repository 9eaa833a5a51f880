"""Training on a real GPU: every method in fp16 (with loss scaling) and bf16, LoRA with an 8-bit and
QLoRA with a 4-bit backbone, ``cuda:N`` and the CUDA peak memory. Run them with ``pytest -m gpu`` on a
machine with a CUDA GPU; elsewhere they are skipped, saying why. (The GPU path's logic is also checked
without a GPU in tests/test_gpu_path.py.)"""

from __future__ import annotations

import math

import pytest
import torch

from specrun.testing import registry_with
from tests.test_runner_store import sql

HAS_GPU = torch.cuda.is_available()
BF16 = HAS_GPU and torch.cuda.get_device_properties(0).major >= 8

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not HAS_GPU, reason="no CUDA GPU on this machine: the gpu tests train on one (pytest -m gpu on a GPU machine)"
    ),
]

#: Options that make each method train something on the tiny model (others: the method's defaults).
OPTIONS = {
    "lora": "rank = 4",
    "qlora": "rank = 4",
    "prompt_tuning": "num_virtual_tokens = 4",
    "freeze": "layers = 1",
}


def methods() -> list[str]:
    return registry_with().names("method")


def precisions() -> list:
    return [
        "fp16",
        pytest.param(
            "bf16",
            marks=pytest.mark.skipif(
                HAS_GPU and not BF16, reason="this GPU has no native bf16 (compute capability < 8.0)"
            ),
        ),
    ]


@pytest.mark.parametrize("precision", precisions())
@pytest.mark.parametrize("method", methods())
def test_every_method_trains_on_the_gpu(method, precision, write_spec, cli):
    body = f'name = "{method}"\n{OPTIONS.get(method, "")}'
    spec = write_spec(method=body, train='max_steps = 6\nlearning_rate = 1e-3\ndevice = "cuda"')
    spec.write_text(spec.read_text().replace('precision = "fp32"', f'precision = "{precision}"'))
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    run = sql(cli, "SELECT status, skipped_steps, environment->>'device' AS device FROM runs")[0]
    assert run["status"] == "completed" and run["device"].startswith("cuda")
    assert run["skipped_steps"] is not None and run["skipped_steps"] < 6
    if precision != "fp16":
        assert run["skipped_steps"] == 0
    costs = {r["name"]: r["value"] for r in sql(cli, "SELECT name, value FROM metrics WHERE split = 'cost'")}
    assert costs["peak_memory_mb"] > 0  # torch.cuda.max_memory_allocated, reset for the run
    loss = sql(cli, "SELECT value FROM metrics WHERE final AND split = 'validation' AND name = 'loss'")[0]["value"]
    assert math.isfinite(loss) and loss < 10


def test_quantized_backbones_train_on_the_gpu(write_spec, cli):
    pytest.importorskip("bitsandbytes", reason="the quantized methods need bitsandbytes")
    sweep = '[sweep]\n"method" = [{ name = "lora", rank = 4, quantize = "8bit" }, { name = "qlora", rank = 4 }]'
    spec = write_spec(train='max_steps = 6\nlearning_rate = 1e-3\ndevice = "cuda"', extra=sweep)
    spec.write_text(spec.read_text().replace('precision = "fp32"', 'precision = "fp16"'))
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    assert [r["status"] for r in sql(cli, "SELECT status FROM runs")] == ["completed", "completed"]


def test_a_chosen_gpu_is_used(write_spec, cli):
    last = torch.cuda.device_count() - 1
    spec = write_spec(train=f'max_steps = 2\ndevice = "cuda:{last}"')
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    assert sql(cli, "SELECT environment->>'device' AS device FROM runs") == [{"device": f"cuda:{last}"}]
