"""Built-in ``squad`` dataset: SQuAD v1.1 for the ``extractive_qa`` task.

With ``SPECRUN_DATA_DIR`` holding ``squad/dev-v1.1.json`` (the official dev file as distributed; there is
no training file offline), that file is split **by article** into ``train`` and ``validation``: the
articles ordered by the SHA-256 of their title, the first ``round(48 × eval_fraction)`` for evaluation,
the rest for training (``qa_data.split_by_article``). Questions of one paragraph share answers, so
splitting by question would let evaluation questions be learnt in training. Without the local file (or
with ``source = "hub"``) it is the hub's ``squad`` (``train`` 87,599 and ``validation`` 10,570
questions), through the ``datasets`` library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from specrun.core.qa import Answer, QAExamples, read_squad, split_by_article, to_examples
from specrun.errors import DataError
from specrun.examples import Dataset
from specrun.hookspecs import hookimpl
from specrun.plugins.api import DataContext, DatasetSource, PluginOptions

DEV_FILE = Path("squad") / "dev-v1.1.json"


class SquadOptions(PluginOptions):
    source: Literal["auto", "local", "hub"] = Field(
        "auto",
        description="'local': the dev file in SPECRUN_DATA_DIR, split by article; 'hub': the hub's squad; 'auto': local when present",
    )
    eval_fraction: float = Field(
        0.25, gt=0, lt=1, description="local: the share of the dev file's articles held out for evaluation"
    )


class Squad(DatasetSource):
    name = "squad"
    description = "SQuAD v1.1 (extractive QA): the local dev file split by article, or the hub's train/validation"
    Options = SquadOptions
    eval_split = "validation"

    def _local(self, options: SquadOptions, ctx: DataContext) -> Path | None:
        if options.source == "hub":
            return None
        path = Path(ctx.data_dir) / DEV_FILE if ctx.data_dir else None
        if path is not None and path.is_file():
            return path
        if options.source == "local":
            raise DataError(
                f"squad with source = 'local' needs {DEV_FILE} in SPECRUN_DATA_DIR "
                f"({ctx.data_dir or 'not set'}); it is not there"
            )
        return None

    def files(self, options: SquadOptions, ctx: DataContext) -> list[Path] | None:
        path = self._local(options, ctx)
        return [path] if path is not None else None

    def load(self, options: SquadOptions, ctx: DataContext) -> Dataset:
        path = self._local(options, ctx)
        if path is None:
            return _from_hub()
        articles = read_squad(path)
        train, held_out = split_by_article(articles, options.eval_fraction)
        description = (
            f"SQuAD v1.1 dev file {path.name} (offline: no training file), split by article: {len(held_out)} of "
            f"{len(articles)} articles ({sum(len(a.rows) for a in held_out)} questions) for validation, the other "
            f"{len(train)} ({sum(len(a.rows) for a in train)} questions) for train; articles ordered by the SHA-256 of "
            f"their title, the first round({len(articles)} x {options.eval_fraction}) held out. Validation titles: "
            + ", ".join(sorted(a.title for a in held_out))
        )
        return Dataset(
            "squad", (), {"train": to_examples(train), "validation": to_examples(held_out)}, description=description
        )


def _from_hub() -> Dataset:
    try:
        import datasets
    except ImportError:
        raise DataError(
            "squad: no local dev file (SPECRUN_DATA_DIR/squad/dev-v1.1.json) and the `datasets` library "
            "is not installed to load the hub's squad"
        ) from None
    try:
        hub = datasets.load_dataset("squad")
    except Exception as exc:  # offline, no cache: say what to do
        raise DataError(
            f"squad: cannot load the hub's squad ({type(exc).__name__}: {exc}); put dev-v1.1.json in "
            "SPECRUN_DATA_DIR/squad/ to work offline"
        ) from None
    splits = {}
    for split in ("train", "validation"):
        rows = hub[split]
        answers: list[tuple[Answer, ...]] = [
            tuple(zip(a["text"], (int(s) for s in a["answer_start"]))) for a in rows["answers"]
        ]
        splits[split] = QAExamples(
            tuple(rows["id"]), tuple(rows["question"]), tuple(rows["context"]), tuple(answers), tuple(rows["title"])
        )
    return Dataset(
        "squad", (), splits, description="SQuAD v1.1 from the Hugging Face hub (squad): train and validation"
    )


@hookimpl
def register_datasets(register):
    register(Squad())
