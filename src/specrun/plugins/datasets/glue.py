"""Built-in public datasets: GLUE SST-2, MRPC, RTE, AG News and IMDb.

With ``SPECRUN_DATA_DIR`` set, they are read from local copies in the layout GLUE distributes
(``glue/SST-2/train.tsv`` ...); otherwise they come from the Hugging Face hub through ``datasets``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from specrun.datafiles import read_rows, rows_to_examples
from specrun.errors import DataError
from specrun.examples import Dataset, Examples
from specrun.hookspecs import hookimpl
from specrun.plugins.api import DataContext, DatasetSource, NoOptions


@dataclass(frozen=True)
class Layout:
    """Where a dataset's splits live locally and on the hub, and which columns hold what."""

    folder: str
    files: dict[str, str]
    text: str
    label: str
    pair: str | None = None
    header: bool = True
    columns: tuple[str, ...] = ()
    hub: tuple[str, str | None] = ("", None)
    hub_text: str = "sentence"
    hub_pair: str | None = None
    format: str = "tsv"
    #: Shuffle the hub's splits (seed 0) as the local copies are: the hub's are sorted by label, so the
    #: first N (``max_eval_examples``) would all be one class.
    hub_shuffle: bool = False


class PublicDataset(DatasetSource):
    """One public dataset in a fixed layout."""

    Options = NoOptions
    version = "1"

    def __init__(
        self, name: str, label_names: tuple[str, ...], layout: Layout, description: str, eval_split: str = "validation"
    ):
        self.name = name
        self.label_names = label_names
        self.layout = layout
        self.description = description
        self.eval_split = eval_split

    def load(self, options: NoOptions, ctx: DataContext) -> Dataset:
        splits = self._load_local(Path(ctx.data_dir)) if ctx.data_dir else self._load_hub()
        return Dataset(self.name, self.label_names, splits)

    def files(self, options: NoOptions, ctx: DataContext) -> list[Path] | None:
        if not ctx.data_dir:
            return None  # from the hub, through datasets' own cache
        folder = Path(ctx.data_dir) / self.layout.folder
        return [folder / file for file in self.layout.files.values()]

    def _load_local(self, data_dir: Path) -> dict[str, Examples]:
        lay = self.layout
        folder = data_dir / lay.folder
        if not folder.is_dir():
            raise DataError(f"{self.name}: folder not found: {folder} (SPECRUN_DATA_DIR={data_dir})")
        return {
            split: rows_to_examples(
                read_rows(folder / file, lay.format, header=lay.header, columns=lay.columns),
                text_column=lay.text,
                text_pair_column=lay.pair,
                label_column=lay.label,
                label_names=self.label_names,
            )
            for split, file in lay.files.items()
        }

    def _load_hub(self) -> dict[str, Examples]:
        lay = self.layout
        try:
            import datasets

            loaded = datasets.load_dataset(*[x for x in lay.hub if x])
        except Exception as exc:
            raise DataError(
                f"{self.name}: could not load {lay.hub[0]} from the Hugging Face hub ({type(exc).__name__}: {exc}); "
                "set SPECRUN_DATA_DIR to a folder with local copies"
            ) from exc
        out = {}
        for split in lay.files:
            part = loaded[split].shuffle(seed=0) if lay.hub_shuffle else loaded[split]
            pairs = part[lay.hub_pair] if lay.hub_pair else None
            out[split] = Examples.from_columns(range(len(part)), part[lay.hub_text], part["label"], pairs)
        return out


BUILTIN_DATASETS = [
    PublicDataset(
        "glue/sst2",
        ("negative", "positive"),
        Layout(
            "glue/SST-2",
            {"train": "train.tsv", "validation": "dev.tsv"},
            text="sentence",
            label="label",
            hub=("nyu-mll/glue", "sst2"),
        ),
        "GLUE SST-2: binary sentiment of movie-review phrases",
    ),
    PublicDataset(
        "glue/mrpc",
        ("not_equivalent", "equivalent"),
        Layout(
            "glue/MRPC",
            {"train": "train.tsv", "validation": "dev.tsv"},
            text="#1 String",
            pair="#2 String",
            label="Quality",
            hub=("nyu-mll/glue", "mrpc"),
            hub_text="sentence1",
            hub_pair="sentence2",
        ),
        "GLUE MRPC: are two sentences paraphrases (sentence pairs)",
    ),
    PublicDataset(
        "glue/rte",
        ("entailment", "not_entailment"),
        Layout(
            "glue/RTE",
            {"train": "train.tsv", "validation": "dev.tsv"},
            text="sentence1",
            pair="sentence2",
            label="label",
            hub=("nyu-mll/glue", "rte"),
            hub_text="sentence1",
            hub_pair="sentence2",
        ),
        "GLUE RTE: textual entailment (sentence pairs)",
    ),
    PublicDataset(
        "ag_news",
        ("World", "Sports", "Business", "Sci/Tech"),
        Layout(
            "ag_news",
            {"train": "train_10k.tsv", "test": "test.tsv"},
            text="text",
            label="label",
            header=False,
            columns=("text", "label"),
            hub=("fancyzhx/ag_news", None),
            hub_text="text",
        ),
        "AG News: 4-class news topic classification (local copy: 10k training rows)",
        eval_split="test",
    ),
    PublicDataset(
        "imdb",
        ("neg", "pos"),
        Layout(
            "imdb",
            {"train": "train_10k.csv", "test": "test_5k.csv"},
            text="text",
            label="label",
            format="csv",
            hub=("stanfordnlp/imdb", None),
            hub_text="text",
            hub_shuffle=True,
        ),
        "IMDb movie reviews, binary sentiment (local copy: 10k train / 5k test reviews from the official splits; "
        "<br /> tags kept: the clean transform strips them)",
        eval_split="test",
    ),
]


@hookimpl
def register_datasets(register):
    for dataset in BUILTIN_DATASETS:
        register(dataset)
