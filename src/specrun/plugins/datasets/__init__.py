"""Built-in dataset sources."""

MODULES = [
    "specrun.plugins.datasets.glue",
    "specrun.plugins.datasets.local",
    "specrun.plugins.datasets.hub",
    "specrun.plugins.datasets.squad",
]
