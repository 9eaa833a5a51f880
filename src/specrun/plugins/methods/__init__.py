"""Built-in fine-tuning methods, one module each."""

MODULES = [
    "specrun.plugins.methods.full",
    "specrun.plugins.methods.lora",
]
