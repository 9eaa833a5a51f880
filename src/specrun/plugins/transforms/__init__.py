"""Built-in dataset transforms, one module each."""

MODULES: list[str] = []
