"""Built-in ``lora_svd`` analysis: the singular values of every LoRA update a run learned.

For each adapted module, ΔW = (alpha / r) · B · A from the run's saved adapter weights; from its
singular values σ₁ ≥ σ₂ ≥ …: the stable rank ‖ΔW‖²_F / ‖ΔW‖²₂ = Σσᵢ² / σ₁² (how many directions carry the
update's energy; 1 for a rank-one update, r when all r are equal), and the entropy-based effective rank
exp(−Σ pᵢ log pᵢ) with pᵢ = σᵢ / Σσⱼ (Roy & Vetterli 2007). Per layer and module type, and per run. The
runs the experiment's runs start from (``model.init_from``, e.g. SST-2 source adapters) are included
with role ``source``.
"""

from __future__ import annotations

import re

from pydantic import Field

from specrun.analysis.common import MINE, mean_of_present
from specrun.errors import AnalysisError
from specrun.hookspecs import hookimpl
from specrun.plugins.api import AnalysisPlugin, Figure, PluginOptions, ResultTable

_LORA_A = re.compile(r"^(?P<module>.+)\.lora_A(?:\.(?P<adapter>[^.]+))?\.weight$")
_LAYER = re.compile(r"\.layer\.(\d+)\.")


class LoraSvdOptions(PluginOptions):
    spectrum: int = Field(
        64,
        ge=1,
        le=4096,
        description="singular values kept per module in lora_svd_spectrum (at most the rank are non-zero)",
    )


