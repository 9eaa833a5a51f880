"""How much specrun says: a log level for its own notes (``-v`` / ``-q``), and which library warnings
reach the user. Library warnings are filtered by the module that issues them, never process-wide, so a
warning about specrun's own use of a library still shows; ``-v`` shows the libraries' too, each once."""

from __future__ import annotations

import logging
import os
import warnings

#: Libraries whose advisory warnings and log reports are noise in normal use.
LIBRARIES = (
    "transformers",
    "peft",
    "bitsandbytes",
    "accelerate",
    "datasets",
    "huggingface_hub",
    "fsspec",
    "torch",
    "tokenizers",
    "kernels",
)
_LIBRARY_MODULES = rf"({'|'.join(LIBRARIES)})(\..*)?$"
#: Deprecations the libraries raise inside their own code, which specrun cannot change: each with why it
#: is allowed. The test suite (``SPECRUN_STRICT_WARNINGS=1``, set by tests/conftest.py) fails on every
#: other DeprecationWarning or FutureWarning raised from specrun's code or inside transformers, peft or
#: datasets. Entries: (message regex, category, module regex of where it is raised, reason).
KNOWN_LIBRARY_DEPRECATIONS: tuple[tuple[str, type[Warning], str, str], ...] = (
    (
        r"`is_gradient_checkpointing` is deprecated",
        FutureWarning,
        r"transformers\.modeling_utils",
        "peft's PeftModel.__init__ reads the deprecated property (peft/peft_model.py); not a call of specrun's",
    ),
)
#: The libraries whose deprecations the strict mode turns into errors (beside specrun's own).
STRICT_LIBRARIES = ("transformers", "peft", "datasets")
_PREFIX = {
    logging.DEBUG: "debug: ",
    logging.WARNING: "warning: ",
    logging.ERROR: "error: ",
    logging.CRITICAL: "error: ",
}
_verbose = False
_quiet = False
#: What quiets the libraries that read their verbosity from the environment (when first imported), unless
#: verbose; the names specrun set itself (not the user) are taken back by ``-v``.
_QUIET_ENV = {
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
}
_set_here: set[str] = set()


class _LibraryHandler(logging.Handler):
    """Hands a library's log records to specrun's debug log: shown with ``-v`` (prefixed with the library's
    name), never on stdout and never through logging's last-resort handler (which printed kernels' "Skipping
    publisher trust check ..." on every apply that imports bitsandbytes). A library's errors show as warnings."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = logging.WARNING if record.levelno >= logging.ERROR else logging.DEBUG
            logging.getLogger("specrun.libraries").log(level, "[%s] %s", record.name, record.getMessage())
        except Exception:  # logging must never take a command down
            self.handleError(record)


class _ConsoleHandler(logging.Handler):
    """Writes specrun's log records to the error console (looked up per record: tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        from specrun import console

        try:
            console.err.print(_PREFIX.get(record.levelno, "") + record.getMessage(), markup=False, highlight=False)
        except Exception:  # logging must never take a command down
            self.handleError(record)


def configure(verbose: bool = False, quiet: bool = False) -> None:
    """Set the level of specrun's messages (DEBUG with ``verbose``, WARNING with ``quiet``, else INFO)
    and filter library warnings accordingly."""
    global _verbose, _quiet
    _verbose, _quiet = verbose, quiet
    logger = logging.getLogger("specrun")
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleHandler())
    logger.propagate = False
    quiet_libraries()


def level() -> str:
    """The level ``configure`` set, by name: 'debug' (``-v``), 'warning' (``-q``) or 'info'; what a
    process that runs runs for this one (a Ray worker) is configured with (``configure_level``)."""
    return "debug" if _verbose else "warning" if _quiet else "info"


def configure_level(name: str) -> None:
    """``configure`` from a name ``level`` gave, in another process (a Ray worker: ``-v`` on the driver
    gives the worker's debug notes and library warnings too)."""
    configure(verbose=name == "debug", quiet=name == "warning")


def is_verbose() -> bool:
    """Whether ``-v`` was given."""
    return _verbose


def is_quiet() -> bool:
    """Whether ``-q`` was given: progress is not shown, only results, warnings and errors."""
    return _quiet


def quiet_libraries() -> None:
    """Keep the libraries' progress bars, load reports and advisory warnings out of the output (shown,
    each warning once, in verbose mode)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name, value in _QUIET_ENV.items():
        if not _verbose and name not in os.environ:
            os.environ[name] = value
            _set_here.add(name)
        elif _verbose and name in _set_here:  # -v after the defaults: a library (or a Ray worker) reads these later
            os.environ.pop(name, None)
            _set_here.discard(name)
    warnings.filterwarnings("once" if _verbose else "ignore", module=_LIBRARY_MODULES)
    if os.environ.get("SPECRUN_STRICT_WARNINGS") == "1":
        strict_warnings()
    for name in LIBRARIES:
        library_logger = logging.getLogger(name)
        library_logger.setLevel(logging.INFO if _verbose else logging.ERROR)
        if not any(isinstance(h, _LibraryHandler) for h in library_logger.handlers):
            library_logger.addHandler(_LibraryHandler())
        library_logger.propagate = False


def strict_warnings() -> None:
    """Turn deprecations raised from specrun's code or inside transformers, peft and datasets into errors,
    except the known ones above (the test suite's policy: the next breaking change in a library fails a
    test instead of arriving unannounced). Filters put in later win, so the exceptions go in last."""
    modules = rf"(specrun|{'|'.join(STRICT_LIBRARIES)})(\..*)?$"
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("error", category=category, module=modules)
    from specrun.errors import SpecrunDeprecationWarning

    warnings.filterwarnings("default", category=SpecrunDeprecationWarning)  # specrun's own, for plugin authors
    for message, category, module, _reason in KNOWN_LIBRARY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
