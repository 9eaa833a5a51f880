"""Built-in dataset transforms, one module each (``common`` holds what they share and registers nothing)."""

MODULES: list[str] = [
    "specrun.plugins.transforms.noise",
    "specrun.plugins.transforms.label_noise",
    "specrun.plugins.transforms.few_shot",
    "specrun.plugins.transforms.difficulty",
    "specrun.plugins.transforms.clean",
    "specrun.plugins.transforms.augment",
]
