"""Built-in ``qlora`` method: LoRA over a 4-bit NF4 backbone (Dettmers et al. 2023)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from specrun.errors import MethodUnavailable
from specrun.hookspecs import hookimpl
from specrun.plugins.api import BuildContext, MethodPlugin, ModelInfo
from specrun.plugins.methods.lora import (
    NOT_QUANTIZED,
    LoraAdapterOptions,
    adapted,
    adapters_problem,
    check_adapters,
    check_kbit,
    load_kbit_backbone,
    not_quantized,
    placement_table,
)

if TYPE_CHECKING:
    import torch


class QLoraOptions(LoraAdapterOptions):
    compute_dtype: Literal["bf16", "fp32"] = Field(
        "bf16", description="dtype the 4-bit weights are dequantized to for each matmul"
    )
    double_quant: bool = Field(True, description="also quantize the per-block scales (saves ~0.4 bit per weight)")


def quantization_config(options: QLoraOptions, skip: list[str] | None = None):
    """bitsandbytes' NF4 config; ``skip``: the modules kept in full precision (default: a classifier's head and pooler)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16 if options.compute_dtype == "bf16" else torch.float32,
        bnb_4bit_use_double_quant=options.double_quant,
        llm_int8_skip_modules=skip if skip is not None else NOT_QUANTIZED,
    )


class QLoRA(MethodPlugin):
    name = "qlora"
    description = "QLoRA: LoRA adapters over a frozen 4-bit NF4 backbone (bitsandbytes), head and pooler unquantized"
    Options = QLoraOptions

    def check(self, options: QLoraOptions, device: torch.device, precision: str) -> None:
        from specrun.core.models import gpu_supports_bf16

        check_kbit(self.name, 4, device)
        if options.compute_dtype == "bf16" and device.type == "cuda" and not gpu_supports_bf16(device):
            raise MethodUnavailable(
                "qlora: compute_dtype 'bf16' is not supported by this GPU; use compute_dtype = 'fp32'"
            )

    def check_model(self, options: QLoraOptions, model: ModelInfo) -> None:
        check_adapters(options, model)

    def details(self) -> tuple[str, list[str], list[tuple]]:
        return placement_table()

    def frozen_prefix_problem(self, options: QLoraOptions, model) -> str | None:
        return adapters_problem(options, "qlora")

    def build(self, options: QLoraOptions, ctx: BuildContext):
        return adapted(load_kbit_backbone(ctx, quantization_config(options, not_quantized(ctx))), options)


@hookimpl
def register_methods(register):
    register(QLoRA())