class LoraSvd(AnalysisPlugin):
    name = "lora_svd"
    description = (
        "SVD of each LoRA update ΔW = (alpha/r)·B·A: singular values, stable rank, effective rank per layer and module"
    )
    Options = LoraSvdOptions
    include_sources = True
    tables = (
        ResultTable(
            "lora_svd",
            {
                "run_id": "VARCHAR",
                "role": "VARCHAR",
                "config": "VARCHAR",
                "seed": "INTEGER",
                "module": "VARCHAR",
                "layer": "INTEGER",
                "module_type": "VARCHAR",
                "rank": "INTEGER",
                "scaling": "DOUBLE",
                "frobenius_norm": "DOUBLE",
                "spectral_norm": "DOUBLE",
                "stable_rank": "DOUBLE",
                "effective_rank": "DOUBLE",
            },
            "one row per run and adapted module: norms and ranks of its ΔW",
        ),
        ResultTable(
            "lora_svd_runs",
            {
                "run_id": "VARCHAR",
                "role": "VARCHAR",
                "config": "VARCHAR",
                "seed": "INTEGER",
                "modules": "INTEGER",
                "mean_stable_rank": "DOUBLE",
                "mean_effective_rank": "DOUBLE",
                "mean_frobenius_norm": "DOUBLE",
                "max_spectral_norm": "DOUBLE",
            },
            "one row per run: its modules' stable and effective ranks averaged (for correlating with other per-run quantities)",
        ),
        ResultTable(
            "lora_svd_spectrum",
            {
                "run_id": "VARCHAR",
                "module": "VARCHAR",
                "layer": "INTEGER",
                "module_type": "VARCHAR",
                "idx": "INTEGER",
                "singular_value": "DOUBLE",
                "relative": "DOUBLE",
                "energy": "DOUBLE",
            },
            "one row per run, module and singular value: σᵢ, σᵢ/σ₁, and the cumulative share of ‖ΔW‖²_F up to i",
        ),
    )

    def run(self, options, ctx):
        modules, runs, spectrum = [], [], []
        without = []
        for run in ctx.runs:
            found = self._run_modules(run, options, spectrum) if run.weights else []
            if not found:
                without.append(f"{run.run_id} ({run.method})")
                continue
            modules += found
            runs.append(
                {
                    "run_id": run.run_id,
                    "role": run.role,
                    "config": run.config_label,
                    "seed": run.seed,
                    "modules": len(found),
                    "mean_stable_rank": mean_of_present(m["stable_rank"] for m in found),
                    "mean_effective_rank": mean_of_present(m["effective_rank"] for m in found),
                    "mean_frobenius_norm": mean_of_present(m["frobenius_norm"] for m in found),
                    "max_spectral_norm": max(m["spectral_norm"] for m in found),
                }
            )
        if not runs:
            raise AnalysisError(f"none of the {len(ctx.runs)} runs has saved LoRA adapters: {', '.join(without)}")
        return {"lora_svd": modules, "lora_svd_runs": runs, "lora_svd_spectrum": spectrum}

    def _run_modules(self, run, options, spectrum: list[dict]) -> list[dict]:
        import numpy as np
        from safetensors.torch import load_file

        from specrun.analysis.stats import singular_value_summary

        try:
            tensors = load_file(run.weights)
        except (OSError, ValueError) as exc:
            raise AnalysisError(f"run {run.run_id}: cannot read its weights {run.weights}: {exc}") from None
        rank_opt, alpha = run.config.get("method", {}).get("rank"), run.config.get("method", {}).get("alpha")
        rows = []
        for key in sorted(tensors):
            match = _LORA_A.match(key)
            if not match:
                continue
            b_key = key.replace(".lora_A", ".lora_B", 1)
            if b_key not in tensors:
                raise AnalysisError(f"run {run.run_id}: {key} has no matching {b_key}")
            a, b = tensors[key].float().numpy(), tensors[b_key].float().numpy()
            r = a.shape[0]
            scaling = float(alpha) / float(rank_opt or r) if alpha is not None else 1.0
            sigma = np.linalg.svd(scaling * (b @ a), compute_uv=False)
            summary = singular_value_summary(sigma)
            module = match.group("module").removeprefix("base_model.model.")
            layer = _LAYER.search(module + ".")
            module_type = module.split(f".layer.{layer.group(1)}.", 1)[1] if layer else module
            rows.append(
                {
                    "run_id": run.run_id,
                    "role": run.role,
                    "config": run.config_label,
                    "seed": run.seed,
                    "module": module,
                    "layer": int(layer.group(1)) if layer else None,
                    "module_type": module_type,
                    "rank": r,
                    "scaling": scaling,
                    **{k: summary[k] for k in ("frobenius_norm", "spectral_norm", "stable_rank", "effective_rank")},
                }
            )
            energy = np.cumsum(sigma**2) / max(float(np.sum(sigma**2)), 1e-30)
            spectrum += [
                {
                    "run_id": run.run_id,
                    "module": module,
                    "layer": rows[-1]["layer"],
                    "module_type": module_type,
                    "idx": i + 1,
                    "singular_value": float(s),
                    "relative": float(s / sigma[0]) if sigma[0] > 0 else 0.0,
                    "energy": float(energy[i]),
                }
                for i, s in enumerate(sigma[: min(options.spectrum, r)])
            ]
        return rows

    def figures(self, options):
        from specrun.report import charts

        return [
            Figure(
                "Stable rank of ΔW by layer and module (mean over runs of a configuration)",
                "SELECT config, module_type, layer, round(avg(stable_rank), 3) AS stable_rank, round(avg(effective_rank), 3) AS effective_rank,\n"
                f"       count(*) AS runs\nFROM lora_svd WHERE {MINE} GROUP BY ALL ORDER BY config, module_type, layer",
                lambda rows: charts.curves(
                    rows,
                    "layer",
                    "stable_rank",
                    "module_type",
                    None,
                    "config",
                    "layer",
                    tooltip=["config", "module_type", "layer", "stable_rank", "effective_rank", "runs"],
                    x_type="O",
                ),
                caption="Stable rank = ‖ΔW‖²_F / ‖ΔW‖²₂: 1 when one direction carries the whole update, r when all r share it equally.",
            ),
            Figure(
                "Singular value spectrum σᵢ/σ₁ (mean over modules and runs)",
                "SELECT l.config, s.idx, round(avg(s.relative), 4) AS relative, round(avg(s.energy), 4) AS energy\n"
                "FROM lora_svd_spectrum s JOIN lora_svd l USING (experiment, analysis, run_id, module)\n"
                "WHERE s.experiment = $experiment AND s.analysis = $analysis GROUP BY ALL ORDER BY l.config, s.idx",
                lambda rows: charts.curves(
                    rows,
                    "idx",
                    "relative",
                    "config",
                    None,
                    None,
                    "singular value index i",
                    tooltip=["config", "idx", "relative", "energy"],
                    x_type="O",
                ),
                caption="energy: the cumulative share of ‖ΔW‖²_F in the first i singular values.",
            ),
            Figure(
                "Per run",
                "SELECT role, config, seed, run_id, modules, round(mean_stable_rank, 3) AS mean_stable_rank,\n"
                "       round(mean_effective_rank, 3) AS mean_effective_rank, round(mean_frobenius_norm, 4) AS mean_frobenius_norm,\n"
                f"       round(max_spectral_norm, 4) AS max_spectral_norm\nFROM lora_svd_runs WHERE {MINE} ORDER BY role, config, seed",
            ),
            Figure(
                "Per module",
                "SELECT config, seed, layer, module_type, rank, round(frobenius_norm, 4) AS frobenius_norm,\n"
                "       round(spectral_norm, 4) AS spectral_norm, round(stable_rank, 3) AS stable_rank, round(effective_rank, 3) AS effective_rank\n"
                f"FROM lora_svd WHERE {MINE} ORDER BY config, seed, layer, module_type",
            ),
        ]


@hookimpl
def register_analyses(register):
    register(LoraSvd())
