"""Built-in analyses, one module each."""

MODULES: list[str] = [
    f"specrun.plugins.analyses.{name}"
    for name in (
        "bootstrap_ci",
        "paired_comparison",
        "efficiency",
        "learning_curves",
        "sensitivity",
        "scaling",
        "lora_svd",
        "correlation",
        "transfer",
        "optimization",
    )
]
