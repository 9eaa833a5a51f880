"""Dataset sources: the real public datasets in ../shared/data, and local files in every format."""

import json
import re

import polars as pl
import pytest
from conftest import SHARED_DATA

from specrun.errors import DataError
from specrun.plugins.api import DataContext
from specrun.testing import check_dataset, write_toy_data

#: Options for each registered dataset source in the shared contract (``specrun.testing.check_dataset``:
#: stable ids, labels within the label names, parallel columns); "{toy}" is a folder of the toy task.
DATASET_CONTRACT = {
    "glue/sst2": {},
    "glue/mrpc": {},
    "glue/rte": {},
    "ag_news": {},
    "local": {"files": {"train": "{toy}/train.tsv", "validation": "{toy}/dev.tsv"}},
    "imdb": {},
    "hub": {"text": "text", "label": "label"},  # as hub:<a save_to_disk folder of the toy data>
}
#: Sources of extractive-QA examples (answers, not labels): check_dataset is the classification contract;
#: these are checked in tests/test_tasks.py (the local dev file, its split by article, bad files).
QA_SOURCES = {"squad"}


def test_dataset_contract_covers_every_registered_source(registry):
    assert set(registry.names("dataset")) == set(DATASET_CONTRACT) | QA_SOURCES, (
        "add a DATASET_CONTRACT row for each new dataset source"
    )


@pytest.mark.parametrize("name", sorted(DATASET_CONTRACT))
def test_dataset_contract(registry, name, tmp_path):
    toy = write_toy_data(tmp_path / "toy")
    options = {
        k: ({s: p.replace("{toy}", str(toy)) for s, p in v.items()} if isinstance(v, dict) else v)
        for k, v in DATASET_CONTRACT[name].items()
    }
    if name == "hub":  # a family of sources, one per dataset name: checked on a saved DatasetDict
        import datasets

        from specrun.testing.toy import toy_rows

        folder = tmp_path / "saved"
        datasets.DatasetDict(
            {
                split: datasets.Dataset.from_dict({"text": [t for t, _ in rows], "label": [y for _, y in rows]})
                for split, rows in (("train", toy_rows(40, 1)), ("test", toy_rows(20, 2)))
            }
        ).save_to_disk(str(folder))
        name = f"hub:{folder}"
    dataset = check_dataset(registry, name, options, data_dir=SHARED_DATA, spec_dir=tmp_path)
    assert sum(len(ex) for ex in dataset.splits.values()) > 0


# counts are those of the files in ../shared/data (its MRPC train.tsv holds 3,667 rows, one fewer than its README says)
@pytest.mark.parametrize(
    "name,splits,labels,pairs",
    [
        ("glue/sst2", {"train": 67349, "validation": 872}, ("negative", "positive"), False),
        ("glue/mrpc", {"train": 3667, "validation": 408}, ("not_equivalent", "equivalent"), True),
        ("glue/rte", {"train": 2490, "validation": 277}, ("entailment", "not_entailment"), True),
        ("ag_news", {"train": 10001, "test": 7600}, ("World", "Sports", "Business", "Sci/Tech"), False),
        ("imdb", {"train": 10000, "test": 5000}, ("neg", "pos"), False),
    ],
)
def test_public_datasets_read_completely(registry, name, splits, labels, pairs):
    source = registry.get("dataset", name)
    ds = source.load(source.Options(), DataContext(data_dir=str(SHARED_DATA)))
    assert {k: len(v) for k, v in ds.splits.items()} == splits
    assert ds.label_names == labels
    for ex in ds.splits.values():
        assert (ex.text_pair is not None) == pairs
        assert set(ex.label) == set(range(len(labels)))  # every class present, nothing out of range
        assert len(set(ex.ids)) == len(ex)


def test_mrpc_bom_and_bare_quotes(registry):
    source = registry.get("dataset", "glue/mrpc")
    train = source.load(source.Options(), DataContext(data_dir=str(SHARED_DATA))).splits["train"]
    assert train.text[0].startswith("Amrozi accused his brother")
    assert '" the witness "' in train.text[0]  # bare quotes kept verbatim, not parsed as CSV quoting
    assert train.label[0] == 1


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_local_files_every_format(registry, tmp_path, fmt):
    rows = {
        "review": ["great, really", 'a "quoted" word', "bad"],
        "stars": ["pos", "neg", "neg"],
        "key": ["a", "b", "c"],
    }
    frame = pl.DataFrame(rows)
    path = tmp_path / f"train.{fmt}"
    if fmt == "csv":
        frame.write_csv(path)
    elif fmt == "tsv":
        path.write_text("review\tstars\tkey\n" + "\n".join("\t".join(r) for r in zip(*rows.values())) + "\n")
    elif fmt == "jsonl":
        frame.write_ndjson(path)
    else:
        frame.write_parquet(path)
    source = registry.get("dataset", "local")
    options = source.Options(files={"train": path.name}, text_column="review", label_column="stars", id_column="key")
    ds = source.load(options, DataContext(data_dir=None, spec_dir=str(tmp_path)))
    train = ds.splits["train"]
    assert ds.label_names == ("neg", "pos")
    assert train.text == tuple(rows["review"]) and train.label == (1, 0, 0) and train.ids == ("a", "b", "c")


def test_local_file_errors_name_path_and_columns(registry, tmp_path):
    source = registry.get("dataset", "local")
    ctx = DataContext(data_dir=None, spec_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"data file not found: .*missing\.csv"):
        source.load(source.Options(files={"train": "missing.csv"}), ctx)
    (tmp_path / "t.jsonl").write_text(json.dumps({"sentence": "x", "label": 0}) + "\n")
    with pytest.raises(DataError, match=r"no column 'text'; columns are \['sentence', 'label'\]"):
        source.load(source.Options(files={"train": "t.jsonl"}), ctx)
    (tmp_path / "u.csv").write_text("text,label\nhi,maybe\n")
    with pytest.raises(DataError, match=r"u\.csv:2: label 'maybe' in column 'label', not one of \['no', 'yes'\]"):
        source.load(source.Options(files={"train": "u.csv"}, label_names=["no", "yes"]), ctx)


def _hundred():
    from specrun.examples import Dataset, Examples

    train = Examples.from_columns(
        [f"t{i}" for i in range(100)], [f"text {i}" for i in range(100)], [i % 2 for i in range(100)]
    )
    return Dataset(name="toy", label_names=("a", "b"), splits={"train": train})


@pytest.mark.parametrize(
    "name, ids",
    [
        ("train[:10]", [f"t{i}" for i in range(10)]),
        ("train[95:]", [f"t{i}" for i in range(95, 100)]),
        ("train[-3:]", ["t97", "t98", "t99"]),
        ("train[10%:12%]", ["t10", "t11"]),
        ("train[ 98 : ]", ["t98", "t99"]),
        ("train", [f"t{i}" for i in range(100)]),
    ],
)
def test_split_slices(name, ids):
    from specrun.runner.data import split_examples

    assert list(split_examples(_hundred(), name, "train_split").ids) == ids


@pytest.mark.parametrize(
    "name, message",
    [
        ("train[50:10]", "'train[50:10]' selects no examples (split 'train' has 100)"),
        ("train[a:]", "bounds are whole numbers or percentages"),
        ("trian[:10]", "has no split 'trian' (did you mean 'train'?)"),
    ],
)
def test_bad_split_slices_name_the_key(name, message):
    from specrun.runner.data import split_examples

    with pytest.raises(DataError, match=r"^data\.train_split: .*" + re.escape(message)):
        split_examples(_hundred(), name, "train_split")
