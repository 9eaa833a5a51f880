"""Built-in fine-tuning methods, one module each (``parts`` holds helpers they share, no plugin)."""

MODULES = [
    "specrun.plugins.methods.full",
    "specrun.plugins.methods.lora",
    "specrun.plugins.methods.qlora",
    "specrun.plugins.methods.bitfit",
    "specrun.plugins.methods.prompt_tuning",
    "specrun.plugins.methods.ia3",
    "specrun.plugins.methods.freeze",
    "specrun.plugins.methods.head_only",
]
