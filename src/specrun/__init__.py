"""specrun: declarative experiment runner for fine-tuning BERT-family text classifiers."""

__version__ = "0.1.0"

from specrun.hookspecs import hookimpl  # noqa: E402  (the decorator plugin authors import)

__all__ = ["hookimpl", "__version__"]
