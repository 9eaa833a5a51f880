"""Built-in model sources."""

MODULES = ["specrun.plugins.models.sources"]
