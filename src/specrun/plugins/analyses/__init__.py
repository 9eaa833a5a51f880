"""Built-in analyses, one module each."""

MODULES: list[str] = []
