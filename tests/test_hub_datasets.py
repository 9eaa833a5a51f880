"""``dataset = "imdb"`` and ``dataset = "hub:..."``: hub classification datasets by name, tested offline on
folders written by ``datasets.save_to_disk``; wrong columns, float labels and missing splits are located
errors listing what the dataset has."""

from __future__ import annotations

from pathlib import Path

import pytest

from specrun.errors import DataError
from specrun.testing import check_dataset, transform_context
from specrun.testing.toy import toy_rows, toy_spec


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A DatasetDict on disk: train/test of the toy task, a ClassLabel 'sentiment', a float 'stars', string 'mood'."""
    import datasets

    features = datasets.Features(
        {
            "sentence": datasets.Value("string"),
            "stars": datasets.Value("float32"),
            "sentiment": datasets.ClassLabel(names=["negative", "positive"]),
            "mood": datasets.Value("string"),
        }
    )

    def split(rows):
        return datasets.Dataset.from_dict(
            {
                "sentence": [t for t, _ in rows],
                "stars": [float(y) for _, y in rows],
                "sentiment": [y for _, y in rows],
                "mood": ["happy" if y else "sad" for _, y in rows],
            },
            features=features,
        )

    folder = tmp_path_factory.mktemp("hub") / "toy"
    datasets.DatasetDict({"train": split(toy_rows(240, 1)), "test": split(toy_rows(80, 2))}).save_to_disk(str(folder))
    return folder


def test_a_saved_dataset_loads_with_label_names_from_its_features(registry, saved):
    ds = check_dataset(registry, f"hub:{saved}", {"text": "sentence", "label": "sentiment"})
    assert ds.label_names == ("negative", "positive") and {k: len(v) for k, v in ds.splits.items()} == {
        "train": 240,
        "test": 80,
    }
    assert list(ds.splits["train"].label[:5]) == [y for _, y in toy_rows(240, 1)[:5]]


def test_string_labels_become_sorted_label_names(registry, saved):
    ds = check_dataset(registry, f"hub:{saved}", {"text": "sentence", "label": "mood"})
    assert ds.label_names == ("happy", "sad")
    assert [ds.label_names[y] for y in ds.splits["test"].label[:4]] == [
        "happy" if y else "sad" for _, y in toy_rows(80, 2)[:4]
    ]


@pytest.mark.parametrize(
    "options, key, words",
    [
        (
            {"text": "sentense", "label": "sentiment"},
            "data.options.text",
            ["no column 'sentense'", "sentence, stars, sentiment, mood"],
        ),
        (
            {"text": "sentence", "label": "stars"},
            "data.options.label",
            ["'stars' holds float32 values", "sentence, stars, sentiment, mood"],
        ),
        (
            {"text": "sentence", "label": "sentiment", "splits": ["train", "dev"]},
            "data.options.splits",
            ["no split 'dev'", "test, train"],
        ),
    ],
    ids=["column", "float-label", "split"],
)
def test_bad_options_are_located_errors_listing_what_the_dataset_has(registry, saved, options, key, words):
    from specrun.plugins.api import DataContext

    source = registry.get("dataset", f"hub:{saved}")
    with pytest.raises(DataError) as caught:
        source.load(source.Options.model_validate(options), DataContext(None))
    assert caught.value.key == key
    for w in words:
        assert w in str(caught.value)


def test_a_spec_trains_on_a_saved_dataset_and_reports_bad_columns_with_file_and_line(saved, run_spec):
    options = 'text = "sentence"\nlabel = "sentiment"'
    result = run_spec(toy_spec(dataset=f"hub:{saved}", data_options=options, train="max_steps = 4"))
    assert [r["status"] for r in result.runs] == ["completed"]
    bad = run_spec(
        toy_spec(dataset=f"hub:{saved}", data_options='text = "review"\nlabel = "sentiment"', train="max_steps = 4"),
        check=False,
        command="plan",
    )
    assert bad.exit_code == 2 and "Traceback" not in bad.stderr
    assert (
        "toy.toml:14: data.options.text: hub:" in bad.stderr
        and "its columns are sentence, stars, sentiment, mood" in bad.stderr
    )


def test_imdb_keeps_its_br_tags_for_the_clean_transform_and_evaluates_on_test(registry):
    from conftest import SHARED_DATA

    from specrun.plugins.api import DataContext

    source = registry.get("dataset", "imdb")
    ds = source.load(source.Options(), DataContext(str(SHARED_DATA)))
    assert any("<br />" in t for t in ds.splits["train"].text[:200])  # kept: the clean transform strips them when asked
    assert source.eval_split == "test"
    clean = registry.get("transform", "clean")
    cleaned = clean.apply(ds.splits["train"].select(list(range(200))), clean.Options(), transform_context())
    assert not any("<br" in t for t in cleaned.text)
