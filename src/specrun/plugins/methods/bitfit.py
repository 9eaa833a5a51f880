"""Built-in ``bitfit`` method: train only bias terms and the classifier head (Ben Zaken et al. 2022)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from specrun.hookspecs import hookimpl
from specrun.plugins.api import BuildContext, MethodPlugin, PluginOptions
from specrun.plugins.methods.parts import is_head, train_only

#: The paper's strongest small subset: the query bias and the FFN's first (intermediate) bias.
QUERY_FFN = re.compile(r".*\.(attention\.self\.query|intermediate\.dense)\.bias$")


class BitFitOptions(PluginOptions):
    subset: Literal["all", "query-ffn"] = Field(
        "all",
        description="'all': every bias (embedding and layer norms, attention, FFN, pooler); "
        "'query-ffn': only the query and intermediate (FFN) biases. The head trains either way",
    )


def trains(name: str, subset: str) -> bool:
    if subset == "all":
        return name.endswith(".bias")
    return bool(QUERY_FFN.match(name))


class BitFit(MethodPlugin):
    name = "bitfit"
    description = "BitFit: only bias terms (all, or query+FFN) and the classifier head train (Ben Zaken et al. 2022)"
    Options = BitFitOptions

    def build(self, options: BitFitOptions, ctx: BuildContext):
        model = ctx.load_backbone()
        return train_only(model, lambda name: is_head(model, name) or trains(name, options.subset))


@hookimpl
def register_methods(register):
    register(BitFit())
